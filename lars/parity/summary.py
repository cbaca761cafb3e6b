"""What a report says before its details: is it the same optimizer in every framework measured
here, and how far is the worst deviation from its tolerance; a line per backend.

A deviation is read against its tolerance (`deviation / tolerance`, 1 = at the limit), so the
conformance rows (every flavor on the seeded cases) and the training traces (the digits MLP)
compare on one scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The training comparison's deviations (`lars.parity.training.worst` takes the largest).
TRAINING_DEVIATIONS = ("loss_deviation", "param_deviation", "ratio_deviation")


@dataclass(frozen=True)
class Worst:
    """The largest deviation relative to its tolerance, and where it was measured."""

    ratio: float
    deviation: float
    tolerance: float
    where: str


@dataclass(frozen=True)
class Verdict:
    same: bool
    backends: list[str]
    failed: list[str]
    worst: Worst | None


@dataclass(frozen=True)
class BackendLine:
    backend: str
    kind: str
    rows: int
    passed: int
    refused_cases: int
    worst: Worst | None


def _ratio(deviation: float, tolerance: float) -> float:
    return deviation / tolerance if tolerance > 0 else (0.0 if deviation == 0 else float("inf"))


def row_worst(row: Mapping[str, Any]) -> Worst:
    return Worst(_ratio(row["max_deviation"], row["tolerance"]), row["max_deviation"], row["tolerance"],
                 f"{row['driver']} {row['dtype']}, flavor {row['flavor']}")


def trace_worst(trace: Mapping[str, Any]) -> Worst:
    comparison = trace.get("comparison") or {}
    deviation = max((float(comparison.get(k, 0.0)) for k in TRAINING_DEVIATIONS), default=0.0)
    tolerance = float(comparison.get("tolerance", 0.0))
    return Worst(_ratio(deviation, tolerance), deviation, tolerance,
                 f"{trace['backend']} {trace['dtype']}, training problem")


def _largest(found: Sequence[Worst]) -> Worst | None:
    return max(found, key=lambda w: w.ratio, default=None)


def verdict(data: Mapping[str, Any]) -> Verdict:
    """Same optimizer everywhere here: every row and every training trace within tolerance."""
    rows = data["rows"]
    traces = data.get("training", {}).get("traces", [])
    backends = list(dict.fromkeys([*(r["driver"] for r in rows), *(t["backend"] for t in traces)]))
    failed = [f"{r['driver']} {r['dtype']} {r['flavor']}" for r in rows if r["failed"]]
    failed += [f"{t['backend']} {t['dtype']} training" for t in traces
               if not (t.get("comparison") or {}).get("passed", True)]
    worst = _largest([*(row_worst(r) for r in rows if r["cases"] > len(r["refused"])),
                      *(trace_worst(t) for t in traces if t["backend"] != "reference")])
    return Verdict(same=bool(backends) and not failed, backends=backends, failed=failed, worst=worst)


def per_backend(rows: Sequence[Mapping[str, Any]]) -> list[BackendLine]:
    """The conformance rows gathered by backend (driver or peer library), in the rows' order."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        grouped.setdefault(r["driver"], []).append(r)
    return [BackendLine(backend=name, kind=group[0].get("kind", "adapter"), rows=len(group),
                        passed=sum(not r["failed"] for r in group),
                        refused_cases=sum(len(r["refused"]) for r in group),
                        worst=_largest([row_worst(r) for r in group if r["cases"] > len(r["refused"])]))
            for name, group in grouped.items()]
