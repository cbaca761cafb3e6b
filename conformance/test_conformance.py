"""Every flavor x case x dtype of the selected driver, against the reference."""

from __future__ import annotations

from lars.conformance.runner import run_case


def test_matches_reference(conformance_case):  # type: ignore[no-untyped-def]
    driver, flavor, case, dtype = conformance_case
    reason = driver.unavailable_reason()
    assert reason is None, f"driver {driver.name} cannot run here: {reason}"
    result = run_case(driver, flavor, case, dtype)
    if result.refused:  # the backend documents that it cannot do this exactly, and says so up front
        assert result.error is not None and "HyperparameterError" in result.error
        return
    assert result.passed, result.summary() + f"; per tensor after the last step: {result.final_deviation}"
