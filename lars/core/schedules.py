"""Learning-rate schedules as math, written once for every framework.

A schedule is a frozen dataclass called with `t`, the number of updates applied before this
one (0 for the first update, as TF and optax count). MXNet's schedulers count from 1: call
`schedule(t + 1)` to reproduce one of them, or set `offset=1`. `schedule(t)` is a Python
float; `schedule.value(t, ops)` the same math on a framework's step counter (an array inside
`jax.jit` or a `tf.function`), with its namespace (`lars.core.xp`): each adapter wraps that in its
framework's schedule type.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from lars.core.errors import HyperparameterError
from lars.core.xp import PYTHON, Ops


def _check(name: str, value: object, *, positive: bool = False, integer: bool = False) -> None:
    kind = numbers.Integral if integer else numbers.Real
    allowed = ("an int " if integer else "a finite number ") + ("> 0" if positive else ">= 0")
    if isinstance(value, bool) or not isinstance(value, kind):
        raise HyperparameterError(name, value, allowed)
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float (10**400)
        raise HyperparameterError(name, value, allowed) from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise HyperparameterError(name, value, allowed)


@dataclass(frozen=True)
class Constant:
    """`lr(t) = lr`."""

    lr: float

    def __post_init__(self) -> None:
        _check("lr", self.lr)

    def __call__(self, t: int) -> float:
        return float(self.value(t))

    def value(self, t: Any, ops: Ops = PYTHON) -> Any:
        return ops.scalar(t) * 0.0 + self.lr


@dataclass(frozen=True)
class WarmupPolynomial:
    """Linear warm-up, then polynomial decay (MLPerf ResNet-50: power 2, end lr 1e-4).

        s = t + offset
        lr(s) = base_lr * s / warmup_steps                                    if s <= warmup_steps
        lr(s) = end_lr + (base_lr - end_lr) * (1 - min(s - warmup_steps, decay_steps) / decay_steps)^power

    This is MLPerf TF2's `PolynomialDecayWithWarmup`; its `decay_steps` is
    `train_steps - warmup_steps + 1`. With `warmup_steps = 0` there is no warm-up.
    """

    base_lr: float
    warmup_steps: int
    decay_steps: int
    end_lr: float = 1e-4
    power: float = 2.0
    offset: int = 0

    def __post_init__(self) -> None:
        _check("base_lr", self.base_lr)
        _check("end_lr", self.end_lr)
        _check("power", self.power, positive=True)
        _check("warmup_steps", self.warmup_steps, integer=True)
        _check("decay_steps", self.decay_steps, positive=True, integer=True)
        _check("offset", self.offset, integer=True)

    def __call__(self, t: int) -> float:
        return float(self.value(t))

    def value(self, t: Any, ops: Ops = PYTHON) -> Any:
        s = ops.scalar(t) + self.offset
        progress = ops.minimum(s - self.warmup_steps, self.decay_steps) / self.decay_steps
        decay = self.end_lr + (self.base_lr - self.end_lr) * ops.power(1.0 - progress, self.power)
        if self.warmup_steps == 0:
            return decay
        return ops.where(s <= self.warmup_steps, self.base_lr * s / self.warmup_steps, decay)


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up, then half a cosine from `base_lr` down to `end_lr` at `total_steps`.

        s = t + offset
        lr(s) = base_lr * s / warmup_steps                                     if s < warmup_steps
        lr(s) = end_lr + (base_lr - end_lr) * (1 + cos(pi * p)) / 2                otherwise,
        p = min(1, (s - warmup_steps) / (total_steps - warmup_steps))
    """

    base_lr: float
    warmup_steps: int
    total_steps: int
    end_lr: float = 0.0
    offset: int = 0

    def __post_init__(self) -> None:
        _check("base_lr", self.base_lr)
        _check("end_lr", self.end_lr)
        _check("warmup_steps", self.warmup_steps, integer=True)
        _check("total_steps", self.total_steps, positive=True, integer=True)
        _check("offset", self.offset, integer=True)
        if self.total_steps <= self.warmup_steps:
            raise HyperparameterError("total_steps", self.total_steps,
                                      f"an int > warmup_steps={self.warmup_steps}")

    def __call__(self, t: int) -> float:
        return float(self.value(t))

    def value(self, t: Any, ops: Ops = PYTHON) -> Any:
        s = ops.scalar(t) + self.offset
        p = ops.minimum(1.0, (s - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        decay = self.end_lr + (self.base_lr - self.end_lr) * (1.0 + ops.cos(math.pi * p)) / 2.0
        if self.warmup_steps == 0:
            return decay
        return ops.where(s < self.warmup_steps, self.base_lr * s / self.warmup_steps, decay)


Schedule = Constant | WarmupPolynomial | WarmupCosine
