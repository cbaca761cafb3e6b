"""Jitted step time of `lars.backends.jax.lars` on the ResNet-50 parameter set, beside
`optax.lars` and optax SGD (momentum + weight decay), in one process, interleaved, as ratios.

    python bench/jax_step.py [--passes 5] [--steps 20] [--out bench/results/jax_step.json]

Each variant is one jitted function `(params, state, grads) -> (params, state)` (update and
apply_updates), with and without donating the params and state buffers. A variant's time is
the median over passes of its per-pass median step time (after `block_until_ready`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import count, resnet50

from lars.backends.jax import lars

BYTES_PER_PARAM = 28


def tree(shapes: list[tuple[str, tuple[int, ...]]], seed: int, scale: float) -> dict[str, jax.Array]:
    keys = jax.random.split(jax.random.PRNGKey(seed), len(shapes))
    return {n: jax.random.normal(k, s, jnp.float32) * scale for (n, s), k in zip(shapes, keys, strict=True)}


def runner(tx: optax.GradientTransformation, params: Any, grads: Any, donate: bool) -> Callable[[], None]:
    def step(p: Any, s: Any, g: Any) -> tuple[Any, Any]:
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    jitted = jax.jit(step, donate_argnums=(0, 1) if donate else ())
    box = {"p": jax.tree.map(jnp.copy, params), "s": tx.init(params)}

    def run() -> None:
        box["p"], box["s"] = jitted(box["p"], box["s"], grads)
        jax.block_until_ready(box["p"])
    return run


def variants(params: Any, grads: Any) -> dict[str, Callable[[], None]]:
    sgd = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    peer = optax.lars(0.1, weight_decay=1e-4, momentum=0.9)
    ours = lars(0.1, "paper", weight_decay=1e-4, momentum=0.9)
    out = {}
    for donate in (False, True):
        tag = " donated" if donate else ""
        out[f"optax sgd+wd{tag}"] = runner(sgd, params, grads, donate)
        out[f"optax.lars{tag}"] = runner(peer, params, grads, donate)
        out[f"lars paper{tag}"] = runner(ours, params, grads, donate)
    return out


def time_steps(step: Callable[[], None], warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def triad_gbps(n: int = 50_000_000, repeats: int = 10) -> float:
    """`a = b + 0.5*c` into a donated (already touched) `a`: 12 bytes per element."""
    a, b, c = jnp.zeros(n, jnp.float32), jnp.ones(n, jnp.float32), jnp.ones(n, jnp.float32)
    triad = jax.jit(lambda a, b, c: b + 0.5 * c, donate_argnums=0)
    a = jax.block_until_ready(triad(a, b, c))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a = jax.block_until_ready(triad(a, b, c))
        times.append(time.perf_counter() - start)
    return 3 * 4 * n / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/jax_step.json"))
    args = parser.parse_args()
    shapes = resnet50()
    n_params = count(shapes)
    params, grads = tree(shapes, 0, 0.05), tree(shapes, 1, 0.01)
    runs = variants(params, grads)
    per_pass: dict[str, list[float]] = {name: [] for name in runs}
    bandwidth = []
    for _ in range(args.passes):
        bandwidth.append(triad_gbps())
        for name, step in runs.items():
            per_pass[name].append(time_steps(step, args.warmup, args.steps))
    gbps = statistics.median(bandwidth)
    bound_ms = BYTES_PER_PARAM * n_params / (gbps * 1e9) * 1e3
    ms = {name: statistics.median(t) * 1e3 for name, t in per_pass.items()}
    best_peer = min(ms["optax.lars"], ms["optax.lars donated"])
    best_sgd = min(ms["optax sgd+wd"], ms["optax sgd+wd donated"])
    print(f"ResNet-50 parameter set: {len(shapes)} tensors, {n_params:,} fp32 parameters; "
          f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}")
    print(f"memory triad: {gbps:.1f} GB/s -> LARS bound ({BYTES_PER_PARAM} B/param): {bound_ms:.1f} ms\n")
    print(f"{'variant':<24} {'ms/step':>8} {'x best optax.lars':>18} {'x best sgd':>11} {'bound/step':>11}")
    for name, value in ms.items():
        print(f"{name:<24} {value:>8.1f} {value / best_peer:>18.2f} {value / best_sgd:>11.2f} "
              f"{bound_ms / value:>11.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "parameters": n_params, "tensors": len(shapes), "jax": jax.__version__,
        "optax": optax.__version__, "machine": platform.platform(), "triad_gbps": gbps,
        "bound_ms": bound_ms, "ms_per_step": ms,
        "per_pass_ms": {k: [t * 1e3 for t in v] for k, v in per_pass.items()},
        "ratio_vs_best_optax_lars": {k: v / best_peer for k, v in ms.items()},
        "ratio_vs_best_sgd": {k: v / best_sgd for k, v in ms.items()},
    }, indent=2))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
