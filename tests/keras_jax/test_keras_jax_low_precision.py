"""tests/keras/test_keras_low_precision.py's float16/bfloat16 step on Keras's JAX backend: float32
steps and buffers there too. Run in the `keras_jax` nox session."""

import os

os.environ["KERAS_BACKEND"] = "jax"

import keras
from on_jax import rerun

NAME = "test_low_precision_variables_step_in_float32_with_float32_buffers"
globals()[NAME] = rerun("test_keras_low_precision.py")[NAME]


def test_the_backend_is_jax():
    assert keras.backend.backend() == "jax"
