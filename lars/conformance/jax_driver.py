"""The conformance driver of the JAX adapter (float64 needs `jax_enable_x64`, set here)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

from lars.backends.jax import export_state, import_state, lars  # noqa: E402
from lars.core.hyperparams import Hyperparams  # noqa: E402
from lars.core.state import State  # noqa: E402

Array = np.ndarray


class JaxRun:
    """One `optax.inject_hyperparams(lars)(learning_rate=..., hyperparameters=hp)`; the lr is
    injected every step, everything else is the `Hyperparams` as it is."""

    def __init__(self, hp: Hyperparams, params: Mapping[str, Array]) -> None:
        self._hp = lars(hp.lr, hyperparameters=hp).hyperparameters  # what the adapter holds
        self._tx = optax.inject_hyperparams(lars)(learning_rate=hp.lr, hyperparameters=hp)
        # In the case's order (a dict's leaves are sorted): MXNet's correction reaches the first tensors.
        self._params = OrderedDict((n, jnp.asarray(p)) for n, p in params.items())
        self._state = self._tx.init(self._params)
        self._step = jax.jit(self._apply)

    def _apply(self, grads: Any, state: Any, params: Any) -> tuple[Any, Any]:
        """One step as a training loop jits it: the update and its application in one program."""
        updates, state = self._tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        g = OrderedDict((n, grads[n]) for n in self._params)
        hyper = self._state.hyperparams
        hyper["learning_rate"] = np.asarray(lr, hyper["learning_rate"].dtype)
        self._params, self._state = self._step(g, self._state, self._params)

    def params(self) -> dict[str, Array]:
        return {n: np.asarray(p) for n, p in self._params.items()}

    def state(self) -> State:
        return export_state(self._state.inner_state, self._params)

    def load(self, state: State) -> None:
        inner = import_state(state, self._state.inner_state, self._params)
        self._state = self._state._replace(inner_state=inner)

    def trust_ratios(self) -> dict[str, float]:
        return {n: float(r) for n, r in self._state.inner_state.trust_ratios.items()}

    def hyperparameters(self) -> Hyperparams:
        return self._hp

    def set_lr(self, lr: Any) -> None:
        lars(self._hp.lr, hyperparameters=self._hp).set_lr(lr)  # validated; then injected, as a step does
        hyper = self._state.hyperparams
        hyper["learning_rate"] = jnp.asarray(lr, hyper["learning_rate"].dtype)


class JaxDriver:
    """`lars.backends.jax.lars` under `optax.inject_hyperparams`, jitted, on CPU."""

    name = "jax"
    dtypes = ("float64", "float32")

    def unavailable_reason(self) -> str | None:
        return None

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> JaxRun:
        return JaxRun(hp, params)

    def construct(self, params: Mapping[str, Array], fields: Mapping[str, Any]) -> None:
        given = {"flavor": "paper", "lr": 0.1, **fields}
        lars(given.pop("lr"), **given).init({n: jnp.asarray(p) for n, p in params.items()})
