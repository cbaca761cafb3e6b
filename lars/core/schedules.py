"""Learning-rate schedules as math; each adapter maps them to its framework's schedule type.

A schedule is a frozen dataclass called with `t`, the number of updates applied before this
one (0 for the first update, as TF and optax count). MXNet's schedulers count from 1: call
`schedule(t + 1)` to reproduce one of them, or set `offset=1`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from lars.core.errors import HyperparameterError


def _check(name: str, value: object, *, positive: bool = False, integer: bool = False) -> None:
    kind = numbers.Integral if integer else numbers.Real
    allowed = ("an int " if integer else "a finite number ") + ("> 0" if positive else ">= 0")
    if isinstance(value, bool) or not isinstance(value, kind):
        raise HyperparameterError(name, value, allowed)
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise HyperparameterError(name, value, allowed)


@dataclass(frozen=True)
class Constant:
    """`lr(t) = lr`."""

    lr: float

    def __post_init__(self) -> None:
        _check("lr", self.lr)

    def __call__(self, t: int) -> float:
        return float(self.lr)


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
        s = t + self.offset
        if self.warmup_steps > 0 and s <= self.warmup_steps:
            return self.base_lr * s / self.warmup_steps
        progress = min(s - self.warmup_steps, self.decay_steps) / self.decay_steps
        return self.end_lr + (self.base_lr - self.end_lr) * float((1.0 - progress) ** self.power)


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
        s = t + self.offset
        if s < self.warmup_steps:
            return self.base_lr * s / self.warmup_steps
        p = min(1.0, (s - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.end_lr + (self.base_lr - self.end_lr) * (1.0 + math.cos(math.pi * p)) / 2.0


Schedule = Constant | WarmupPolynomial | WarmupCosine
