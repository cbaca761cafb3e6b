"""The report's training problem under a hyperparameter file: every framework that can run here
trains the digits MLP (`lars.parity.digits`) with the file's optimizer, and each run is compared
with the NumPy reference of the same dtype.

Tolerance. Each framework computes its own gradients (matmuls summed in its own order), and a
training trajectory amplifies rounding: how much depends on the problem and the lr, not on the
optimizer. So the tolerance is measured in the same run: `rounding` is how far the float32
NumPy reference lies from the float64 one; rounding-driven divergence scales with the unit
roundoff, so a dtype's tolerance is `max(digits.TOLERANCES[dtype], 10 * rounding * u(dtype) /
u(float32))`: a framework may drift from the reference by at most ten times what rounding alone
makes of this trajectory. (The synthetic conformance problem, where every backend sees the same
gradients, keeps the strict policy.)

A file's schedule is written for its own training run (MLPerf ResNet-50: 3,125 warm-up steps of
25,626); on the problem's 100 steps it is compressed, step `t` taking the rate of the schedule's
step `t * length / steps`, so the problem sees the schedule's whole shape (warm-up, peak, decay).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lars.core.config import Config
from lars.core.schedules import Constant, Schedule, WarmupCosine, WarmupPolynomial

if TYPE_CHECKING:
    from lars.parity.progress import Progress


def schedule_length(schedule: Schedule) -> int:
    """The number of steps a schedule describes (0 for a constant)."""
    if isinstance(schedule, WarmupPolynomial):
        return schedule.warmup_steps + schedule.decay_steps
    if isinstance(schedule, WarmupCosine):
        return schedule.total_steps
    return 0


def compressed(schedule: Schedule, steps: int) -> Callable[[int], float]:
    """`schedule` played over `steps` steps (a constant stays as it is)."""
    length = schedule_length(schedule)
    if isinstance(schedule, Constant) or length <= steps:
        return lambda t: float(schedule(t))
    return lambda t: float(schedule(round(t * length / steps)))


def worst(comparison: dict[str, Any]) -> float:
    return float(max(comparison[k] for k in ("loss_deviation", "param_deviation", "ratio_deviation")))


def _unit(dtype: str) -> float:
    return float(np.finfo(dtype).eps)


def run(config: Config, dtypes: Sequence[str] = ("float64", "float32"),
        backends: Sequence[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Traces of every available backend (or of `backends`) and the reference, each compared
    with the reference of its dtype, for the report's JSON."""
    from lars.parity import digits
    from lars.parity.progress import Progress  # rich: the report's extra, not the schedules'

    problem = digits.Problem()
    reasons = digits.available()
    chosen = [b for b, why in reasons.items() if why is None and (backends is None or b in backends)]
    lr_at = compressed(config.lr_schedule(), problem.steps)
    bar = progress or Progress(len(chosen) * len(dtypes))
    references = {d: digits.train("reference", config.hyperparams, problem, d, lr_at)
                  for d in ("float64", "float32")}
    rounding = worst(digits.compare(references["float32"], references["float64"]))
    traces = []
    for dtype in dtypes:
        reference = references[dtype]
        tolerance = max(digits.TOLERANCES[dtype], 10 * rounding * _unit(dtype) / _unit("float32"))
        for backend in chosen:
            trace = reference if backend == "reference" else digits.train(
                backend, config.hyperparams, problem, dtype, lr_at)
            comparison = digits.compare(trace, reference)
            comparison |= {"tolerance": tolerance, "passed": worst(comparison) <= tolerance}
            traces.append(trace.to_dict() | {"comparison": comparison})
            bar.advance(f"training {backend} {dtype}")
    bar.close()
    layers = "-".join(str(n) for n in (digits.INPUTS, *problem.hidden, digits.CLASSES))
    return {"problem": f"digits MLP {layers} (tanh), batch {problem.batch_size}, {problem.steps} steps, "
                       f"seed {problem.seed}; optimizer from {config.source} ({config.flavor}, "
                       f"its schedule compressed to {problem.steps} steps)",
            "unavailable": {b: why for b, why in reasons.items() if why is not None},
            "rounding": rounding, "traces": traces}
