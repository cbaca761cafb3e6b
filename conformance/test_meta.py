"""Meta-tests: the harness fails a driver that differs from the reference in one axis.

A mutant driver is the reference with one variant axis (or the default exclusions) of one
flavor changed. For every flavor and every change that alters the optimizer, running that
flavor's cases must report a failure. Pairs that are equivalent by construction are listed in
`EQUIVALENT` with the reason, so nothing is left out silently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest

from lars.conformance.drivers import ReferenceRun, Run
from lars.conformance.runner import run_case, run_suite
from lars.core.errors import HyperparameterError
from lars.core.flavors import FLAVORS, hyperparams
from lars.core.hyperparams import AXES, Hyperparams
from lars.core.policy import Exclude

FLAGS = (
    "weight_decay_on_fallback", "adapt_requires_weight_decay", "larc_clip_on_fallback",
    "clip_before_norms", "momentum_correction", "nesterov", "decoupled_weight_decay",
)
#: The cap of `trust_ratio_max` a mutant sets where a flavor has none: below every ratio the cases
#: compute, so that any flavor's cases can notice it (a cap of 1 changes nothing under LARC's clip
#: at lr <= 1).
MUTANT_RATIO_MAX = 1e-4


class MutantDriver:
    """The reference, except that `flavor` runs with `change` applied to its hyperparameters."""

    dtypes = ("float64",)

    def __init__(self, flavor: str, change: Mapping[str, Any]) -> None:
        self.flavor, self.change = flavor, dict(change)
        self.name = f"mutant[{flavor}:{self.change}]"

    def unavailable_reason(self) -> str | None:
        return None

    def start(self, hp: Hyperparams, params: Mapping[str, np.ndarray]) -> Run:
        # A change that is invalid with this case's settings leaves this case unchanged.
        if hp.flavor == self.flavor:
            with contextlib.suppress(ValueError):
                hp = hp.replace(**self.change)
        return ReferenceRun(hp, params)


def equivalent(hp: Hyperparams, axis: str, value: Any) -> str | None:
    """Why changing `axis` to `value` cannot alter any step of this flavor, or None."""
    guards = "none" not in (value, hp.zero_norm_rule)
    if axis == "zero_norm_rule" and hp.trust_denominator == "grad" and guards:
        return "with a gradient-only denominator both rules test ||g||"
    if axis in ("weight_decay_on_fallback", "larc_clip_on_fallback") and hp.zero_norm_rule == "none":
        return "without a zero-norm rule there is no fallback"
    if axis == "weight_decay_on_fallback" and hp.zero_norm_rule == "weight_and_denominator":
        return ("with ||w|| > 0 the denominator is 0 only if wd*||w|| adds nothing, so the "
                "fallback never has weight decay to keep or drop")
    return None


def mutations(flavor: str) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Every single-axis change of `flavor`, with the reason if it is equivalent."""
    hp = hyperparams(flavor, lr=0.1, momentum=0.9)
    changes: list[dict[str, Any]] = [
        {axis: value} for axis, values in AXES.items() for value in values if value != getattr(hp, axis)
    ]
    changes += [{flag: not getattr(hp, flag)} for flag in FLAGS]
    if hp.momentum_correction:
        changes.append({"momentum_correction_tensors": None})
    changes.append({"trust_ratio_max": None if hp.trust_ratio_max is not None else MUTANT_RATIO_MAX})
    changes += [{rule: Exclude()} for rule in ("exclude_from_weight_decay", "exclude_from_adaptation")
                if not getattr(hp, rule).is_empty]
    for change in changes:
        try:
            hp.replace(**change)
        except HyperparameterError:
            continue  # not a valid optimizer (e.g. a ratio from the momentum output of heavy-ball)
        ((axis, value),) = change.items()
        yield change, equivalent(hp, axis, value)


MUTANTS = [
    pytest.param(flavor, change, id=f"{flavor}-{'-'.join(f'{k}={v}' for k, v in change.items())}")
    for flavor in FLAVORS
    for change, reason in mutations(flavor)
    if reason is None
]


@pytest.mark.parametrize(("flavor", "change"), MUTANTS)
def test_a_single_axis_change_is_caught(flavor: str, change: dict[str, Any]) -> None:
    results = run_suite(MutantDriver(flavor, change), flavors=[flavor], stop_at_first_failure=True)
    assert not results[-1].passed, f"no case of {flavor!r} notices {change}"


def test_every_axis_is_mutated_somewhere() -> None:
    mutated = {axis for mutant in MUTANTS for axis in mutant.values[1]}
    expected = set(AXES) | set(FLAGS) | {"momentum_correction_tensors", "exclude_from_weight_decay",
                                         "exclude_from_adaptation", "trust_ratio_max"}
    assert mutated == expected


def test_other_flavors_are_unaffected_by_a_mutant() -> None:
    """The harness blames the flavor that differs, not its neighbours."""
    driver = MutantDriver("holocron", {"buffer_start": "zero"})
    assert all(r.passed for r in run_suite(driver, flavors=["paper", "timm"], cases=["dampening"]))
    assert not run_case(driver, "holocron", "dampening", "float64").passed


def test_a_crashing_driver_fails_with_its_reason() -> None:
    class Crashing(MutantDriver):
        def start(self, hp: Hyperparams, params: Mapping[str, np.ndarray]) -> Run:
            raise RuntimeError("backend exploded")

    result = run_case(Crashing("paper", {}), "paper", "nesterov", "float64")
    assert not result.passed
    assert result.error == "RuntimeError: backend exploded"


def test_a_driver_without_buffers_fails() -> None:
    """State export is checked: a driver whose state lacks the momentum buffers fails."""

    class NoState(ReferenceRun):
        def state(self):  # type: ignore[no-untyped-def]
            from lars.core.state import State

            return State(super().state().step, super().state().last_lr, {})

    class Driver(MutantDriver):
        def start(self, hp: Hyperparams, params: Mapping[str, np.ndarray]) -> Run:
            return NoState(hp, params)

    result = run_case(Driver("paper", {}), "paper", "momentum_weight_decay", "float64")
    assert not result.passed
    assert set(result.buffer_deviation.values()) == {float("inf")}


def test_float32_rounding_passes_but_a_small_lr_error_fails() -> None:
    """The fp32 tolerance separates float32 rounding (passes) from a 0.1 % lr error (fails)."""

    class Perturbed(ReferenceRun):
        def step(self, grads, lr):  # type: ignore[no-untyped-def]
            super().step(grads, lr * (1 + 1e-3))

    class Driver(MutantDriver):
        dtypes = ("float32",)

        def start(self, hp: Hyperparams, params: Mapping[str, np.ndarray]) -> Run:
            return Perturbed(hp, params)

    from lars.conformance.drivers import ReferenceDriver

    assert run_case(ReferenceDriver(), "paper", "warmup_poly_schedule", "float32").passed
    assert not run_case(Driver("paper", {}), "paper", "warmup_poly_schedule", "float32").passed
