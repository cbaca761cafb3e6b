"""The report's peer mode: an installed LARS library (`--peer NAME`) as a driver, in its flavor,
on every conformance case it can express; the others are refused by field, never counted as
passed. Run in the peer's backend session (`nox -s torch` runs `pytorch_optimizer.LARS`, ...)."""

from __future__ import annotations

from typing import Any

import pytest

from lars.conformance.cases import CASES
from lars.conformance.drivers import get_driver
from lars.conformance.runner import case_hyperparams, run_case, run_hyperparams, run_suite


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
