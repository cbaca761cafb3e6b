"""The private Keras and TensorFlow APIs of `lars.backends.keras._compat` (checked on keras 3.15.1
and tensorflow 2.21.0) still do what the adapter relies on; a failure here names the one that
changed. The same hooks on Keras's JAX backend: `tests/keras_jax/test_keras_jax_compat.py`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from lars.backends.keras import LARS, _compat


def variables():
    return [keras.Variable(np.full((3, 2), 0.5, "float32"), name="kernel"),
            keras.Variable(np.zeros(2, "float32"), name="bias")]


def grads():
    return [keras.ops.convert_to_tensor(np.full((3, 2), 3.0, "float32")),
            keras.ops.convert_to_tensor(np.full(2, -3.0, "float32"))]


def test_the_backend_is_tensorflow():
    assert keras.backend.backend() == "tensorflow" and _compat.TENSORFLOW


def test_keras_hands_every_gradient_of_a_step_to_backend_update_step(monkeypatch):
    """`apply` reaches `_backend_update_step` once per step with all the gradients (the hook
    `_compat.Hooks` overrides), after `_clip_gradients` (which it overrides to do nothing)."""
    calls = []
    monkeypatch.setattr(LARS, "lars_step", lambda self, g, v, lr: calls.append(("step", len(g), len(v))))
    monkeypatch.setattr(LARS, "_clip_gradients", lambda self, g: calls.append(("clip", len(g))) or g)
    LARS(0.1).apply(grads(), variables())
    assert calls == [("clip", 2), ("step", 2, 2)]


def test_keras_clip_gradients_applies_keras_clipping():
    optimizer = LARS(0.1, clipvalue=0.5)
    optimizer.build(variables())
    clipped = keras.optimizers.Optimizer._clip_gradients(optimizer, grads())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clipped[0]), np.full((3, 2), 0.5))
    assert _compat.gradients(optimizer, grads(), optimizer._trainable_variables)[1] == [0, 1]


def test_get_variable_index_is_the_build_position():
    optimizer, vs = LARS(0.1), variables()
    optimizer.build(vs)
    assert [optimizer._get_variable_index(v) for v in reversed(vs)] == [1, 0]


def test_tf_distribute_hooks_exist_and_sum_over_replicas():
    """`_all_reduce_sum_gradients` returns (gradient, variable) pairs (unchanged without a
    strategy), `_distribution_strategy` is the strategy the optimizer was made under, and
    `maybe_merge_call` calls its function with that strategy (the cross-replica context)."""
    optimizer, vs = LARS(0.1), variables()
    optimizer.build(vs)
    pairs = optimizer._all_reduce_sum_gradients(list(zip(grads(), [v.value for v in vs], strict=True)))
    np.testing.assert_array_equal(pairs[1][0], grads()[1])
    assert optimizer._distribution_strategy is tf.distribute.get_strategy()
    seen = []
    tf.__internal__.distribute.interim.maybe_merge_call(lambda d, x: seen.append((d, x)),
                                                        optimizer._distribution_strategy, 7)
    assert seen == [(tf.distribute.get_strategy(), 7)]


@pytest.mark.parametrize("name", ["_backend_update_step", "_clip_gradients"])
def test_the_overridden_hooks_are_keras_methods(name):
    """If Keras renamed a hook, LARS's override would silently stop being called."""
    assert any(name in vars(c) for c in keras.optimizers.Optimizer.__mro__)


def test_a_float32_buffer_of_a_bfloat16_variable_is_named_as_keras_names_one():
    """`_compat.buffer` makes what `add_variable_from_reference` makes, in another dtype."""
    optimizer = LARS(0.1)
    variable = keras.Variable(np.zeros((3, 2), "float32"), name="kernel", dtype="bfloat16")
    ours = _compat.buffer(optimizer, variable, "float32")
    keras_own = optimizer.add_variable_from_reference(variable, name="momentum")
    assert (ours.name, ours.shape, ours.dtype) == (keras_own.name, keras_own.shape, "float32")
    assert keras_own.dtype == "bfloat16"
