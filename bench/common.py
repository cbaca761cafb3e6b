"""What every backend's benchmark shares: the data, the memory-bandwidth triad, the timing.

A backend module (`torch_step.py`, `jax_step.py`, `keras_step.py`, `mxnet_step.py`) defines a
`Backend`: its variants (its adapter and the framework's own optimizers, each a factory that
builds one step function from the same random tensors) and the targets the issue sets. Each
variant owns its parameters, gradients and buffers. NumPy only here: this module runs in
every environment, MXNet's (NumPy 1.23.5) included.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from bench.shapes import Shapes

Step = Callable[[], None]
#: (name, weights, gradients) per tensor, float32; a variant converts them to its dtype.
Tensors = list[tuple[str, np.ndarray, np.ndarray]]
Factory = Callable[[Tensors, str], Step]

#: Bytes our LARS step must move per parameter: the norms read w and g, the update reads w, g
#: and the float32 momentum v and writes w and v (float32: 7 x 4 B; bfloat16: 5 x 2 B + 2 x 4 B).
LARS_BYTES = {"float32": 28, "bfloat16": 18}
#: Bytes an SGD-with-momentum step moves per parameter, its buffer in the parameter's dtype (as
#: every framework's SGD keeps it): reads w, g, v and writes w, v.
SGD_BYTES = {"float32": 20, "bfloat16": 10}
DTYPES = tuple(LARS_BYTES)


@dataclass(frozen=True)
class Target:
    """The issue's target: `ours` takes at most `limit` times the time of `anchor`, or of the
    fastest of `anchor` and its `stand_ins` (the framework's other steps of the same kind) that
    ran: an anchor whose step is wrong here is not measured (`checked`)."""

    ours: str
    anchor: str
    limit: float
    stand_ins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Backend:
    name: str
    versions: dict[str, str]
    #: Every variant, by name; the adapter's start with "lars".
    variants: dict[str, Factory]
    targets: tuple[Target, ...]
    #: The framework's SGD steps, fastest first where each is right: the fastest one measured
    #: gives the attainable bandwidth.
    sgd: tuple[str, ...]
    #: dtype -> why this framework cannot run it here (reported, never silently skipped).
    unsupported: dict[str, str] = field(default_factory=dict)

    def sweep_variants(self) -> list[str]:
        """The variants of the scaling sweeps: the adapter and its first target's anchor."""
        return [self.targets[0].ours, self.targets[0].anchor]


class WrongStep(RuntimeError):
    """A framework's step that does not compute what it stands for here (a kernel bug): it is
    reported, never timed as an anchor."""


#: The probe an anchor's step is checked on: the last tensor is longer than any SIMD width.
PROBE_SHAPES = ((7,), (8, 8), (10, 100))
PROBE_STEPS = 2


def probe_tensors(seed: int = 1) -> Tensors:
    """Weights and gradients ~ N(0, 1) with 8 significant bits, exact in bfloat16 and float16:
    a step of lr 0.1 moves a weight by ~10 %, far beyond a few roundings of any dtype here."""
    rng = np.random.default_rng(seed)

    def exact(shape: tuple[int, ...]) -> np.ndarray:
        x = rng.standard_normal(shape).astype(np.float32)
        return (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    return [(f"probe{i}", exact(s), exact(s)) for i, s in enumerate(PROBE_SHAPES)]


def sgd_weights(tensors: Tensors, lr: float, momentum: float, weight_decay: float, steps: int,
                ) -> list[np.ndarray]:
    """SGD with momentum from the same gradients, in float64: `u = g + wd·w`, `v = m·v + u`
    (`v = u` at the first step), `w -= lr·v`."""
    out = []
    for _, w0, g0 in tensors:
        w, g, v = w0.astype(np.float64), g0.astype(np.float64), None
        for _ in range(steps):
            u = g + weight_decay * w
            v = u if v is None else momentum * v + u
            w = w - lr * v
        out.append(w)
    return out


def wrong_weights(tensors: Tensors, got: list[np.ndarray], want: list[np.ndarray], dtype: str) -> str | None:
    """Why `got` is not `want` within the dtype's roundings (None if it is): each weight within
    5 % of its movement plus 4 units of rounding of its size."""
    eps = {"bfloat16": 2.0**-7, "float16": 2.0**-10}.get(dtype) or float(np.finfo(np.dtype(dtype)).eps)
    bad = total = 0
    example = ""
    for (_, w0, _), x, y in zip(tensors, got, want, strict=True):
        x = np.asarray(x, np.float64).reshape(y.shape)
        allowed = 0.05 * np.abs(y - w0) + 4 * eps * (np.abs(w0) + np.abs(y))
        wrong = np.abs(x - y) > allowed
        if wrong.any() and not example:
            i = np.unravel_index(np.argmax(wrong), y.shape)
            example = f", e.g. {float(w0[i]):.4g} -> {float(x[i]):.4g} where SGD gives {float(y[i]):.4g}"
        bad, total = bad + int(wrong.sum()), total + y.size
    return None if bad == 0 else f"{bad} of {total} weights wrong after {PROBE_STEPS} steps{example}"


Build = Callable[[Tensors, str], tuple[Step, Callable[[], list[np.ndarray]]]]


def checked(build: Build, lr: float, momentum: float, weight_decay: float) -> Factory:
    """A factory of `build`'s step (which returns the step and a reader of its weights) that
    first checks it computes SGD's step on the probe in that dtype, else raises `WrongStep`."""
    def factory(tensors: Tensors, dtype: str) -> Step:
        probe = probe_tensors()
        step, weights = build(probe, dtype)
        for _ in range(PROBE_STEPS):
            step()
        want = sgd_weights(probe, lr, momentum, weight_decay, PROBE_STEPS)
        why = wrong_weights(probe, weights(), want, dtype)
        if why is not None:
            raise WrongStep(f"not SGD's step in {dtype} here: {why}")
        return build(tensors, dtype)[0]
    return factory


@dataclass(frozen=True)
class Budget:
    """Warm-up steps, timed steps and interleaved passes for one measurement."""

    warmup: int
    steps: int
    passes: int


#: Seconds of timed steps per variant and pass (full runs), and the bounds on the step count.
TIMED_SECONDS, MIN_STEPS, MAX_STEPS = 1.0, 3, 20


def budget(seconds_per_step: float, quick: bool) -> Budget:
    """About `TIMED_SECONDS` of timed steps per variant and pass (3 to 20 steps), from the
    slowest variant's step time, so a big set or a slow variant does not take minutes."""
    if quick:
        return Budget(warmup=1, steps=2, passes=1)
    steps = round(TIMED_SECONDS / max(seconds_per_step, 1e-6))
    return Budget(warmup=1, steps=max(MIN_STEPS, min(MAX_STEPS, steps)), passes=3)


def random_tensors(shapes: Shapes, seed: int = 0) -> Tensors:
    """Weights ~ N(0, 0.05^2) and gradients ~ N(0, 0.01^2), float32, one draw for the set."""
    sizes = [int(np.prod(s)) for _, s in shapes]
    rng = np.random.default_rng(seed)
    flat_w = rng.standard_normal(sum(sizes), dtype=np.float32)
    flat_w *= 0.05
    flat_g = rng.standard_normal(sum(sizes), dtype=np.float32)
    flat_g *= 0.01
    offsets = np.cumsum([0, *sizes])
    return [(name, flat_w[a:b].reshape(shape), flat_g[a:b].reshape(shape))
            for (name, shape), a, b in zip(shapes, offsets[:-1], offsets[1:], strict=True)]


class Triad:
    """The machine's memory bandwidth: `a = b + c` over float32 arrays far larger than the
    caches (12 bytes per element, the bytes of STREAM's triad), on one thread and split across
    one thread per core (NumPy releases the GIL inside the ufunc); the better of the two, since
    on a shared machine a busy core can make more threads slower. Arrays are touched once."""

    def __init__(self, elements: int) -> None:
        self.a = np.zeros(elements, np.float32)
        self.b = np.ones(elements, np.float32)
        self.c = np.full(elements, 0.5, np.float32)
        threads = os.cpu_count() or 1
        bounds = np.linspace(0, elements, threads + 1).astype(int)
        self.slices = [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]
        self.pool = ThreadPoolExecutor(threads)

    def _part(self, s: slice) -> None:
        np.add(self.b[s], self.c[s], out=self.a[s])

    def _split(self) -> None:
        list(self.pool.map(self._part, self.slices))

    def _median_seconds(self, run: Step, repeats: int) -> float:
        run()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def gbps(self, repeats: int = 5) -> float:
        """The bandwidth of the faster configuration, each the median of `repeats` triads."""
        one = self._median_seconds(lambda: self._part(slice(None)), repeats)
        split = self._median_seconds(self._split, repeats)
        return 12 * self.a.size / min(one, split) / 1e9

    def close(self) -> None:
        self.pool.shutdown()


def time_steps(step: Step, warmup: int, steps: int) -> float:
    """The median seconds of `steps` calls after `warmup` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(runs: dict[str, Step], plan: Budget, triad: Triad,
            ) -> tuple[dict[str, float], dict[str, list[float]], float]:
    """Every variant in every pass, interleaved, with a triad before each pass.

    Returns the median over passes of each variant's per-pass median (ms), the per-pass
    medians, and the median bandwidth (GB/s).
    """
    per_pass: dict[str, list[float]] = {name: [] for name in runs}
    bandwidth = []
    for _ in range(plan.passes):
        bandwidth.append(triad.gbps())
        for name, step in runs.items():
            per_pass[name].append(time_steps(step, plan.warmup, plan.steps) * 1e3)
    return ({k: statistics.median(v) for k, v in per_pass.items()}, per_pass, statistics.median(bandwidth))


def sgd_gbps(parameters: int, dtype: str, ms: float) -> float:
    """The bandwidth an SGD step of `ms` reaches: its bytes (`SGD_BYTES`) over its time."""
    return SGD_BYTES[dtype] * parameters / (ms * 1e-3) / 1e9


def bound_ms(parameters: int, dtype: str, gbps: float) -> float:
    """The time our LARS step of `parameters` needs at `gbps` (`LARS_BYTES` per parameter)."""
    return LARS_BYTES[dtype] * parameters / (gbps * 1e9) * 1e3
