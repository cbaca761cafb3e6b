"""The driver interface through which a backend plugs into the conformance suite.

A driver makes an optimizer from the core's `Hyperparams` and named float arrays, steps it
with NumPy gradients and the step's learning rate, and reads back parameters, state and the
last step's trust ratios. Each backend adds one small driver; the suite, the meta-tests and
the parity report all use only this interface.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from lars.core import reference
from lars.core.flavors import hyperparams
from lars.core.hyperparams import Hyperparams
from lars.core.state import State, check_state

Array = np.ndarray


class Run(Protocol):
    """One optimizer over one set of tensors."""

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        """Applies one step with these gradients (in the run's dtype) at learning rate `lr`."""

    def params(self) -> dict[str, Array]:
        """The current parameters as NumPy arrays."""

    def state(self) -> State:
        """The optimizer state in the core's neutral format (positive buffer convention)."""

    def load(self, state: State) -> None:
        """Replaces the optimizer state by a neutral one, as a resumed run does."""

    def trust_ratios(self) -> dict[str, float]:
        """The trust ratio each tensor used in the last step."""

    def hyperparameters(self) -> Hyperparams:
        """The `Hyperparams` the adapter holds (it was given them as they are)."""

    def set_lr(self, lr: Any) -> None:
        """Sets the learning rate of the next steps the adapter's own way (validated)."""


class Driver(Protocol):
    """A backend as the conformance suite sees it."""

    name: str
    dtypes: tuple[str, ...]

    def unavailable_reason(self) -> str | None:
        """None if the backend can run here, else a short reason."""

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> Run:
        """A new optimizer over copies of `params` (all of one dtype).

        A driver may have a `refuses` mapping (field -> reason): a case that sets one of those
        fields must then be refused by the adapter with a `HyperparameterError` on that field.
        """

    def construct(self, params: Mapping[str, Array], fields: Mapping[str, Any]) -> None:
        """Makes the adapter with its own constructor from keyword `fields` (`lr` named as the
        framework names it) and readies it for `params` (`lars.conformance.errors`)."""


class ReferenceRun:
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array]) -> None:
        self._hp = hp
        self._params = {n: np.array(p, copy=True) for n, p in params.items()}
        self._state = State()
        self._ratios: dict[str, float] = {}

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        result = reference.step(self._params, grads, self._state, self._hp, lr)
        self._params, self._state, self._ratios = result.params, result.state, result.trust_ratios

    def params(self) -> dict[str, Array]:
        return dict(self._params)

    def state(self) -> State:
        return self._state

    def load(self, state: State) -> None:
        check_state(state, {n: p.shape for n, p in self._params.items()})
        self._state = state

    def set_lr(self, lr: Any) -> None:
        self._hp.with_lr(lr)  # the reference takes the lr with each step: validation only

    def trust_ratios(self) -> dict[str, float]:
        return dict(self._ratios)

    def hyperparameters(self) -> Hyperparams:
        return self._hp


class ReferenceDriver:
    """The NumPy reference itself, run in the dtype it is given.

    Checked in float32 only: its float64 run *is* the reference, so comparing that with
    itself would prove nothing. Its float32 run shows that the cases are well-conditioned
    enough for the float32 tolerance: float32 rounding alone stays within the policy.
    """

    name = "reference"
    dtypes = ("float32",)

    def unavailable_reason(self) -> str | None:
        return None

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> Run:
        return ReferenceRun(hp, params)

    def construct(self, params: Mapping[str, Array], fields: Mapping[str, Any]) -> None:
        hyperparams(**{"flavor": "paper", "lr": 0.1, **fields})


#: driver name -> "module:attribute" of a factory returning the driver; imported lazily.
DRIVERS: Mapping[str, str] = {
    "reference": "lars.conformance.drivers:ReferenceDriver",
    "rule": "lars.conformance.rule_driver:RuleDriver",
    "torch": "lars.conformance.torch_driver:TorchDriver",
    "torch-foreach": "lars.conformance.torch_driver:multi_tensor",
    "torch-single": "lars.conformance.torch_driver:single_tensor",
    "jax": "lars.conformance.jax_driver:JaxDriver",
    "keras": "lars.conformance.keras_driver:KerasDriver",
    "mxnet": "lars.conformance.mxnet_driver:MxnetDriver",
    "mxnet-single": "lars.conformance.mxnet_driver:per_tensor",
}


def get_driver(name: str) -> Driver:
    """The driver (or peer library, `lars.conformance.peers.PEERS`) called `name`; raises
    ValueError listing the known ones."""
    from lars.conformance.peers import PEERS

    known = {**DRIVERS, **PEERS}
    if name not in known:
        raise ValueError(f"driver={name!r} is unknown: expected one of {', '.join(known)}")
    module, attribute = known[name].split(":")
    factory = getattr(importlib.import_module(module), attribute)
    driver: Driver = factory()
    return driver
