"""Which tensors are excluded from weight decay and from trust-ratio adaptation.

The rule is decided here, once, for every backend: an adapter hands over the names and
shapes of its tensors and receives one `TensorPlan` per tensor. Two separate `Exclude` rules
exist (one for weight decay, one for adaptation), because public implementations treat them
separately: MLPerf skips both for batch-norm and bias, TF Model Garden takes two regex lists,
tensorlogic keeps weight decay on the tensors it does not adapt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lars.core.errors import ExclusionError

if TYPE_CHECKING:
    from lars.core.hyperparams import Hyperparams

Shape = tuple[int, ...]
_SHAPE_RULE = re.compile(r"ndim(?P<op><=|==)(?P<n>[0-9]{1,2})")
#: What reads as a shape rule: "ndim" and a comparison. Anything else after it (`ndim<=-1`,
#: `ndim<2`) is refused rather than taken as a regex that would exclude nothing.
_SHAPE_LIKE = re.compile(r"\s*ndim\s*[<>=!]")
#: No framework has tensors of more dimensions (NumPy 2's limit); a bound keeps
#: `ndim<=N` from building a set of N ranks.
MAX_NDIM = 64
SHAPE_RULE_FORMS = f"'ndim<=N' or 'ndim==N' with an int 0 <= N <= {MAX_NDIM}"
Predicate = Callable[[str, Shape], bool]


@dataclass(frozen=True)
class Exclude:
    """A rule that says whether a tensor is excluded; a tensor is excluded if any part matches.

    Attributes:
      ndims: excluded tensor ranks (`{0, 1}` is the usual "bias and norm layers" rule).
      patterns: regular expressions, matched with `re.search` against the tensor's name.
      names: exact names (an explicit mask).
      predicate: a callable on `(name, shape)` returning True to exclude.
    """

    ndims: frozenset[int] = frozenset()
    patterns: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()
    predicate: Predicate | None = field(default=None, compare=False)
    _compiled: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = []
        for pattern in self.patterns:
            if not isinstance(pattern, str):
                raise ExclusionError(f"exclusion pattern {pattern!r} is invalid: expected a string")
            try:
                compiled.append(re.compile(pattern))
            except (re.error, OverflowError, RecursionError) as exc:  # a{99999999999}, deep nesting
                raise ExclusionError(
                    f"exclusion pattern {pattern!r} is invalid: not a regular expression ({exc})"
                ) from None
        for ndim in self.ndims:
            if not isinstance(ndim, int) or isinstance(ndim, bool) or ndim < 0:
                raise ExclusionError(f"exclusion ndim {ndim!r} is invalid: expected an int >= 0")
        if self.predicate is not None and not callable(self.predicate):
            raise ExclusionError(f"exclusion predicate {self.predicate!r} is invalid: expected a callable")
        object.__setattr__(self, "_compiled", tuple(compiled))

    # Constructors, one per kind of rule.
    @classmethod
    def nothing(cls) -> Exclude:
        return cls()

    @classmethod
    def ndim_at_most(cls, max_ndim: int) -> Exclude:
        """Tensors of rank <= `max_ndim` (1: biases, norm scales and shifts, scalars)."""
        if isinstance(max_ndim, bool) or not isinstance(max_ndim, int) or not 0 <= max_ndim <= MAX_NDIM:
            raise ExclusionError(f"exclusion max_ndim={max_ndim!r} is invalid: expected an int in "
                                 f"[0, {MAX_NDIM}]")
        return cls(ndims=frozenset(range(max_ndim + 1)))

    @classmethod
    def ndim_in(cls, *ndims: int) -> Exclude:
        return cls(ndims=frozenset(ndims))

    @classmethod
    def regex(cls, *patterns: str) -> Exclude:
        return cls(patterns=tuple(patterns))

    @classmethod
    def substrings(cls, *parts: str) -> Exclude:
        return cls(patterns=tuple(re.escape(p) for p in parts))

    @classmethod
    def suffixes(cls, *endings: str) -> Exclude:
        return cls(patterns=tuple(re.escape(e) + r"\Z" for e in endings))

    @classmethod
    def mask(cls, names: Iterable[str]) -> Exclude:
        return cls(names=frozenset(names))

    @classmethod
    def where(cls, predicate: Predicate) -> Exclude:
        return cls(predicate=predicate)

    def __or__(self, other: Exclude) -> Exclude:
        if self.predicate is not None and other.predicate is not None:
            first, second = self.predicate, other.predicate

            def predicate(name: str, shape: Shape) -> bool:
                return first(name, shape) or second(name, shape)
        else:
            predicate = self.predicate or other.predicate  # type: ignore[assignment]
        return Exclude(
            ndims=self.ndims | other.ndims,
            patterns=self.patterns + tuple(p for p in other.patterns if p not in self.patterns),
            names=self.names | other.names,
            predicate=predicate,
        )

    @property
    def is_empty(self) -> bool:
        return not (self.ndims or self.patterns or self.names or self.predicate)

    @property
    def needs_names(self) -> bool:
        """True if the rule reads names (patterns, a mask or a predicate)."""
        return bool(self.patterns or self.names or self.predicate)

    def excludes(self, name: str | None, shape: Sequence[int]) -> bool:
        shape = tuple(int(s) for s in shape)
        if len(shape) in self.ndims:
            return True
        if not self.needs_names:
            return False
        if name is None:
            raise ExclusionError(
                f"exclusion rule {self.describe()} needs parameter names, but none were given: "
                "pass named parameters, or use a shape-only rule (Exclude.ndim_at_most)"
            )
        if name in self.names or any(p.search(name) for p in self._compiled):
            return True
        return bool(self.predicate is not None and self.predicate(name, shape))

    def describe(self) -> str:
        parts = []
        if self.ndims:
            parts.append(f"ndim in {sorted(self.ndims)}")
        if self.patterns:
            parts.append(f"name matches {list(self.patterns)}")
        if self.names:
            parts.append(f"name in {sorted(self.names)}")
        if self.predicate is not None:
            parts.append(f"predicate {getattr(self.predicate, '__qualname__', repr(self.predicate))}")
        return " or ".join(parts) if parts else "nothing"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description; a predicate cannot be stored and is recorded by name."""
        out: dict[str, Any] = {
            "ndims": sorted(self.ndims),
            "patterns": list(self.patterns),
            "names": sorted(self.names),
        }
        if self.predicate is not None:
            out["predicate"] = getattr(self.predicate, "__qualname__", repr(self.predicate))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exclude:
        if "predicate" in data:
            raise ExclusionError(
                f"exclusion rule uses the callable {data['predicate']!r}, which cannot be restored "
                "from a file: pass the exclusion rule explicitly"
            )
        unknown = set(data) - {"ndims", "patterns", "names"}
        if unknown:
            raise ExclusionError(f"exclusion rule has unknown keys {sorted(unknown)}")
        # A string is refused, not read as its characters (tuple("bias") is 4 patterns).
        kinds = {"ndims": (int, "a list of ints >= 0"), "patterns": (str, "a list of regexes"),
                 "names": (str, "a list of names")}
        for key, (kind, allowed) in kinds.items():
            items = data.get(key, ())
            if not isinstance(items, (list, tuple)) or not all(
                    isinstance(v, kind) and not isinstance(v, bool) for v in items):
                raise ExclusionError(f"exclusion {key}={items!r} is invalid: expected {allowed}")
        return cls(
            ndims=frozenset(int(n) for n in data.get("ndims", ())),
            patterns=tuple(data.get("patterns", ())),
            names=frozenset(data.get("names", ())),
        )


def as_exclude(value: Any, field_name: str) -> Exclude:
    """Accepts what users naturally write for a rule and returns an `Exclude`.

    `None` or `False`: nothing; `"ndim<=N"` or `"ndim==N"`: a shape rule; another string or a
    list of strings: regexes
    (as TF Model Garden and Keras take them); a callable `(name, shape) -> bool`; an `Exclude`.
    """
    from lars.core.errors import HyperparameterError

    if value is None or value is False:
        return Exclude()
    if isinstance(value, Exclude):
        return value
    if isinstance(value, str) and _SHAPE_LIKE.match(value):
        shape_rule = _SHAPE_RULE.fullmatch(value.replace(" ", ""))
        if shape_rule is None or int(shape_rule["n"]) > MAX_NDIM:
            raise HyperparameterError(field_name, value, SHAPE_RULE_FORMS + " (a string starting with "
                                      "'ndim' and a comparison is a shape rule, not a regex)")
        bound = int(shape_rule["n"])
        return Exclude.ndim_at_most(bound) if shape_rule["op"] == "<=" else Exclude.ndim_in(bound)
    if isinstance(value, str):
        return Exclude.regex(value)
    if callable(value):
        return Exclude.where(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return Exclude.regex(*value)
    raise HyperparameterError(
        field_name,
        value,
        "None, 'ndim<=N', 'ndim==N', a regex or list of regexes, a callable (name, shape) -> bool, "
        "or a lars.Exclude",
    )


@dataclass(frozen=True)
class TensorPlan:
    """What LARS does to one tensor: its effective weight decay and whether it is adapted."""

    name: str | None
    shape: Shape
    weight_decay: float
    adapt: bool


def plan_inputs(hp: Hyperparams) -> tuple[Any, ...]:
    """What `plan` reads of `hp`: a plan made for one value holds for another with equal inputs
    (a key for an adapter's cache of plans)."""
    return (hp.weight_decay, hp.adapt_requires_weight_decay, hp.exclude_from_weight_decay,
            hp.adaptation_exclusion)


def plan(hp: Hyperparams, tensors: Iterable[tuple[str | None, Sequence[int]]]) -> tuple[TensorPlan, ...]:
    """One `TensorPlan` per `(name, shape)`, in order: the only place exclusion is decided.

    A tensor excluded from weight decay has weight decay 0 everywhere (update and trust-ratio
    denominator). With `adapt_requires_weight_decay` (timm, Lightning Bolts), a tensor whose
    effective weight decay is 0 is not adapted either.
    """
    plans = []
    for name, shape in tensors:
        shape = tuple(int(s) for s in shape)
        no_wd = hp.exclude_from_weight_decay.excludes(name, shape)
        weight_decay = 0.0 if no_wd else hp.weight_decay
        adapt = not hp.adaptation_exclusion.excludes(name, shape)
        if hp.adapt_requires_weight_decay and weight_decay == 0.0:
            adapt = False
        plans.append(TensorPlan(name, shape, weight_decay, adapt))
    return tuple(plans)
