"""The Keras tests run on Keras's TensorFlow backend unless KERAS_BACKEND says otherwise (set
before keras is first imported); `float64` switches `keras.config.floatx()` for one test.

pytest puts `tests/` on sys.path, where the folders `tests/jax` and `tests/torch` would pass for
namespace packages `jax` and `torch` in an environment without them, and Keras imports jax when
it can. Such a name is reported as not installed."""

import importlib.machinery
import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


class _TestFoldersAreNotPackages:
    """Makes `import jax` / `import torch` fail where the only match is a folder of `tests/`."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in ("jax", "torch"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, sys.path)
        if spec is not None and spec.origin is None and all(
                Path(p).resolve().parent == TESTS for p in (spec.submodule_search_locations or ())):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _TestFoldersAreNotPackages())

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def float64():
    """floatx = float64 for the test (the learning-rate variable takes floatx), restored after."""
    before = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(before)
