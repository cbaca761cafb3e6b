"""Runs a driver through the cases and compares it with the reference.

Tolerance policy (`TOLERANCES`): after every step of a case, for every tensor,

    deviation = max|driver - reference| / max|reference|

must stay within 1e-12 in float64 and 1e-5 in float32; the same holds for the momentum
buffers after the last step and for every step's trust ratios (`|a - b| / |b|`). A float32
run is compared with the float64 reference started from the same float32 values and fed the
same float32-rounded gradients, so the deviation measured is the driver's own rounding.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from lars.conformance.cases import CASES, Case
from lars.conformance.drivers import Driver, ReferenceRun, Run
from lars.core.errors import HyperparameterError
from lars.core.flavors import FLAVORS, hyperparams
from lars.core.hyperparams import Hyperparams

Array = np.ndarray

TOLERANCES: Mapping[str, float] = {"float64": 1e-12, "float32": 1e-5}


def magnitude(x: Array) -> float:
    return float(np.max(np.abs(np.asarray(x, dtype=np.float64)), initial=0.0))


def relative_deviation(value: Array, ref: Array, scale: float | None = None) -> float:
    """`max|value - ref| / scale`, `scale = max|ref|` by default (absolute where it is 0)."""
    value, ref = np.asarray(value, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if value.shape != ref.shape:
        return float("inf")
    scale = magnitude(ref) if scale is None else scale
    diff = float(np.max(np.abs(value - ref), initial=0.0))
    if np.isnan(diff):
        return float("inf")
    return diff / scale if scale > 0 else diff


def case_hyperparams(flavor: str, case: Case) -> Hyperparams:
    """The flavor's defaults, then the case's overrides, with the first lr of `case_lr`."""
    hp = hyperparams(flavor, **{"lr": case.schedule(0), **case.overrides})
    return hp.with_lr(case_lr(hp, case, 0))


def case_lr(hp: Hyperparams, case: Case, t: int) -> float:
    """The lr of step `t`: the case's schedule, times `1e-3 / trust_coefficient` without LARC.

    LARS moves a tensor by about `lr * trust_coefficient * ||w||` per step; scaling the lr
    keeps every flavor in the same regime (Holocron has no trust coefficient, i.e. 1.0, and
    would otherwise take steps 1000 times larger than the rest and turn chaotic). With the
    LARC clip the step is `min(lr*r, lr)` whatever the coefficient, so the lr is left alone:
    scaled down, it would sit below `r` and the clip would turn every tensor into plain SGD.
    """
    return case.schedule(t) * (1.0 if hp.larc_clip else 1e-3 / hp.trust_coefficient)


def _rounded(arrays: Mapping[str, Array], dtype: str) -> dict[str, Array]:
    return {n: np.asarray(a, dtype=np.float64).astype(dtype) for n, a in arrays.items()}


@dataclass(frozen=True)
class Trajectory:
    """The reference run of one case.

    `param_scales[t][name]` is the largest `max|w|` of the tensor up to step `t`, and
    `buffer_scales[name]` the largest `max|v|` over the run, `ratio_scales[t][name]` the largest
    trust ratio up to step `t`: deviations are measured against these, so that a tensor passing
    close to zero (a scalar, a buffer whose terms cancel, the ratio of a scalar near 0) is
    judged against its own typical size, not against one small value.
    """

    params: tuple[dict[str, Array], ...]
    param_scales: tuple[dict[str, float], ...]
    buffers: dict[str, Array]
    buffer_scales: dict[str, float]
    ratios: tuple[dict[str, float], ...]
    ratio_scales: tuple[dict[str, float], ...]


def drive(run: Run, hp: Hyperparams, case: Case, dtype: str,
          ) -> Iterator[tuple[dict[str, Array], dict[str, float], float]]:
    """Steps `run` through `case`, yielding (params, trust ratios, seconds) after each step (the
    parameters read once a step: those after a step are the next one's)."""
    params = run.params()
    for t in range(case.steps):
        grads = _rounded(case.gradients_at(t, params), dtype)
        lr = case_lr(hp, case, t)
        started = time.perf_counter()
        run.step(grads, lr)
        seconds = time.perf_counter() - started
        params = run.params()
        yield params, run.trust_ratios(), seconds


@lru_cache(maxsize=1024)
def reference_trajectory(hp: Hyperparams, case_name: str, dtype: str) -> Trajectory:
    """The float64 reference of `hp` on a case's problem, from its values rounded to `dtype`."""
    case = CASES[case_name]
    start = _rounded(case.initial_params(), dtype)
    run = ReferenceRun(hp, start)
    params, param_scales, ratios, ratio_scales = [], [], [], []
    scales = {n: magnitude(w) for n, w in start.items()}
    ratio_scale: dict[str, float] = {}
    buffer_scales: dict[str, float] = {}
    for p, r, _ in drive(_Float64(run, dtype), hp, case, dtype):
        scales = {n: max(scales[n], magnitude(w)) for n, w in p.items()}
        for n, b in run.state().momentum_buffers.items():
            buffer_scales[n] = max(buffer_scales.get(n, 0.0), magnitude(b))
        ratio_scale = {n: max(ratio_scale.get(n, 0.0), abs(v)) for n, v in r.items()}
        params.append(p)
        param_scales.append(scales)
        ratios.append(r)
        ratio_scales.append(ratio_scale)
    buffers = dict(run.state().momentum_buffers)
    return Trajectory(tuple(params), tuple(param_scales), buffers, buffer_scales, tuple(ratios),
                      tuple(ratio_scales))


class _Float64:
    """Feeds a float64 run the gradients a `dtype` run would get (rounded, then widened)."""

    def __init__(self, run: Run, dtype: str) -> None:
        self._run, self._dtype = run, dtype

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        self._run.step({n: None if g is None else g.astype(np.float64) for n, g in grads.items()}, lr)

    def params(self) -> dict[str, Array]:
        if self._dtype == "float64":
            return self._run.params()
        # The gradient of a "loss" case is taken at the driver-dtype view of the parameters.
        return _rounded(self._run.params(), self._dtype)

    def state(self):  # type: ignore[no-untyped-def]
        return self._run.state()

    def load(self, state):  # type: ignore[no-untyped-def]
        self._run.load(state)

    def set_lr(self, lr: Any) -> None:
        self._run.set_lr(lr)

    def trust_ratios(self) -> dict[str, float]:
        return self._run.trust_ratios()

    def hyperparameters(self) -> Hyperparams:
        return self._run.hyperparameters()


@dataclass
class CaseResult:
    """How one driver did on one (flavor, case, dtype)."""

    driver: str
    flavor: str
    case: str
    dtype: str
    tolerance: float
    deviation_per_step: list[float] = field(default_factory=list)
    final_deviation: dict[str, float] = field(default_factory=dict)
    buffer_deviation: dict[str, float] = field(default_factory=dict)
    ratio_deviation: float = 0.0
    seconds_per_step: float = 0.0
    error: str | None = None
    refused: str | None = None

    @property
    def max_deviation(self) -> float:
        values = [*self.deviation_per_step, *self.buffer_deviation.values(), self.ratio_deviation]
        return max(values, default=0.0)

    @property
    def passed(self) -> bool:
        return self.error is None and self.max_deviation <= self.tolerance

    def summary(self) -> str:
        status = "ok" if self.passed else ("refused" if self.refused else "FAIL")
        measured = f"max deviation {self.max_deviation:.3g} (tolerance {self.tolerance:g})"
        detail = self.refused or self.error or measured
        return f"{status} {self.driver} {self.flavor}/{self.case}/{self.dtype}: {detail}"


def run_case(driver: Driver, flavor: str, case_name: str, dtype: str) -> CaseResult:
    """Runs `driver` through one case and measures its deviation from the reference."""
    if CASES[case_name].edge and dtype != "float64" and not getattr(driver, "edges", True):
        return CaseResult(driver.name, flavor, case_name, dtype, TOLERANCES[dtype],
                          refused=f"{case_name}: an edge of lars's own contract, not promised by "
                                  f"{getattr(driver, 'library', driver.name)} (conformance/test_peer.py "
                                  "measures that it differs)")
    try:
        hp = case_hyperparams(flavor, CASES[case_name])
    except HyperparameterError as exc:
        return CaseResult(driver.name, flavor, case_name, dtype, TOLERANCES[dtype],
                          error=f"{type(exc).__name__}: {exc}")
    return run_hyperparams(driver, held(driver, hp), case_name, dtype)


def held(driver: Driver, hp: Hyperparams) -> Hyperparams:
    """`hp` with the fields a peer holds in float32 whatever the parameters' dtype
    (`float32_fields`, e.g. Paddle's kernel attributes) rounded as it holds them: the reference
    and the peer then run the same rule, which float64's bound can test."""
    fields = getattr(driver, "float32_fields", ())
    return hp.replace(**{f: float(np.float32(getattr(hp, f))) for f in fields}) if fields else hp


def run_hyperparams(driver: Driver, hp: Hyperparams, case_name: str, dtype: str) -> CaseResult:
    """Runs `driver` with `hp` on one case's problem (its tensors, gradients and schedule; not
    its overrides) and measures its deviation from the reference."""
    case = CASES[case_name]
    result = CaseResult(driver.name, hp.flavor, case_name, dtype, TOLERANCES[dtype])
    ref = reference_trajectory(hp, case_name, dtype)
    # A peer library exposes only its parameters; an adapter is compared on everything.
    compares = getattr(driver, "compares", ("params", "buffers", "ratios"))
    try:
        run = driver.start(hp, _rounded(case.initial_params(), dtype))
        seconds = 0.0
        for t, (params, ratios, spent) in enumerate(drive(run, hp, case, dtype)):
            seconds += spent
            result.deviation_per_step.append(max(
                relative_deviation(params[n], w, ref.param_scales[t][n]) for n, w in ref.params[t].items()))
            if "ratios" in compares:
                result.ratio_deviation = max(result.ratio_deviation, max(
                    (relative_deviation(np.float64(ratios.get(n, np.nan)), np.float64(r),
                                        ref.ratio_scales[t][n]) for n, r in ref.ratios[t].items()),
                    default=0.0))
        result.seconds_per_step = seconds / max(case.steps, 1)
        result.final_deviation = {
            n: relative_deviation(params[n], w, ref.param_scales[-1][n]) for n, w in ref.params[-1].items()}
        if "buffers" in compares:
            buffers = run.state().momentum_buffers
            result.buffer_deviation = {
                n: relative_deviation(buffers[n], b, ref.buffer_scales[n]) if n in buffers else float("inf")
                for n, b in ref.buffers.items()
            }
    except HyperparameterError as exc:
        refuses = getattr(driver, "refuses", {})
        if exc.field in refuses:  # a documented limit of the backend, refused up front
            result.refused = f"{exc.field}: {refuses[exc.field]}"
        result.error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a driver that crashes fails its case, with the reason
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def run_suite(driver: Driver, flavors: Iterable[str] = FLAVORS, cases: Iterable[str] = CASES,
              dtypes: Iterable[str] | None = None, *, stop_at_first_failure: bool = False,
              ) -> list[CaseResult]:
    """Every (flavor, case, dtype); with `stop_at_first_failure`, until one fails."""
    results = []
    for dtype in dtypes or driver.dtypes:
        for flavor in flavors:
            for case in cases:
                results.append(run_case(driver, flavor, case, dtype))
                if stop_at_first_failure and not results[-1].passed:
                    return results
    return results
