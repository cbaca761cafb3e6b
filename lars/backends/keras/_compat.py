"""Every private Keras and TensorFlow API the adapter uses, checked on keras 3.15.1 and
tensorflow 2.21.0 (`tests/keras/test_keras_compat.py` fails if one changes)."""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import keras

#: `distribution.extended.update` where there is no tf.distribute (the JAX backend).
NO_STRATEGY = types.SimpleNamespace(extended=types.SimpleNamespace(
    update=lambda variable, fn, args=(), group=True: fn(variable, *args)))
TENSORFLOW = keras.backend.backend() == "tensorflow"


class Hooks:
    """Keras's hooks of its optimizer step, which LARS takes over."""

    def _backend_update_step(self: Any, grads: list[Any], trainable_variables: list[Any],
                             learning_rate: Any) -> None:
        """Keras calls it with every gradient of a step (after loss-scale unscaling and
        gradient accumulation), in the replica context under a tf.distribute strategy."""
        self.lars_step(grads, trainable_variables, learning_rate)

    def _clip_gradients(self, grads: list[Any]) -> list[Any]:
        """Keras clips just before `_backend_update_step`: under a tf.distribute strategy that is
        each replica's part; `lars_step` clips the sum instead (`keras_clip`)."""
        return grads


def keras_clip(optimizer: Any, grads: list[Any]) -> list[Any]:
    """Keras's `clipnorm`, `clipvalue` or `global_clipnorm`."""
    return keras.optimizers.Optimizer._clip_gradients(optimizer, grads)  # type: ignore[no-any-return]


def all_reduce(optimizer: Any, grads: Sequence[Any], variables: Sequence[Any]) -> list[Any]:
    """The gradients summed over replicas, as Keras's TF optimizer does before its step."""
    if not TENSORFLOW:  # keras.distribution on JAX hands over global gradients
        return list(grads)
    pairs = optimizer._all_reduce_sum_gradients(list(zip(grads, [v.value for v in variables], strict=True)))
    return [g for g, _ in pairs]


def merge_call(optimizer: Any, fn: Callable[..., None], *args: Any) -> None:
    """`fn(distribution, *args)` in the cross-replica context, where a tensor of `args` becomes
    a per-replica value; `distribution.extended.update` hands each device its own."""
    if not TENSORFLOW:
        return fn(NO_STRATEGY, *args)
    import tensorflow as tf

    tf.__internal__.distribute.interim.maybe_merge_call(fn, optimizer._distribution_strategy, *args)
    return None


def variable_index(optimizer: Any, variable: Any) -> int:
    """The position of a variable in the list the optimizer was built with."""
    return int(optimizer._get_variable_index(variable))
