"""Runs the tests of a `tests/keras` file on Keras's JAX backend (the `keras_jax` nox session,
which sets KERAS_BACKEND=jax, as the test files do before importing Keras)."""

import importlib.util
import sys
from pathlib import Path
from typing import Any


def rerun(name: str, *fixtures: str) -> dict[str, Any]:
    """The `test_*` functions (and the module fixtures named) of `tests/keras/<name>`, loaded anew
    (with that folder's helpers, e.g. `keras_reference`, importable)."""
    path = Path(__file__).resolve().parent.parent / "keras" / name
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"{path.stem}_on_jax", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {k: v for k, v in vars(module).items() if k.startswith("test_") or k in fixtures}
