"""The report's peer mode: an installed LARS library (`--peer NAME`) as a driver, in its flavor,
on every conformance case it can express; the others are refused by field, never counted as
passed. Run in the peer's backend session (`nox -s torch` runs `pytorch_optimizer.LARS`, ...)."""

from __future__ import annotations

from typing import Any

import pytest

from lars.conformance.cases import CASES
from lars.conformance.drivers import get_driver
from lars.conformance.runner import case_hyperparams, held, run_case, run_hyperparams, run_suite
from lars.core.flavors import hyperparams
from lars.core.policy import Exclude


@pytest.fixture(scope="module")
def results(peer_name: str) -> Any:
    driver = get_driver(peer_name)
    assert driver.unavailable_reason() is None, driver.unavailable_reason()
    return run_suite(driver, flavors=[driver.flavor])


def test_the_peer_matches_its_flavor_on_every_case_it_can_express(results: Any) -> None:
    ran = [r for r in results if not r.refused]
    assert len(ran) >= 6, [r.summary() for r in results]
    assert all(r.passed for r in ran), [r.summary() for r in ran if not r.passed]
    assert all(r.refused for r in results if r.error)


def test_the_peer_differs_where_float32_norms_leave_the_range(peer_name: str) -> None:
    """Why the peer is not held to the `float32_range` case: its float32 sums of squares overflow
    or underflow, where lars's adapters take them again (`docs/reliability.md`)."""
    driver = get_driver(peer_name)
    hp = case_hyperparams(driver.flavor, CASES["float32_range"])
    result = run_hyperparams(driver, hp, "float32_range", "float32")
    assert not result.refused and not result.passed, result.summary()


def test_a_wrong_translation_would_be_caught(peer_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: the peer given a momentum 1 % off diverges beyond the tolerance."""
    driver = get_driver(peer_name)
    real = type(driver).start

    def off(self: Any, hp: Any, params: Any) -> Any:
        return real(self, hp.replace(momentum=hp.momentum * 0.99 if hp.momentum else 0.01), params)

    monkeypatch.setattr(type(driver), "start", off)
    result = run_case(driver, driver.flavor, "momentum_weight_decay", driver.dtypes[-1])
    assert not result.refused and not result.passed, result.summary()


#: One value off the defaults for each argument a peer may have, on top of the case
#: `momentum_weight_decay` (momentum 0.9, weight decay 1e-2).
VARIATIONS: dict[str, dict[str, Any]] = {
    "momentum": {"momentum": 0.5},
    "dampening": {"dampening": 0.3},
    "nesterov": {"nesterov": True},
    "weight_decay": {"weight_decay": 3e-3},
    "trust_coefficient": {"trust_coefficient": 2.5e-3},
    "eps": {"eps": 1e-3},
    "grad_rescale": {"grad_rescale": 0.5},
    "maximize": {"maximize": True},
    "larc_clip": {"larc_clip": True},
    "trust_ratio_max": {"trust_ratio_max": None},
    "grad_clip_value": {"grad_clip_value": 0.05},
    "grad_clip_norm": {"grad_clip_norm": 0.3},
    # Name rules, as every peer's exclusions can be given (Model Garden takes regexes only).
    "exclude_from_weight_decay": {"exclude_from_weight_decay": Exclude.regex("bias|bn_")},
    "exclude_from_adaptation": {"exclude_from_adaptation": Exclude.regex("bias|bn_")},
}


def test_the_peer_matches_its_flavor_on_each_of_its_arguments(peer_name: str) -> None:
    """Each argument the peer has, changed alone from its flavor's value, still matches: the
    translation of every argument is checked, not only those the cases happen to change."""
    driver = get_driver(peer_name)
    base = case_hyperparams(driver.flavor, CASES["momentum_weight_decay"])
    changed = [a for a in driver.ARGUMENTS if a in VARIATIONS]
    assert changed, driver.ARGUMENTS
    for argument in changed:
        hp = base.replace(**VARIATIONS[argument])
        for dtype in driver.dtypes:
            result = run_hyperparams(driver, held(driver, hp), "momentum_weight_decay", dtype)
            assert result.passed, f"{argument}: {result.summary()}"


def test_the_peer_holds_its_float32_fields_as_float32(peer_name: str) -> None:
    """Why a peer with `float32_fields` is compared in float64 on those fields rounded: given the
    float64 values as they are, its float64 run is a float32 rounding of them away."""
    driver = get_driver(peer_name)
    if not getattr(driver, "float32_fields", ()) or "float64" not in driver.dtypes:
        assert held(driver, hyperparams(driver.flavor, lr=0.1)) == hyperparams(driver.flavor, lr=0.1)
        return
    hp = case_hyperparams(driver.flavor, CASES["momentum_weight_decay"])
    exact = run_hyperparams(driver, hp, "momentum_weight_decay", "float64")
    assert not exact.refused and not exact.passed, exact.summary()
    assert exact.max_deviation < 1e-5, exact.summary()
