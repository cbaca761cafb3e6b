"""Issue 17, "Done when" 2, in every backend: hypothesis draws invalid hyperparameters for the
adapter's own constructor, learning rates set between steps and states to import, and the
adapter answers each with a value or one of the project's errors (`lars.LarsError` subclasses),
never a framework's or Python's own exception; a refusal changes nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lars.conformance.cases import CASES
from lars.conformance.drivers import Driver
from lars.conformance.errors import snapshot, started
from lars.core.errors import LarsError
from lars.core.hyperparams import Hyperparams
from lars.core.state import State

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NAMES = list(CASES["momentum_weight_decay"].initial_params())

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(10**300, 10**400) | st.floats()
           | st.text(max_size=8) | st.sampled_from(["split", "ndim<=1", "ndim<=-1", "paper", "a{99999}"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5) | st.sampled_from(["ndims", "patterns", "names"]),
                                      inner, max_size=3), max_leaves=6)
ANY = JSON | st.complex_numbers() | st.binary(max_size=4) | st.tuples(SCALARS) | st.frozensets(SCALARS)
DTYPES = ["float32", "float64", "float16", "int32", "bool", "complex64", "<U1", "object"]
ARRAYS = st.builds(lambda shape, dtype: np.zeros(shape, dtype),
                   st.lists(st.integers(0, 11), max_size=3).map(tuple), st.sampled_from(DTYPES))
BUFFERS = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=5), ARRAYS | ANY, max_size=3)
STATES = st.builds(State, ANY | st.integers(-3, 5), ANY | st.floats(), BUFFERS) | ANY


def answered(call: Any) -> bool:
    """Runs `call`: True if it went through, False if refused with one of the project's errors."""
    try:
        call()
    except LarsError:
        return False
    return True


@SETTINGS
@given(field=st.sampled_from([*Hyperparams.field_names()]), value=ANY)
def test_a_drawn_constructor_argument(conformance_driver: Driver, field: str, value: Any) -> None:
    dtype = conformance_driver.dtypes[-1]
    params = {n: p.astype(dtype) for n, p in CASES["momentum_weight_decay"].initial_params().items()}
    answered(lambda: conformance_driver.construct(params, {field: value}))


@pytest.fixture(scope="module")
def run(conformance_driver: Driver) -> Any:
    return started(conformance_driver, conformance_driver.dtypes[-1])[0]


def answered_or_unchanged(run: Any, call: Any) -> None:
    """`call` goes through, or is refused with one of the project's errors and changes nothing."""
    before = snapshot(run)
    if not answered(call):
        assert snapshot(run) == before


@SETTINGS
@given(lr=ANY)
def test_a_drawn_learning_rate_between_steps(run: Any, lr: Any) -> None:
    answered_or_unchanged(run, lambda: run.set_lr(lr))


@SETTINGS
@given(state=STATES)
def test_a_drawn_state_to_import(run: Any, state: Any) -> None:
    answered_or_unchanged(run, lambda: run.load(state))
