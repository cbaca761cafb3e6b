"""The table of invalid inputs (`lars.conformance.errors`) against the selected driver: each is
refused with the same `lars.LarsError` subclass and message in every backend, and a refusal
changes nothing (parameters, buffers, step count, last lr, trust ratios, hyperparameters)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from lars.conformance.drivers import Driver
from lars.conformance.errors import CASE, STEPS_BEFORE, TABLE, TARGET, Invalid, snapshot, started
from lars.core.errors import LarsError


def refused(row: Invalid, call: Any) -> None:
    with pytest.raises(LarsError) as caught:
        call()
    assert type(caught.value) is row.error, f"{type(caught.value).__name__}: {caught.value}"
    assert re.search(row.message, str(caught.value)), str(caught.value)


@pytest.mark.parametrize("row", TABLE, ids=[r.name for r in TABLE])
def test_refused_the_same_way_and_nothing_changes(conformance_driver: Driver, row: Invalid) -> None:
    dtype = conformance_driver.dtypes[-1]
    if row.entry == "construct":
        params = {n: p.astype(dtype) for n, p in CASE.initial_params().items()}
        refused(row, lambda: conformance_driver.construct(params, row.value))
        return
    run, grads = started(conformance_driver, dtype)
    before = snapshot(run)
    shapes = {n: p.shape for n, p in run.params().items()}
    call = {"set_lr": lambda: run.set_lr(row.value),
            "gradient": lambda: run.step(row.value(grads), 0.1),
            "state": lambda: run.load(row.value(shapes))}[row.entry]
    refused(row, call)
    after = snapshot(run)
    if row.entry == "gradient" and getattr(conformance_driver, "calls_per_step", 1) != 1:
        # A step of several update calls (MXNet, `aggregate_num=1`) is whole per call: the
        # tensors before the refused one were stepped, it and those after it were not.
        later = list(before["params"])[list(before["params"]).index(TARGET):]
        for part in ("params", "buffers"):
            assert {n: after[part].get(n) for n in later} == {n: before[part].get(n) for n in later}
        return
    assert after == before
    run.step(grads, 0.1)  # and the run goes on
    assert snapshot(run)["step"] == STEPS_BEFORE + 1


def test_the_table_covers_every_entry() -> None:
    assert {r.entry for r in TABLE} == {"construct", "set_lr", "gradient", "state"}
