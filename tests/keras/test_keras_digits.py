"""The digits problem on Keras leaves the user's `floatx` and dtype policy as they were (the
problem's agreement with the reference is checked by `conformance/test_training.py`)."""

import keras

from lars.parity import digits


def test_keras_leaves_floatx_and_the_dtype_policy_as_they_were():
    before = keras.config.floatx()
    other = "float64" if before == "float32" else "float32"
    digits.train("keras", problem=digits.Problem(steps=2), dtype=other)
    assert keras.config.floatx() == before
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    assert layer.kernel.dtype == before
