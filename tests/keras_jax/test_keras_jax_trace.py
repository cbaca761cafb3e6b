"""tests/keras/test_keras_trace.py on Keras's JAX backend: the same trace, read from the state
`fit` holds between syncs. Run in the `keras_jax` nox session."""

import os

os.environ["KERAS_BACKEND"] = "jax"

import keras
from on_jax import rerun

globals().update(rerun("test_keras_trace.py", "traced"))


def test_the_backend_is_jax():
    assert keras.backend.backend() == "jax"
