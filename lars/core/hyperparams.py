"""One hyperparameter type for every backend, and its validation.

`Hyperparams` holds the numbers (lr, momentum, ...) and one value on each axis on which
public LARS implementations differ (see the specification page of the docs). Every field is
validated when a `Hyperparams` is made, and again by `replace`, so a backend that changes the
learning rate mid-training, or anything else, gets the same errors as every other backend.
Build one from a flavor with `lars.core.flavors.hyperparams(flavor, **overrides)`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lars.core.errors import ExclusionError, HyperparameterError
from lars.core.policy import Exclude

TrustDenominator = Literal["split", "combined", "grad", "update"]
MomentumStyle = Literal["heavy_ball", "sgd", "ratio_outside"]
BufferStart = Literal["zero", "copy"]
ZeroNormRule = Literal["weight_and_grad", "weight_and_denominator", "none"]

#: The allowed values of each axis, with what each value means (used by errors and docs).
AXES: Mapping[str, Mapping[str, str]] = {
    "trust_denominator": {
        "split": "||g|| + wd*||w|| + eps",
        "combined": "||g + wd*w|| + eps",
        "grad": "||g|| + eps",
        "update": "||momentum output|| + eps (needs momentum_style='ratio_outside')",
    },
    "momentum_style": {
        "heavy_ball": "v = m*v + (1-d)*lr*r*u; w -= v",
        "sgd": "v = m*v + (1-d)*r*u; w -= lr*v",
        "ratio_outside": "v = m*v + (1-d)*u; w -= lr*r*v",
    },
    "buffer_start": {
        "zero": "the buffer starts at zero",
        "copy": "the buffer's first value is the first increment, without (1-d)",
    },
    "zero_norm_rule": {
        "weight_and_grad": "r = 1 unless ||w|| > 0 and ||g|| > 0",
        "weight_and_denominator": "r = 1 unless ||w|| > 0 and the denominator (without eps) > 0",
        "none": "no fallback: r = eta*||w|| / (denominator + eps) always (a zero tensor never moves)",
    },
}


def _finite(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
            high_open: bool = False) -> float:
    lo, hi = ("(" if low_open else "["), (")" if high_open or math.isinf(high) else "]")
    allowed = f"a finite number in {lo}{low:g}, {'inf' if math.isinf(high) else f'{high:g}'}{hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise HyperparameterError(name, value, allowed)
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float (10**400)
        raise HyperparameterError(name, value, allowed) from None
    too_low = number <= low if low_open else number < low
    too_high = number >= high if high_open else number > high
    if not math.isfinite(number) or too_low or too_high:
        raise HyperparameterError(name, value, allowed)
    return number


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise HyperparameterError(name, value, "True or False")
    return value


def _choice(name: str, value: Any) -> str:
    allowed = AXES[name]
    if not isinstance(value, str) or value not in allowed:  # a list or dict is unhashable
        raise HyperparameterError(name, value, "one of " + ", ".join(repr(k) for k in allowed))
    return str(value)


def _flavor(name: str, value: Any) -> str:
    # Imported here: the flavor table is built from Hyperparams. A module already imported is
    # a dictionary look-up, so construction stays cheap (MXNet validates an lr per update).
    from lars.core.flavors import FLAVORS

    if not isinstance(value, str) or value not in FLAVORS:
        raise HyperparameterError(name, value, "one of " + ", ".join(FLAVORS))
    return value


def _optional_positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        return _finite(name, value, 0.0, math.inf, low_open=True)
    except HyperparameterError:
        raise HyperparameterError(name, value, "None (no clipping) or a finite number > 0") from None


def _exclude(name: str, value: Any) -> Exclude:
    if not isinstance(value, Exclude):
        raise HyperparameterError(name, value, "a lars.Exclude (see lars.core.policy.as_exclude)")
    return value


def _correction_tensors(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HyperparameterError(name, value, "None (every tensor) or an int >= 1")
    return value


INF = math.inf

#: field -> validator. The order is the order of the dataclass fields below.
_VALIDATORS: Mapping[str, Callable[[str, Any], Any]] = {
    "flavor": _flavor,
    "lr": lambda n, v: _finite(n, v, 0.0, INF),
    "momentum": lambda n, v: _finite(n, v, 0.0, 1.0, high_open=True),
    "dampening": lambda n, v: _finite(n, v, 0.0, 1.0),
    "nesterov": _flag,
    "weight_decay": lambda n, v: _finite(n, v, 0.0, INF),
    "trust_coefficient": lambda n, v: _finite(n, v, 0.0, INF, low_open=True),
    "eps": lambda n, v: _finite(n, v, 0.0, INF),
    "larc_clip": _flag,
    "maximize": _flag,
    "grad_rescale": lambda n, v: _finite(n, v, 0.0, INF, low_open=True),
    "grad_clip_value": _optional_positive,
    "grad_clip_norm": _optional_positive,
    "trust_denominator": _choice,
    "momentum_style": _choice,
    "buffer_start": _choice,
    "zero_norm_rule": _choice,
    "weight_decay_on_fallback": _flag,
    "adapt_requires_weight_decay": _flag,
    "larc_clip_on_fallback": _flag,
    "trust_ratio_max": _optional_positive,
    "decoupled_weight_decay": _flag,
    "clip_before_norms": _flag,
    "momentum_correction": _flag,
    "momentum_correction_tensors": _correction_tensors,
    "exclude_from_weight_decay": _exclude,
    "exclude_from_adaptation": _exclude,
    "eps_when_zero": _optional_positive,
    "adaptation_exclusion_follows_weight_decay": _flag,
}


@dataclass(frozen=True)
class Hyperparams:
    """Every LARS hyperparameter and variant axis; validated on construction.

    Per step and per tensor, with `g` the gradient after `maximize`, `grad_rescale` and
    clipping, `wd` the tensor's weight decay after exclusions and `lr` the step's lr:

        u = g + wd*w
        r = trust_coefficient*||w|| / (denominator + eps), or 1 at zero norms / if excluded
        r = min(r, trust_ratio_max)                        if trust_ratio_max (not the fallback)
        r = min(r/lr, 1)                                   if larc_clip
        heavy_ball:     v = m*v + (1-d)*lr*r*u;   w -= v
        sgd:            v = m*v + (1-d)*r*u;      w -= lr*v
        ratio_outside:  v = m*v + (1-d)*u;        w -= lr*r*v

    Nesterov replaces the `v` that updates `w` by `increment + m*v`. With
    `decoupled_weight_decay`, `w *= 1 - lr*wd` first (the norms see the decayed weights) and
    `u = g`; the split denominator still reads `wd*||w||`.

    Two fields carry a flavor's quirks, so that `replace`, `to_dict`/`from_dict` and every
    adapter keep its meaning: `eps_when_zero` (an `eps` of 0 becomes this, as MLPerf TF2's
    `epsilon or 1e-7`) and `adaptation_exclusion_follows_weight_decay` (an empty adaptation rule
    takes the weight-decay rule, as TF Model Garden's `exclude_from_layer_adaptation=None`).
    """

    flavor: str = "paper"
    lr: float = 0.0
    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 1e-4
    trust_coefficient: float = 1e-3
    eps: float = 0.0
    larc_clip: bool = False
    maximize: bool = False
    grad_rescale: float = 1.0
    grad_clip_value: float | None = None
    grad_clip_norm: float | None = None
    trust_denominator: TrustDenominator = "split"
    momentum_style: MomentumStyle = "heavy_ball"
    buffer_start: BufferStart = "zero"
    zero_norm_rule: ZeroNormRule = "weight_and_grad"
    weight_decay_on_fallback: bool = True
    adapt_requires_weight_decay: bool = False
    larc_clip_on_fallback: bool = False
    trust_ratio_max: float | None = None
    decoupled_weight_decay: bool = False
    clip_before_norms: bool = False
    momentum_correction: bool = False
    momentum_correction_tensors: int | None = None
    exclude_from_weight_decay: Exclude = field(default_factory=Exclude)
    exclude_from_adaptation: Exclude = field(default_factory=Exclude)
    eps_when_zero: float | None = None
    adaptation_exclusion_follows_weight_decay: bool = False

    def __post_init__(self) -> None:
        for name, validate in _VALIDATORS.items():
            object.__setattr__(self, name, validate(name, getattr(self, name)))
        if self.eps == 0 and self.eps_when_zero is not None:  # MLPerf TF2's `epsilon or 1e-7`
            object.__setattr__(self, "eps", self.eps_when_zero)
        if self.nesterov and (self.momentum <= 0.0 or self.dampening != 0.0):
            raise HyperparameterError(
                "nesterov", True,
                f"nesterov=False when momentum={self.momentum!r} and dampening={self.dampening!r}"
                " (nesterov needs momentum > 0 and dampening == 0)",
            )
        if self.decoupled_weight_decay and self.trust_denominator not in ("split", "grad"):
            raise HyperparameterError(
                "decoupled_weight_decay", True,
                f"False when trust_denominator={self.trust_denominator!r} (decoupled weight decay "
                "is defined with the 'split' and 'grad' denominators)",
            )
        if self.trust_denominator == "update" and self.momentum_style != "ratio_outside":
            raise HyperparameterError(
                "trust_denominator", "update",
                "a ratio from the momentum output only with momentum_style='ratio_outside'"
                f" (got momentum_style={self.momentum_style!r})",
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> Hyperparams:
        """A copy with `changes`, validated like a new one (unknown names are refused)."""
        check_field_names(changes)
        return dataclasses.replace(self, **changes)

    @property
    def adaptation_exclusion(self) -> Exclude:
        """The rule that excludes tensors from adaptation, as the step applies it."""
        if self.adaptation_exclusion_follows_weight_decay and self.exclude_from_adaptation.is_empty:
            return self.exclude_from_weight_decay
        return self.exclude_from_adaptation

    def with_lr(self, lr: float) -> Hyperparams:
        """The same hyperparameters with a new learning rate (validated)."""
        return self.replace(lr=lr)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; exclusion rules become dicts (a callable is recorded by name only)."""
        out: dict[str, Any] = {}
        for name in self.field_names():
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, Exclude) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hyperparams:
        """The inverse of `to_dict`. Missing fields take the dataclass defaults, except `lr`:
        no learning rate is a mistake (a file written by hand), not 0.0."""
        if not isinstance(data, Mapping):
            raise HyperparameterError("hyperparameters", data, "a mapping of field names to values")
        check_field_names(data)
        if data.get("lr") is None:
            raise HyperparameterError("lr", data.get("lr"), "a learning rate: from_dict has no default")
        values = dict(data)
        for name in ("exclude_from_weight_decay", "exclude_from_adaptation"):
            if isinstance(values.get(name), Mapping):
                try:
                    values[name] = Exclude.from_dict(dict(values[name]))
                except ExclusionError as exc:
                    raise ExclusionError(f"{name}: {exc}") from None
        return cls(**values)


def check_lr(lr: Any) -> float:
    """A learning rate validated exactly as `Hyperparams(lr=...)` does (for a step's lr)."""
    return float(_VALIDATORS["lr"]("lr", lr))


def check_field_names(names: Mapping[str, Any]) -> None:
    known = Hyperparams.field_names()
    for name in names:
        if name not in known:
            raise HyperparameterError(name, names[name], "a known hyperparameter: " + ", ".join(known))
