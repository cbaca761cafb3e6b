"""One thin adapter per framework, each imported only when asked for.

Nothing here imports a framework at package import time, so `import lars` works without any.
"""

from __future__ import annotations

import importlib.util

#: backend module -> the framework it needs.
BACKENDS = {"torch": "torch", "jax": "jax", "keras": "keras", "mxnet": "mxnet"}


def available() -> dict[str, str | None]:
    """backend name -> None if its framework imports here, else why not."""
    return {
        name: None if importlib.util.find_spec(module) else f"{module} is not installed"
        for name, module in BACKENDS.items()
    }
