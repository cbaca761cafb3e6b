"""`lars compare A B`: where two recorded runs part, and why.

Two traces (`lars.core.trace`) of the same training, recorded in two frameworks (or before and
after a port), are lined up by tensor (a name map as `lars migrate` reads it: transpositions do
not change a norm, so only the names matter) and by step. The first (step, tensor) where a
quantity differs by more than the two dtypes' rounding allows is the divergence; which
quantity parted first says where to look:

    ||w|| differs at the first step          the initial weights (model init, a checkpoint)
    ||g|| differs while ||w|| agrees         the model, the loss or the data
    adaptation or weight decay differs       the exclusions (exclude_from_adaptation, ..._weight_decay)
    the trust ratio differs                  the rule's settings (eps, denominator, coefficient, ...)
    ||Δw|| differs while the ratio agrees    the update rule (momentum style, nesterov, dampening)

The rule's fields that differ between the traces' headers are named with what
`lars.core.fields.MATTERS` says of each.

The tolerance is derived from the traces, not chosen: a quantity computed the same way in two
frameworks differs by the rounding of each. A norm of `n` elements summed in blocks or pairs errs
by about `log2(n)` units of rounding `u` (of the coarser dtype: 2^-53 in float64, 2^-24 in
float32); the ratio, the coefficients and the update round about 16 times more. Each step adds
such a rounding to the momentum buffer, which keeps it, and the weights add up the buffer: the
deviation of two correct runs grows like the double sum of the steps' roundings,

    tolerance(t) = (2·ceil(log2(n_max)) + 16) · u · (t + 1)(t + 2) / 2

with `n_max` the largest tensor and `t` the step's index in the run. Each quantity is compared
relative to its largest value in the run so far (a gradient that cancels to a small sum keeps the
rounding of its terms).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lars.core.fields import MATTERS, RULE
from lars.core.trace import QUANTITIES, Trace, TraceError

ROUNDING = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
#: Which settings move which quantity first: the candidates named when the headers differ.
UPDATE_FIELDS = ("momentum", "momentum_style", "nesterov", "dampening", "buffer_start",
                 "momentum_correction", "momentum_correction_tensors", "maximize", "grad_rescale",
                 "grad_clip_value", "grad_clip_norm")
RATIO_FIELDS = tuple(f for f in RULE if f not in UPDATE_FIELDS)


@dataclass
class Comparison:
    """What `compare` found: the divergence (None when the runs agree) and its diagnosis."""

    a: str
    b: str
    tensors: list[tuple[str, str]]
    steps: list[int]
    rounding: float
    operations: int
    divergence: dict[str, Any] | None = None
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    differences: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def agree(self) -> bool:
        return self.divergence is None

    def tolerance(self, index: int) -> float:
        return self.operations * self.rounding * (index + 1) * (index + 2) / 2


def relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`|a - b|` over the largest `|a|`, `|b|` of the tensor so far (steps on axis 0: a gradient
    that cancels to a small sum at one step keeps the rounding of its terms, not of the sum); 0
    where both are 0, inf where one is NaN and the other not."""
    scale = np.fmax.accumulate(np.fmax(np.abs(a), np.abs(b)), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(scale > 0, np.abs(a - b) / np.where(scale > 0, scale, 1.0), 0.0)
    return np.where(np.isnan(a) != np.isnan(b), np.inf, np.where(np.isnan(out), 0.0, out))


def compare(a: Trace, b: Trace, names: Mapping[str, str] | None = None, *, label_a: str = "A",
            label_b: str = "B") -> Comparison:
    """Lines `a` and `b` up (`names`: a's tensor name -> b's) and finds the first divergence."""
    names = names or {}
    index_b = {n: i for i, n in enumerate(b.names)}
    pairs = [(i, index_b[names.get(n, n)]) for i, n in enumerate(a.names) if names.get(n, n) in index_b]
    if not pairs:
        raise TraceError(f"no tensor of {label_a} has a counterpart in {label_b}: give a name map (--names)")
    matched_a, matched_b = {i for i, _ in pairs}, {j for _, j in pairs}
    common = sorted(set(a.step.tolist()) & set(b.step.tolist()))
    if not common:
        raise TraceError(f"{label_a} and {label_b} have no recorded step in common")
    rows_a = [int(np.nonzero(a.step == s)[0][0]) for s in common]
    rows_b = [int(np.nonzero(b.step == s)[0][0]) for s in common]
    largest = max([math.prod(a.shapes[i]) for i, _ in pairs] + [1])
    unit = max(ROUNDING.get(a.dtype, 2.0**-24), ROUNDING.get(b.dtype, 2.0**-24))
    result = Comparison(label_a, label_b, [(a.names[i], b.names[j]) for i, j in pairs], common, unit,
                        2 * math.ceil(math.log2(max(largest, 2))) + 16,
                        unmatched={label_a: [n for k, n in enumerate(a.names) if k not in matched_a],
                                   label_b: [n for k, n in enumerate(b.names) if k not in matched_b]})
    ia, ib = [i for i, _ in pairs], [j for _, j in pairs]
    for q in QUANTITIES:
        result.differences[q] = relative(a.columns[q][rows_a][:, ia], b.columns[q][rows_b][:, ib])
    result.differences["lr"] = relative(a.lr[rows_a], b.lr[rows_b])[:, None] * np.ones((1, len(pairs)))
    bound = np.array([result.tolerance(int(s)) for s in common])[:, None]
    beyond = np.zeros((len(common), len(pairs)), bool)
    for d in result.differences.values():
        beyond |= d > bound
    if beyond.any():
        t = int(np.nonzero(beyond.any(axis=1))[0][0])
        k = int(np.nonzero(beyond[t])[0][0])
        result.divergence = diagnose(a, b, result, t, k, rows_a[t], rows_b[t], ia[k], ib[k])
    return result


def diagnose(a: Trace, b: Trace, result: Comparison, t: int, k: int, ra: int, rb: int, ia: int,
             ib: int) -> dict[str, Any]:
    """Which quantity parted first at (step `t`, tensor `k`), and what that points to."""
    bound = result.tolerance(result.steps[t])
    off = {q: float(result.differences[q][t, k]) for q in (*QUANTITIES, "lr")}
    beyond = [q for q, d in off.items() if d > bound]
    value = {q: (float(a.columns[q][ra, ia]), float(b.columns[q][rb, ib])) for q in QUANTITIES}
    value["lr"] = (float(a.lr[ra]), float(b.lr[rb]))
    fields = differing_fields(a.hyperparams, b.hyperparams)
    tensor = result.tensors[k][0]
    if "lr" in beyond:
        cause = "schedule"
        why = f"the learning rate differs ({value['lr'][0]:.6g} against {value['lr'][1]:.6g})"
        suspects = [f for f in fields if f == "lr"]
    elif "weight_norm" in beyond:
        first = t == 0
        cause = "initialisation" if first else "weights"
        why = ("the weights differ before the first recorded step: the model's initialisation or a "
               "checkpoint loaded differently" if first else
               "the weights differ where the previous recorded step agreed: a step not recorded "
               "(every > 1), or the weights were changed outside the optimizer")
        suspects = []
    elif "grad_norm" in beyond:
        cause, why = "gradients", ("the gradient differs where the weights agree: the model, the loss or "
                                   "the data (its order, augmentation, batch) differ, not the optimizer")
        suspects = []
    elif "adapted" in beyond:
        cause = "exclusions"
        why = (f"{tensor} is {'adapted' if value['adapted'][0] else 'not adapted'} in {result.a} and "
               f"{'adapted' if value['adapted'][1] else 'not adapted'} in {result.b}: the adaptation "
               "exclusions differ (exclude_from_adaptation, or a flavor's name rule)")
        suspects = [f for f in fields if "exclu" in f or f == "flavor"]
    elif "weight_decay" in beyond:
        same_rate = a.hyperparams.get("weight_decay") == b.hyperparams.get("weight_decay")
        cause = "exclusions" if 0.0 in value["weight_decay"] and same_rate else "settings"
        why = (f"{tensor} has weight decay {value['weight_decay'][0]:g} in {result.a} and "
               f"{value['weight_decay'][1]:g} in {result.b}"
               + (": the weight-decay exclusions differ (exclude_from_weight_decay, or a flavor's name rule)"
                  if cause == "exclusions" else ""))
        suspects = [f for f in fields if "exclu" in f or f in ("weight_decay", "flavor")]
    elif "trust_ratio" in beyond:
        cause = "settings"
        why = (f"the norms agree but the trust ratio of {tensor} differs ({value['trust_ratio'][0]:.6g} "
               f"against {value['trust_ratio'][1]:.6g}): the rule's settings differ")
        suspects = [f for f in fields if f in RATIO_FIELDS or f in ("weight_decay", "flavor")]
    else:
        cause = "update rule"
        why = (f"the ratio and weight decay agree but the change made to {tensor} differs (||Δw|| "
               f"{value['update_norm'][0]:.6g} against {value['update_norm'][1]:.6g}): the update rule "
               "differs (momentum style, nesterov, dampening, the buffer's start)")
        suspects = [f for f in fields if f in UPDATE_FIELDS or f == "flavor"]
    return {"step": result.steps[t], "tensor": result.tensors[k][0], "tensor_b": result.tensors[k][1],
            "cause": cause, "why": why, "quantities": beyond, "values": value, "tolerance": bound,
            "settings": {f: fields[f] for f in suspects},
            "matters": {f: MATTERS[f] for f in suspects if f in MATTERS}}


def differing_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The hyperparameters that differ between two traces' headers."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def text(result: Comparison) -> str:
    """The comparison for a terminal."""
    tol0 = result.tolerance(result.steps[0])
    lines = [f"lars compare: {len(result.tensors)} tensors over {len(result.steps)} common steps",
             f"  tolerance(t) = {result.operations} · u · (t + 1)(t + 2)/2, u = {result.rounding:.3g} "
             f"(the coarser dtype's rounding; {result.operations} = 2·ceil(log2 of the largest tensor) "
             "+ 16): "
             f"{tol0:.3g} at step {result.steps[0]}"]
    for side, missing in result.unmatched.items():
        if missing:
            lines.append(f"  only in {side} ({len(missing)}): {', '.join(missing[:8])}"
                         + (" ..." if len(missing) > 8 else ""))
    d = result.divergence
    if d is None:
        worst = max(float(np.max(x / np.array([result.tolerance(s) for s in result.steps])[:, None]))
                    for x in result.differences.values())
        lines.append(f"the runs agree: every quantity within the tolerance (worst {worst:.2g} of it)")
        return "\n".join(lines)
    lines += [f"the runs part at step {d['step']}, tensor {d['tensor']}"
              + (f" ({d['tensor_b']} in {result.b})" if d["tensor_b"] != d["tensor"] else ""),
              f"  first to differ: {', '.join(d['quantities'])} (tolerance {d['tolerance']:.3g})"]
    for q in d["quantities"]:
        x, y = d["values"][q]
        lines.append(f"    {q}: {x:.9g} in {result.a}, {y:.9g} in {result.b}")
    lines.append(f"  diagnosis ({d['cause']}): {d['why']}")
    for f, (x, y) in d["settings"].items():
        lines.append(f"    {f}: {x!r} in {result.a}, {y!r} in {result.b}"
                     + (f" (matters {d['matters'][f]})" if f in d["matters"] else ""))
    return "\n".join(lines)


def as_json(result: Comparison) -> dict[str, Any]:
    return {"agree": result.agree, "a": result.a, "b": result.b, "steps": len(result.steps),
            "tensors": [list(p) for p in result.tensors], "rounding": result.rounding,
            "operations": result.operations, "divergence": result.divergence, "unmatched": result.unmatched}


def tensors_to_plot(result: Comparison, limit: int = 6) -> Sequence[int]:
    """The diverging tensor first, then those that part earliest."""
    bound = np.array([result.tolerance(s) for s in result.steps])[:, None]
    worst = np.max([d / bound for d in result.differences.values()], axis=0)  # steps x tensors
    first = [int(np.argmax(col > 1)) if (col > 1).any() else len(result.steps) for col in worst.T]
    parted = result.divergence["tensor"] if result.divergence else None
    order = sorted(range(len(result.tensors)),
                   key=lambda k: (result.tensors[k][0] != parted, first[k], -float(worst[:, k].max())))
    return order[:limit]
