"""tests/keras/test_keras_trace.py on Keras's JAX backend: the same trace, read from the state
`fit` holds between syncs. Run in the `keras_jax` nox session."""

import importlib.util
import os
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"

import keras

_path = Path(__file__).resolve().parent.parent / "keras" / "test_keras_trace.py"
_spec = importlib.util.spec_from_file_location("keras_trace_on_jax", _path)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().update({k: v for k, v in vars(_module).items() if k.startswith("test_") or k == "traced"})


def test_the_backend_is_jax():
    assert keras.backend.backend() == "jax"
