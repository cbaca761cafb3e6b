"""Shared helpers of the MXNet tests: reproducible tensors, runs through MXNet's `Updater` (as
`gluon.Trainer` drives an optimizer), and the per-tensor relative comparison."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import nd

TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}

#: Module-API names: conv/dense weights get weight decay and ratios, gamma/beta/bias neither
#: (`mxnet` flavor); 8 tensors, so a step has two chunks of 4.
NAMES = ["conv0_weight", "bn0_gamma", "bn0_beta", "conv1_weight", "conv1_bias", "dense0_weight",
         "dense0_bias", "out_weight"]
SHAPES = [(4, 3, 3, 3), (4,), (4,), (6, 4, 3, 3), (6,), (5, 24), (5,), (3, 5)]


def tensors(seed: int, dtype: Any = np.float32, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in SHAPES]


def gradients(steps: int, dtype: Any = np.float32) -> list[list[np.ndarray]]:
    return [tensors(1000 + t, dtype, scale=1.0 + t % 3) for t in range(steps)]


def run_updater(optimizer: mx.optimizer.Optimizer, init: Sequence[np.ndarray],
                grads: Sequence[Sequence[np.ndarray]], stype: str = "default",
                after_step: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Steps all tensors through `mx.optimizer.get_updater(optimizer)`, one list per step."""
    updater = mx.optimizer.get_updater(optimizer)
    weights = [nd.array(w, dtype=w.dtype).tostype(stype) for w in init]
    for t, step in enumerate(grads):
        gs = [nd.array(g, dtype=g.dtype).tostype(stype) for g in step]
        updater(list(range(len(weights))), gs, weights)
        if after_step is not None:
            after_step(t)
    return [w.tostype("default").asnumpy() for w in weights]


def relative_error(a: np.ndarray, ref: np.ndarray) -> float:
    """max|a - ref| / max|ref| (absolute where ref is all zeros)."""
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return float(np.abs(a.astype(np.float64) - ref.astype(np.float64)).max()) / (scale or 1.0)


def assert_close(got: Sequence[np.ndarray], ref: Sequence[np.ndarray], names: Sequence[str] = NAMES,
                 tolerance: float | None = None) -> None:
    for name, a, b in zip(names, got, ref, strict=True):
        tol = tolerance if tolerance is not None else TOLERANCE[np.dtype(b.dtype)]
        err = relative_error(a, b)
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:g}"


def max_error(got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    return max(relative_error(a, b) for a, b in zip(got, ref, strict=True))
