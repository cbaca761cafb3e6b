"""float16 and bfloat16 variables: stepped in float32 with float32 buffers, as in torch and JAX,
the new weights rounded once (on TF, on the bits, inside one XLA kernel per variable)."""

import contextlib

import keras
import keras_reference as kr
import ml_dtypes
import numpy as np
import pytest

import lars
from lars.backends.keras import LARS
from lars.core import State, reference


def strategies():
    """No strategy; on TF also a one-device strategy, under which a variable's update is
    `keras.ops` (not the XLA kernel that reads and assigns the variables)."""
    if keras.backend.backend() != "tensorflow":
        return [None]
    import tensorflow as tf
    return [None, tf.distribute.OneDeviceStrategy("/cpu:0")]


@pytest.mark.parametrize("strategy", strategies(), ids=["default", "one_device"][:len(strategies())])
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16], ids=["bfloat16", "float16"])
def test_low_precision_variables_step_in_float32_with_float32_buffers(dtype, strategy):
    """As in torch and JAX: each step is the float32 reference's step of the same values, rounded
    once to the variables' dtype; the momentum buffers and the trust ratios float32."""
    hp = lars.hyperparams("paper", lr=0.3, weight_decay=1e-2)
    params = {n: v.astype(dtype) for n, v in kr.initial(np.float32).items()}
    with contextlib.nullcontext() if strategy is None else strategy.scope():
        optimizer, state = LARS(learning_rate=0.3, flavor="paper", weight_decay=1e-2), State()
        variables = kr.keras_variables(params)
    for g in kr.gradient_stream(3, np.float32):
        g = {n: x.astype(dtype) for n, x in g.items()}
        wide = {n: x.astype(np.float32) for n, x in g.items()}
        expected = reference.step({n: x.astype(np.float32) for n, x in params.items()}, wide, state, hp)
        if strategy is None:
            kr.apply(optimizer, variables, g)
        else:
            strategy.run(kr.apply, (optimizer, variables, g))
        state = expected.state
        assert all(keras.backend.standardize_dtype(m.dtype) == "float32" for m in optimizer.momentums)
        assert kr.max_error(optimizer.export_state().momentum_buffers, state.momentum_buffers) <= 1e-5
        for name, r in expected.trust_ratios.items():
            assert optimizer.trust_ratios()[name] == pytest.approx(r, rel=1e-5, abs=1e-7), name
        ulp = 2.0 ** -np.finfo(dtype).nmant  # one rounding, either way of a float32 tie
        for name, v in kr.values(variables).items():
            assert v.dtype == dtype
            assert np.all(np.abs(v.astype(np.float32) - expected.params[name])
                          <= ulp * np.abs(expected.params[name])), name
        params = kr.values(variables)  # the next step from ours (a rounding may differ)


def test_bfloat16_weights_are_rounded_to_nearest_even_like_a_conversion():
    """On TF the bfloat16 step is rounded on the bits, inside its XLA kernel (XLA:CPU's conversion
    is slow): the same values as ml_dtypes' round-to-nearest-even over every kind of float32."""
    bits = np.random.default_rng(0).integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.0, -0.0, 1e-45, -1e-40, 1.00390625, 1.01171875, 3.3895314e38, 3.4028235e38,
                      -3.4028235e38, np.inf, -np.inf, np.nan], np.float32)
    values = np.concatenate([bits.view(np.float32), edges])
    import tensorflow as tf  # (this file's other test runs on Keras's JAX backend too)

    from lars.backends.keras.optimizer import to_bfloat16

    got = tf.function(to_bfloat16, jit_compile=True)(tf.constant(values)).numpy()
    expected = values.astype(ml_dtypes.bfloat16)
    nan = np.isnan(values)
    assert got.dtype == ml_dtypes.bfloat16 and np.isnan(got[nan].astype(np.float32)).all()
    assert np.array_equal(got[~nan].view(np.uint16), expected[~nan].view(np.uint16))
