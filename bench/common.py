"""Timing helpers shared by the benchmark scripts: interleaved passes, medians, a table, JSON."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BYTES_PER_PARAM = 28


def time_steps(step: Callable[[], None], warmup: int, steps: int) -> float:
    """The median seconds of `steps` calls after `warmup` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(runs: dict[str, Callable[[], None]], passes: int, warmup: int, steps: int,
            triad: Callable[[], float]) -> tuple[dict[str, float], dict[str, list[float]], float]:
    """Every variant in every pass (interleaved); returns (median ms, per-pass ms, GB/s)."""
    per_pass: dict[str, list[float]] = {name: [] for name in runs}
    bandwidth = []
    for _ in range(passes):
        bandwidth.append(triad())
        for name, step in runs.items():
            per_pass[name].append(time_steps(step, warmup, steps) * 1e3)
    return ({k: statistics.median(v) for k, v in per_pass.items()}, per_pass, statistics.median(bandwidth))


def report(title: str, ms: dict[str, float], anchors: dict[str, str], n_params: int, gbps: float,
           out: Path, extra: dict[str, Any], per_pass: dict[str, list[float]]) -> None:
    """Prints the table (ratios against each anchor) and writes the JSON."""
    bound_ms = BYTES_PER_PARAM * n_params / (gbps * 1e9) * 1e3
    print(title)
    print(f"memory triad: {gbps:.1f} GB/s -> LARS bound ({BYTES_PER_PARAM} B/param): {bound_ms:.1f} ms\n")
    columns = " ".join(f"{'x ' + a:>16}" for a in anchors)
    head = f"{'variant':<34} {'ms/step':>8} {columns} {'bound/step':>11}"
    print(head)
    for name, value in ms.items():
        ratios = " ".join(f"{value / ms[anchor]:>16.2f}" for anchor in anchors.values())
        print(f"{name:<34} {value:>8.1f} {ratios} {bound_ms / value:>11.2f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        **extra, "parameters": n_params, "machine": platform.platform(), "triad_gbps": gbps,
        "bound_ms": bound_ms, "ms_per_step": ms, "per_pass_ms": per_pass,
        "ratios": {a: {k: v / ms[anchor] for k, v in ms.items()} for a, anchor in anchors.items()},
    }, indent=2))
    print(f"\nJSON: {out}")
