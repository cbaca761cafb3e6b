"""The conformance driver of the Keras adapter (on whichever Keras backend is configured)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from lars.backends.keras import LARS
from lars.core.hyperparams import Hyperparams
from lars.core.state import State

Array = np.ndarray

if keras.backend.backend() == "jax":  # float64 runs need 64-bit JAX arrays
    import jax

    jax.config.update("jax_enable_x64", True)


class KerasRun:
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array]) -> None:
        # The learning rate variable takes floatx: float64 runs need a float64 learning rate.
        keras.config.set_floatx(str(next(iter(params.values())).dtype))
        self._variables = {n: keras.Variable(np.array(p, copy=True), name=n, dtype=str(p.dtype))
                           for n, p in params.items()}
        self.optimizer = LARS(hyperparameters=hp)
        self.optimizer.build(list(self._variables.values()))
        variables = list(self._variables.values())

        def apply(grads: list[Any]) -> None:
            self.optimizer.apply(grads, variables)

        self._apply: Callable[[list[Any]], None] = apply
        if keras.backend.backend() == "tensorflow":  # a traced step, as model.fit runs it
            import tensorflow as tf

            self._apply = tf.function(apply)
        elif keras.backend.backend() == "jax":  # a jitted stateless step, as model.fit runs it
            self._apply = self._jax_step(variables)

    def _jax_step(self, variables: list[Any]) -> Callable[[list[Any]], None]:
        import jax

        optimizer = self.optimizer
        stateless = jax.jit(lambda tv, ov, grads: optimizer.stateless_apply(ov, grads, tv))

        def apply(grads: list[Any]) -> None:
            new_tv, new_ov = stateless([v.value for v in variables], [v.value for v in optimizer.variables],
                                       grads)
            pairs = [*zip(variables, new_tv, strict=True), *zip(optimizer.variables, new_ov, strict=True)]
            for v, value in pairs:
                v.assign(value)
        return apply

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        self.optimizer.learning_rate = lr
        self._apply([keras.ops.convert_to_tensor(grads[n]) for n in self._variables])

    def params(self) -> dict[str, Array]:
        return {n: keras.ops.convert_to_numpy(v) for n, v in self._variables.items()}

    def state(self) -> State:
        state: State = self.optimizer.export_state()
        return state

    def load(self, state: State) -> None:
        self.optimizer.import_state(state)

    def trust_ratios(self) -> dict[str, float]:
        return self.optimizer.trust_ratios()

    def hyperparameters(self) -> Hyperparams:
        return self.optimizer.hyperparameters

    def set_lr(self, lr: Any) -> None:
        self.optimizer.learning_rate = lr


class KerasDriver:
    """`lars.backends.keras.LARS` on the configured Keras backend."""

    dtypes = ("float64", "float32")

    def __init__(self) -> None:
        self.name = f"keras-{keras.backend.backend()}"

    def unavailable_reason(self) -> str | None:
        return None

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> KerasRun:
        return KerasRun(hp, params)

    def construct(self, params: Mapping[str, Array], fields: Mapping[str, Any]) -> None:
        given = {"flavor": "paper", "lr": 0.1, **fields}
        optimizer = LARS(given.pop("lr"), **given)
        optimizer.build([keras.Variable(np.array(p, copy=True), name=n) for n, p in params.items()])
