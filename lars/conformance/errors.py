"""Invalid inputs every backend must refuse the same way, before anything changes.

Each row names where the input enters (`entry`), the input, and the refusal every driver must
give: the same `lars.LarsError` subclass and a message in the core's words (field, value, what is
allowed). `conformance/test_errors.py` runs the table against the selected driver and checks
that a refusal leaves the parameters, buffers, step count, last learning rate, trust ratios and
hyperparameters exactly as they were (byte for byte).

Entries:
- `construct`: the adapter's own constructor, given `flavor="paper"`, `lr=0.1` and the row's
  keyword fields (the driver translates `lr` into its framework's name for it);
- `set_lr`: the adapter's own way to change the learning rate between steps;
- `gradient`: one step whose gradients are the case's, with the row's change;
- `state`: importing a neutral `lars.State`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lars.conformance.cases import CASES
from lars.conformance.drivers import Driver, Run
from lars.core.errors import DtypeError, HyperparameterError, LarsError, ShapeError, StateError
from lars.core.flavors import hyperparams
from lars.core.state import State

Array = np.ndarray
#: The tensors of the table's runs (the conformance suite's standard set) and the gradient changed.
TARGET = "dense_weight"
STEPS_BEFORE = 2  # steps taken before the invalid input: the buffers exist and the lr was set


@dataclass(frozen=True)
class Invalid:
    name: str
    entry: str  # "construct", "set_lr", "gradient", "state"
    value: Any  # fields | an lr | a change of the gradients | a State from the run's shapes
    error: type[LarsError]
    message: str  # a regex the message must contain


def _gradient(make: Callable[[Array], Array]) -> Callable[[Mapping[str, Array]], dict[str, Array]]:
    def change(grads: Mapping[str, Array]) -> dict[str, Array]:
        return {**grads, TARGET: make(np.asarray(grads[TARGET]))}
    return change


NUMBER = r"is invalid: expected a finite number in "

TABLE: tuple[Invalid, ...] = (
    # Hyperparameters, through the adapter's constructor.
    Invalid("negative_lr", "construct", {"lr": -1.0}, HyperparameterError,
            r"lr=-1\.0 " + NUMBER + r"\[0, inf\)"),
    Invalid("nan_lr", "construct", {"lr": float("nan")}, HyperparameterError, r"lr=nan " + NUMBER),
    Invalid("string_lr", "construct", {"lr": "0.1"}, HyperparameterError, r"lr='0\.1' " + NUMBER),
    Invalid("huge_int_lr", "construct", {"lr": 10**400}, HyperparameterError, r"lr=1000.* " + NUMBER),
    Invalid("momentum_one_and_a_half", "construct", {"momentum": 1.5}, HyperparameterError,
            r"momentum=1\.5 " + NUMBER + r"\[0, 1\)"),
    Invalid("string_momentum", "construct", {"momentum": "0.9"}, HyperparameterError,
            r"momentum='0\.9' " + NUMBER),
    Invalid("negative_weight_decay", "construct", {"weight_decay": -1e-4}, HyperparameterError,
            r"weight_decay=-0\.0001 " + NUMBER),
    Invalid("infinite_eps", "construct", {"eps": float("inf")}, HyperparameterError, r"eps=inf " + NUMBER),
    Invalid("negative_trust_coefficient", "construct", {"trust_coefficient": -1.0}, HyperparameterError,
            r"trust_coefficient=-1\.0 is invalid"),
    Invalid("unknown_denominator", "construct", {"trust_denominator": "nosuch"}, HyperparameterError,
            r"trust_denominator='nosuch' is invalid: expected one of 'split', "),
    Invalid("list_denominator", "construct", {"trust_denominator": ["split"]}, HyperparameterError,
            r"trust_denominator=\['split'\] is invalid: expected one of "),
    Invalid("unknown_flavor", "construct", {"flavor": "nosuch"}, HyperparameterError,
            r"flavor='nosuch' is invalid: expected one of paper, "),
    Invalid("negative_ndim_rule", "construct", {"exclude_from_weight_decay": "ndim<=-1"}, HyperparameterError,
            r"exclude_from_weight_decay='ndim<=-1' is invalid: expected 'ndim<=N' or 'ndim==N'"),
    # The learning rate between steps.
    Invalid("set_negative_lr", "set_lr", -1.0, HyperparameterError, r"lr=-1\.0 " + NUMBER),
    Invalid("set_nan_lr", "set_lr", float("nan"), HyperparameterError, r"lr=nan " + NUMBER),
    Invalid("set_infinite_lr", "set_lr", float("inf"), HyperparameterError, r"lr=inf " + NUMBER),
    Invalid("set_string_lr", "set_lr", "0.1", HyperparameterError, r"lr='0\.1' " + NUMBER),
    # Gradients.
    Invalid("transposed_gradient", "gradient", _gradient(lambda g: np.ascontiguousarray(g.T)), ShapeError,
            rf"gradient '{TARGET}' has shape \(6, 10\), but the parameter has shape \(10, 6\)"),
    Invalid("flat_gradient", "gradient", _gradient(lambda g: g.reshape(-1)), ShapeError,
            rf"gradient '{TARGET}' has shape \(60,\), but the parameter has shape \(10, 6\)"),
    Invalid("integer_gradient", "gradient", _gradient(lambda g: np.ones(g.shape, np.int32)), DtypeError,
            rf"gradient '{TARGET}' has dtype int32: LARS steps real floating-point tensors only"),
    Invalid("boolean_gradient", "gradient", _gradient(lambda g: np.ones(g.shape, bool)), DtypeError,
            rf"gradient '{TARGET}' has dtype bool: LARS steps real floating-point tensors only"),
    # Neutral states to import.
    Invalid("string_buffer", "state", lambda s: State(3, 0.1, {TARGET: np.full(s[TARGET], "a")}),
            StateError, rf"buffer '{TARGET}' has dtype <U1: expected a floating-point dtype"),
    Invalid("transposed_buffer", "state", lambda s: State(3, 0.1, {TARGET: np.zeros(s[TARGET][::-1])}),
            StateError, rf"buffer '{TARGET}' has shape \(6, 10\), but the parameter has shape \(10, 6\)"),
    Invalid("unknown_buffer", "state", lambda s: State(3, 0.1, {"nosuch": np.zeros(3)}),
            StateError, r"buffers for unknown parameters \['nosuch'\]"),
    Invalid("nan_last_lr", "state", lambda s: State(3, float("nan"), {}),
            StateError, r"last_lr=nan is invalid: expected None or a finite number >= 0"),
    Invalid("buffers_at_step_zero", "state", lambda s: State(0, None, {TARGET: np.zeros(s[TARGET])}),
            StateError, r"step=0 with buffers \['dense_weight'\] is invalid"),
    Invalid("not_a_state", "state", lambda s: None, StateError, r"expected a lars\.State"),
)

ERRORS: Mapping[str, Invalid] = {row.name: row for row in TABLE}

CASE = CASES["momentum_weight_decay"]


def started(driver: Driver, dtype: str) -> tuple[Run, dict[str, Any]]:
    """A run of `paper` with momentum after `STEPS_BEFORE` steps, and the next step's gradients."""
    params = {n: p.astype(dtype) for n, p in CASE.initial_params().items()}
    run = driver.start(hyperparams("paper", lr=0.1, momentum=0.9, weight_decay=1e-3), params)
    for t in range(STEPS_BEFORE):
        run.step({n: g.astype(dtype) for n, g in CASE.gradients_at(t, run.params()).items()}, 0.1)
    return run, {n: g.astype(dtype) for n, g in CASE.gradients_at(STEPS_BEFORE, run.params()).items()}


def snapshot(run: Run) -> dict[str, Any]:
    """Everything a refusal must leave as it was, as bytes."""
    state = run.state()
    return {"params": {n: (p.dtype.str, p.tobytes()) for n, p in run.params().items()},
            "buffers": {n: (np.asarray(b).dtype.str, np.asarray(b).tobytes())
                        for n, b in state.momentum_buffers.items()},
            "step": state.step, "last_lr": repr(state.last_lr),
            "ratios": {n: repr(r) for n, r in run.trust_ratios().items()},
            "hyperparameters": run.hyperparameters().to_dict()}
