"""Learning-rate schedules: values worked out by hand from the formulas, and refused arguments."""

import math

import pytest

from lars.core import HyperparameterError
from lars.core.schedules import Constant, WarmupCosine, WarmupPolynomial


@pytest.mark.parametrize("t", [0, 1, 7, 10_000])
def test_constant(t):
    assert Constant(0.3)(t) == 0.3


# MLPerf TF2 PolynomialDecayWithWarmup: base 2, warm-up 4 steps, decay 10 steps, end 1e-4, power 2.
POLY = WarmupPolynomial(base_lr=2.0, warmup_steps=4, decay_steps=10, end_lr=1e-4)


@pytest.mark.parametrize("t, expected", [
    (0, 0.0),                                         # the first update has lr 0 (step counted from 0)
    (1, 2.0 * 1 / 4),
    (3, 2.0 * 3 / 4),
    (4, 2.0),                                         # s <= warmup still warm-up: base * 4/4
    (5, 1e-4 + (2.0 - 1e-4) * (1 - 1 / 10) ** 2),
    (9, 1e-4 + (2.0 - 1e-4) * (1 - 5 / 10) ** 2),
    (13, 1e-4 + (2.0 - 1e-4) * (1 - 9 / 10) ** 2),
    (14, 1e-4),                                       # min(s - warmup, decay) = decay
    (1000, 1e-4),
])
def test_warmup_polynomial(t, expected):
    assert POLY(t) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_warmup_polynomial_offset_counts_from_one():
    shifted = WarmupPolynomial(base_lr=2.0, warmup_steps=4, decay_steps=10, end_lr=1e-4, offset=1)
    assert shifted(0) == pytest.approx(2.0 * 1 / 4, rel=1e-12)
    assert shifted(4) == pytest.approx(1e-4 + (2.0 - 1e-4) * 0.9**2, rel=1e-12)


def test_warmup_polynomial_without_warmup_and_other_power():
    poly = WarmupPolynomial(base_lr=1.0, warmup_steps=0, decay_steps=8, end_lr=0.0, power=1.0)
    assert [poly(t) for t in (0, 2, 8, 9)] == pytest.approx([1.0, 0.75, 0.0, 0.0], rel=1e-12, abs=1e-15)


# Warm-up 2 steps, then half a cosine from 1.0 to 0.1 at step 12.
COS = WarmupCosine(base_lr=1.0, warmup_steps=2, total_steps=12, end_lr=0.1)


@pytest.mark.parametrize("t, expected", [
    (0, 0.0), (1, 0.5),
    (2, 1.0),                                          # p = 0
    (7, 0.1 + 0.9 * (1 + math.cos(math.pi * 0.5)) / 2),
    (4, 0.1 + 0.9 * (1 + math.cos(math.pi * 0.2)) / 2),
    (12, 0.1), (50, 0.1),
])
def test_warmup_cosine(t, expected):
    assert COS(t) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("make, field", [
    (lambda: Constant(-0.1), "lr"),
    (lambda: Constant(math.nan), "lr"),
    (lambda: Constant(math.inf), "lr"),
    (lambda: Constant(True), "lr"),
    (lambda: WarmupPolynomial(-1.0, 4, 10), "base_lr"),
    (lambda: WarmupPolynomial(1.0, -1, 10), "warmup_steps"),
    (lambda: WarmupPolynomial(1.0, 4, 0), "decay_steps"),
    (lambda: WarmupPolynomial(1.0, 4, 10, end_lr=-1e-4), "end_lr"),
    (lambda: WarmupPolynomial(1.0, 4, 10, power=0.0), "power"),
    (lambda: WarmupCosine(-1.0, 2, 12), "base_lr"),
    (lambda: WarmupCosine(1.0, 2, 0), "total_steps"),
    (lambda: WarmupCosine(1.0, 12, 12), "total_steps"),
    (lambda: WarmupCosine(1.0, 2, 12, end_lr=math.nan), "end_lr"),
    (lambda: Constant("0.1"), "lr"),
    (lambda: Constant(None), "lr"),
    (lambda: WarmupPolynomial(1.0, 0, 10, offset=-3), "offset"),
    (lambda: WarmupPolynomial(1.0, 2.5, 10), "warmup_steps"),
    (lambda: WarmupCosine(1.0, 2, 12, offset=-1), "offset"),
])
def test_invalid_arguments(make, field):
    with pytest.raises(HyperparameterError) as info:
        make()
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}=")
