"""The private Keras and TensorFlow APIs of the adapter, each checked on the versions named
(`tests/keras/test_keras_compat.py`, `tests/keras_jax/test_keras_jax_compat.py` fail if one changes)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import keras

TENSORFLOW = keras.backend.backend() == "tensorflow"
if TENSORFLOW:
    import tensorflow as tf


class Hooks:
    """Keras's hooks of its optimizer step, taken over by `LARS.lars_step`."""

    def _backend_update_step(self: Any, grads: list[Any], variables: list[Any], learning_rate: Any) -> None:
        """keras 3.15.1 calls it with a step's gradients (unscaled, accumulated), per replica."""
        self.lars_step(grads, variables, learning_rate)

    def _clip_gradients(self, grads: list[Any]) -> list[Any]:
        """keras 3.15.1 calls it just before, on each replica's part: `gradients` clips the sum."""
        return grads


def gradients(optimizer: Any, grads: Sequence[Any], variables: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """The gradients summed over replicas (keras.distribution hands over global ones), clipped
    by Keras's `clipnorm`, `clipvalue` or `global_clipnorm`; the variables' build positions."""
    if TENSORFLOW:
        pairs = list(zip(grads, [v.value for v in variables], strict=True))
        grads = [g for g, _ in optimizer._all_reduce_sum_gradients(pairs)]  # keras 3.15.1 (TF backend)
    return (keras.optimizers.Optimizer._clip_gradients(optimizer, list(grads)),  # keras 3.15.1
            [optimizer._get_variable_index(v) for v in variables])  # keras 3.15.1


def each(optimizer: Any, fn: Callable[..., None], variables: Sequence[Any], args: list[Any]) -> None:
    """`fn(variable, j, *args[j])` for each variable `j`; under a tf.distribute strategy in the
    cross-replica context, once per device copy with that replica's tensors."""
    if not TENSORFLOW:
        for j, (v, a) in enumerate(zip(variables, args, strict=True)):
            fn(v, j, *a)
        return

    def run(distribution: Any, args: list[Any]) -> None:
        for j, (v, a) in enumerate(zip(variables, args, strict=True)):
            distribution.extended.update(v.value, fn, args=(j, *a), group=False)

    strategy = optimizer._distribution_strategy  # keras 3.15.1 (TF backend)
    tf.__internal__.distribute.interim.maybe_merge_call(run, strategy, args)  # tensorflow 2.21.0


def buffer(optimizer: Any, variable: Any, dtype: str) -> Any:
    """`optimizer.add_variable_from_reference(variable, "momentum")` in `dtype`: its name and
    layout (keras 3.15.1), which `.keras` files and keras.distribution read."""
    return optimizer.add_variable(shape=variable.shape, initializer="zeros", dtype=dtype,
                                  name=f"{variable.path.replace('/', '_')}_momentum",
                                  layout=getattr(variable, "_layout", None))


def scope(optimizer: Any) -> Any:
    """Where to make an optimizer variable: on TF, in the optimizer's tf.distribute strategy."""
    return optimizer._distribution_strategy.scope() if TENSORFLOW else contextlib.nullcontext()


def current(callback: Any, variables: Sequence[Any]) -> list[Any]:
    """Copies on the device (no host sync) of optimizer variables after the last step: on JAX, of
    the arrays `fit` holds in `model._jax_state` until a sync (which the `callback.model` property
    makes) writes them back; the next step deletes them (keras 3.15.1)."""
    model = callback._model
    if not TENSORFLOW and getattr(model, "_jax_state", None) and not model._jax_state_synced:
        at = {id(v): k for k, v in enumerate(model.optimizer.variables)}
        variables = [model._jax_state["optimizer_variables"][at[id(v)]] for v in variables]
    return [keras.ops.copy(v) for v in variables]
