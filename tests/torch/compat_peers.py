"""The real LARS classes the drop-ins of `lars.compat` replace, loaded from the installed wheels.

timm, pylocron, lightning-bolts and lightly are installed with `--no-deps` in the torch session
(their packages' `__init__` import torchvision, pytorch-lightning, ...). Each LARS file imports
only torch (timm's also its sibling `_helpers.py`; Bolts' a decorator), so it is loaded by path
under a private module name, without the package's `__init__`. A missing wheel is an error, not
a skip: these are the references the drop-ins are tested against.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

#: distribution -> the version the drop-ins reproduce (the torch session pins the same).
VERSIONS = {"timm": "1.0.31", "pylocron": "0.3.0", "lightning-bolts": "0.7.0", "lightly": "1.6.0"}


def _file(dist: str, path: str) -> Path:
    try:
        found = distribution(dist)
    except PackageNotFoundError:
        raise RuntimeError(f"{dist}=={VERSIONS[dist]} is not installed: the torch nox session installs it "
                           f"(`pip install --no-deps {dist}=={VERSIONS[dist]}`)") from None
    if found.version != VERSIONS[dist]:
        raise RuntimeError(f"{dist} {found.version} is installed; the drop-in reproduces {VERSIONS[dist]}")
    return Path(str(found.locate_file(path)))


def _load(name: str, file: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _package(name: str, directory: Path) -> None:
    """A bare package whose path is `directory`: its files' relative imports resolve there."""
    package = types.ModuleType(name)
    package.__path__ = [str(directory)]
    sys.modules[name] = package


def timm_lars() -> Any:
    lars = _file("timm", "timm/optim/lars.py")
    _package("_real_timm_optim", lars.parent)
    return _load("_real_timm_optim.lars", lars).Lars


def holocron_lars() -> Any:
    return _load("_real_holocron_lars", _file("pylocron", "holocron/optim/lars.py")).LARS


def lightly_lars() -> Any:
    return _load("_real_lightly_lars", _file("lightly", "lightly/utils/lars.py")).LARS


def bolts_lars() -> Any:
    """Bolts' LARS; its `@under_review()` (a warning on use, importing pytorch-lightning) is
    replaced, while the file loads, by a decorator that returns the class unchanged."""
    from lars.conformance.peers import load_file

    dist = "lightning-bolts"
    stability = {"under_review": lambda: (lambda cls: cls)}
    return load_file(dist, VERSIONS[dist], "pl_bolts/optimizers/lars.py",
                     {"pl_bolts": {}, "pl_bolts.utils": {}, "pl_bolts.utils.stability": stability}).LARS


def pytorch_optimizer_lars() -> Any:
    if distribution("pytorch-optimizer").version != "4.1.0":
        raise RuntimeError("the drop-in reproduces pytorch-optimizer 4.1.0")
    import pytorch_optimizer

    return pytorch_optimizer.LARS
