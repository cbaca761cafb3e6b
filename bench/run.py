"""One benchmark across all backends: the LARS step of each adapter beside its framework's
anchors, on three real parameter sets and two scaling sweeps, against the memory bound.

    python -m bench.run [--backend torch jax keras mxnet] [--quick] [--parts DIR]
    python -m bench.merge DIR [DIR ...] [--out bench/results]     # table, JSON and plots

Each backend runs in its own process (when several are asked for) and writes `DIR/<backend>.json`,
a part; frameworks that cannot share an environment (MXNet needs NumPy 1.23.5) run from
different environments into different folders, and `bench.merge` puts the parts together, as
`nox -s bench` does. A backend that cannot be imported, or whose process dies, is a part that
says why.

What is measured, per backend:
- sets: ResNet-50, ViT-B/16 and BERT-base parameter shapes (`bench.shapes`), float32 and
  bfloat16, every variant (the adapter and the anchors), interleaved passes;
- sweeps (float32, the adapter and its first anchor): step time against the parameter count
  (100 equal tensors, 1e5 to 1e8 parameters) and against the tensor count (1e7 parameters,
  10 to 10,000 tensors; a point whose build (trace, compile) would take minutes is skipped,
  with why);
- the attainable memory bandwidth: the better of a triad before each pass (`common.Triad`) and
  the bandwidth the framework's fastest SGD step reaches (each SGD checked on a probe first,
  `common.checked`: a wrong one is reported, not timed) (20 B/param in float32); each step is
  reported against the bound of our LARS step at that bandwidth (28 B/param in float32, 18 in
  bfloat16 with float32 momentum).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    DTYPES,
    Backend,
    Step,
    Triad,
    bound_ms,
    budget,
    measure,
    random_tensors,
    sgd_gbps,
    time_steps,
)
from bench.shapes import SETS, Shapes, count, synthetic

MODULES = {"torch": "bench.torch_step", "jax": "bench.jax_step", "keras": "bench.keras_step",
           "mxnet": "bench.mxnet_step"}
PARAMETER_SWEEP = (10**5, 10**6, 10**7, 10**8)
PARAMETER_SWEEP_TENSORS = 100
TENSOR_SWEEP = (10, 100, 1000, 3000, 10000)
TENSOR_SWEEP_PARAMETERS = 10**7
#: --quick: one set, small sweeps, one pass of two steps: a smoke run of every code path.
QUICK_SETS = ("resnet50",)
QUICK_PARAMETER_SWEEP = (10**5, 10**6)
QUICK_TENSOR_SWEEP = (10, 100)
QUICK_TENSOR_SWEEP_PARAMETERS = 10**6
#: Triad arrays: 200 MB each (64 MB with --quick), larger than any cache here (L3 32 MB).
TRIAD_ELEMENTS, QUICK_TRIAD_ELEMENTS = 50_000_000, 16_000_000
#: Seconds one backend's process may run before it is stopped.
TIMEOUT_S, QUICK_TIMEOUT_S = 1800, 300
#: Seconds a sweep point may spend building (tracing, compiling) one variant.
BUILD_LIMIT_S = 90


def load(name: str) -> Backend:
    module: Any = importlib.import_module(MODULES[name])
    return module.backend()  # type: ignore[no-any-return]


class BuildClock:
    """How long each variant took to build (trace or compile) in a sweep, to skip the points
    where it would take minutes: jitting optax.lars over 3,000 leaves took 8 minutes here."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], tuple[int, float]] = {}

    def why_skip(self, kind: str, variant: str, tensors: int) -> str | None:
        if (kind, variant) not in self.last:
            return None
        before, seconds = self.last[kind, variant]
        expected = seconds * max(1.0, tensors / before)  # at least linear in the tensor count
        if expected <= BUILD_LIMIT_S:
            return None
        return (f"building it took {seconds:.0f} s at {before:,} tensors, about "
                f"{expected:.0f} s expected at {tensors:,} (limit {BUILD_LIMIT_S} s)")

    def record(self, kind: str, variant: str, tensors: int, seconds: float) -> None:
        self.last[kind, variant] = (tensors, seconds)


def build(backend: Backend, names: Sequence[str], shapes: Shapes, dtype: str, skipped: dict[str, str],
          seconds: dict[str, float], per_step: dict[str, float]) -> tuple[dict[str, Step], dict[str, str]]:
    """Each variant built and stepped once (which traces or compiles it), its seconds in
    `seconds`, then stepped once more, timed, into `per_step`; returns the steps, and why each
    variant that is not among them was not measured."""
    tensors = random_tensors(shapes)
    steps, not_measured = {}, dict(skipped)
    for name in names:
        if name in skipped:
            continue
        start = time.perf_counter()
        try:
            step = backend.variants[name](tensors, dtype)
            step()
            seconds[name] = time.perf_counter() - start
            per_step[name] = time_steps(step, 0, 1)
            steps[name] = step
        except Exception as exc:  # a variant that cannot run this dtype is reported, not fatal
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            # TensorFlow's traced errors start "in user code:" and end with "TypeError: the cause"
            cause = lines[-1][:300] if lines else ""
            kind = f"{type(exc).__name__}: "
            not_measured[name] = f"failed: {cause if cause.startswith(kind) else kind + cause}"
            seconds[name] = time.perf_counter() - start
    return steps, not_measured


def measurement(backend: Backend, kind: str, set_name: str, shapes: Shapes, dtype: str, names: Sequence[str],
                quick: bool, triad: Triad, clock: BuildClock) -> dict[str, Any]:
    n = count(shapes)
    start = time.perf_counter()
    skipped = {v: why for v in names if kind != "set" and (why := clock.why_skip(kind, v, len(shapes)))}
    built: dict[str, float] = {}
    per_step: dict[str, float] = {}
    steps, not_measured = build(backend, names, shapes, dtype, skipped, built, per_step)
    for variant, seconds in built.items():
        clock.record(kind, variant, len(shapes), seconds)
    plan = budget(max(per_step.values(), default=0.0), quick)
    ms, per_pass, triad_gbps = measure(steps, plan, triad) if steps else ({}, {}, triad.gbps())
    del steps
    gc.collect()
    # The attainable bandwidth: the better of the triad and what the framework's fastest SGD reaches.
    sgd_ms = [ms[name] for name in backend.sgd if name in ms]
    sgd = sgd_gbps(n, dtype, min(sgd_ms)) if sgd_ms else None
    gbps = max(triad_gbps, sgd or 0.0)
    row = {"kind": kind, "set": set_name, "tensors": len(shapes), "parameters": n, "dtype": dtype,
           "budget": asdict(plan), "triad_gbps": triad_gbps, "sgd_gbps": sgd, "gbps": gbps,
           "bound_ms": bound_ms(n, dtype, gbps), "ms": ms,
           "per_pass_ms": per_pass, "not_measured": not_measured, "build_s": built,
           "seconds": time.perf_counter() - start}
    shown = "  ".join(f"{k} {v:.2f}" for k, v in ms.items())
    print(f"  {backend.name:<6} {set_name:<10} {len(shapes):>6} tensors {n:>12,} {dtype:<9} "
          f"bound {row['bound_ms']:.2f} ms at {gbps:.0f} GB/s | {shown}"
          + (f" | not measured: {', '.join(not_measured)}" if not_measured else "")
          + f"  ({row['seconds']:.0f} s)", flush=True)
    return row


def plan_measurements(backend: Backend, sets: Sequence[str], quick: bool, sweeps: bool = True,
                      ) -> Iterator[tuple[str, str, Callable[[], Shapes], str, list[str]]]:
    """(kind, set name, shapes, dtype, variants) for every measurement of a run."""
    for set_name in sets:
        for dtype in DTYPES:
            if dtype not in backend.unsupported:
                yield "set", set_name, SETS[set_name], dtype, list(backend.variants)
    if not sweeps:
        return
    sweep = backend.sweep_variants()
    for n in QUICK_PARAMETER_SWEEP if quick else PARAMETER_SWEEP:
        yield "parameters", "synthetic", partial(synthetic, n, PARAMETER_SWEEP_TENSORS), "float32", sweep
    fixed = QUICK_TENSOR_SWEEP_PARAMETERS if quick else TENSOR_SWEEP_PARAMETERS
    for t in QUICK_TENSOR_SWEEP if quick else TENSOR_SWEEP:
        yield "tensors", "synthetic", partial(synthetic, fixed, t), "float32", sweep


def run_backend(name: str, sets: Sequence[str], quick: bool,
                save: Callable[[dict[str, Any]], object] = lambda part: None, sweeps: bool = True,
                ) -> dict[str, Any]:
    """One backend's part: every measurement, or why it could not run here. `save` gets the part
    after each measurement (so a run stopped half-way keeps what it measured)."""
    part: dict[str, Any] = {"backend": name, "quick": quick, "machine": platform.platform(),
                            "python": sys.version.split()[0], "numpy": np.__version__}
    try:
        backend = load(name)
    except ImportError as exc:
        return {**part, "unavailable": f"its framework is not installed here ({exc})"}
    part |= {"complete": False, "versions": backend.versions, "targets": [asdict(t) for t in backend.targets],
             "variants": list(backend.variants), "unsupported": backend.unsupported, "measurements": []}
    for dtype, why in backend.unsupported.items():
        print(f"  {name:<6} {dtype}: not supported: {why}", flush=True)
    triad, clock = Triad(QUICK_TRIAD_ELEMENTS if quick else TRIAD_ELEMENTS), BuildClock()
    try:
        for kind, set_name, shapes, dtype, names in plan_measurements(backend, sets, quick, sweeps):
            part["measurements"].append(measurement(backend, kind, set_name, shapes(), dtype, names, quick,
                                                    triad, clock))
            save(part)
    finally:
        triad.close()
    return {**part, "complete": True}


def write(part: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{part['backend']}.json"
    path.write_text(json.dumps(part, indent=2))
    return path


def run_in_child(name: str, args: argparse.Namespace) -> None:
    """One backend in its own process (its own threads and memory); a crash becomes a part."""
    command = [sys.executable, "-m", "bench.run", "--backend", name, "--parts", str(args.parts),
               "--sets", *args.sets, *(["--quick"] if args.quick else []),
               *([] if args.sweeps else ["--no-sweeps"])]
    timeout = QUICK_TIMEOUT_S if args.quick else TIMEOUT_S
    path = args.parts / f"{name}.json"
    path.unlink(missing_ok=True)
    try:
        code = subprocess.run(command, timeout=timeout, check=False).returncode  # killed on timeout
        why = None if code == 0 else f"its benchmark process failed (exit status {code})"
    except subprocess.TimeoutExpired:
        why = f"its benchmark process ran past {timeout} s and was stopped"
    if why is not None:  # keep what it measured before it stopped, if anything
        print(f"{name}: {why}", flush=True)
        kept = json.loads(path.read_text()) if path.exists() else {}
        if kept.get("measurements") and kept.get("complete") is False:
            write({**kept, "stopped": why}, args.parts)
        else:
            write({"backend": name, "quick": args.quick, "unavailable": why}, args.parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", nargs="+", choices=list(MODULES), default=list(MODULES))
    parser.add_argument("--parts", type=Path, default=Path("bench/results/parts"),
                        help="folder for the parts, one JSON file per backend")
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=None,
                        help=f"parameter sets (default: all; with --quick: {', '.join(QUICK_SETS)})")
    parser.add_argument("--quick", action="store_true", help="a smoke run: seconds per backend")
    parser.add_argument("--no-sweeps", dest="sweeps", action="store_false",
                        help="the parameter sets only, without the scaling sweeps")
    args = parser.parse_args(argv)
    args.sets = args.sets or list(QUICK_SETS if args.quick else SETS)
    if len(args.backend) > 1:
        for name in args.backend:
            run_in_child(name, args)
        return 0
    name = args.backend[0]
    print(f"{name}: benchmark{' (quick)' if args.quick else ''}", flush=True)
    (args.parts / f"{name}.json").unlink(missing_ok=True)  # no stale part if this run dies early
    part = run_backend(name, args.sets, args.quick, save=lambda partial: write(partial, args.parts),
                       sweeps=args.sweeps)
    path = write(part, args.parts)
    print(f"{name}: part written to {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
