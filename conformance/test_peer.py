"""The report's peer mode: an installed LARS library (`--peer NAME`) as a driver, in its flavor,
on every conformance case it can express; the others are refused by field, never counted as
passed. Run in the peer's backend session (`nox -s torch` runs `pytorch_optimizer.LARS`, ...)."""

from __future__ import annotations

from typing import Any

import pytest

from lars.conformance.drivers import get_driver
from lars.conformance.runner import run_case, run_suite


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


def test_a_wrong_translation_would_be_caught(peer_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: the peer given a momentum 1 % off diverges beyond the tolerance."""
    driver = get_driver(peer_name)
    real = type(driver).start

    def off(self: Any, hp: Any, params: Any) -> Any:
        return real(self, hp.replace(momentum=hp.momentum * 0.99 if hp.momentum else 0.01), params)

    monkeypatch.setattr(type(driver), "start", off)
    result = run_case(driver, driver.flavor, "momentum_weight_decay", driver.dtypes[-1])
    assert not result.refused and not result.passed, result.summary()
