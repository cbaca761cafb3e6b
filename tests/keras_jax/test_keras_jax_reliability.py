"""tests/keras/test_keras_reliability.py on Keras's JAX backend: the same refusals, before any
change, eagerly and under jax.jit. Run in the `keras_jax` nox session."""

import os

os.environ["KERAS_BACKEND"] = "jax"

import keras
from on_jax import rerun

globals().update(rerun("test_keras_reliability.py"))


def test_the_backend_is_jax():
    assert keras.backend.backend() == "jax"
