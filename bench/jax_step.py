"""Jitted step time of `lars.backends.jax.lars` on the ResNet-50 parameter set, beside
`optax.lars` and optax SGD (momentum + weight decay), in one process, interleaved, as ratios.

    python bench/jax_step.py [--passes 5] [--steps 20] [--out bench/results/jax_step.json]

Each variant is one jitted function `(params, state, grads) -> (params, state)` (update and
apply_updates), with and without donating the params and state buffers. A variant's time is
the median over passes of its per-pass median step time (after `block_until_ready`).
"""

from __future__ import annotations

import argparse
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
from common import measure, report
from shapes import count, resnet50

from lars.backends.jax import lars


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
    params, grads = tree(shapes, 0, 0.05), tree(shapes, 1, 0.01)
    ms, per_pass, gbps = measure(variants(params, grads), args.passes, args.warmup, args.steps, triad_gbps)
    report(f"ResNet-50 parameter set: {len(shapes)} tensors, {count(shapes):,} fp32 parameters; "
           f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}",
           ms, {"optax.lars": "optax.lars", "optax.lars don.": "optax.lars donated",
                "sgd donated": "optax sgd+wd donated"},
           count(shapes), gbps, args.out, {"jax": jax.__version__, "optax": optax.__version__}, per_pass)


if __name__ == "__main__":
    main()
