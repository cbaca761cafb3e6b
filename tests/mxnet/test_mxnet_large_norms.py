"""The trust ratio of a large float32 parameter is the exact one, on both of OneLARS's paths.

MXNet's CPU `multi_sum_sq` and `nd.norm` add a float32 array's squares one after another in
float32: at 2M elements the norm is off by about 5e-4 relative, and so would be the ratio.
The adapter sums large arrays in pieces (`lars.backends.mxnet.kernels`); the ratio must be
within 1e-6 of the one computed in float64 from the same float32 values.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

import lars
from lars.backends.mxnet import OneLARS
from lars.backends.mxnet.kernels import BLOCK, sums_of_squares
from lars.core import State, reference

SIZE = 2_000_000  # 1,953 pieces and a rest of 128 elements
NAMES = ["big_weight", "small_weight"]
OPTIONS = dict(learning_rate=0.1, momentum=0.9, wd=1e-4, eta=1e-3, eps=0.0)


def values() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Unlike weights and gradients (normal and positive values): the errors of their norms
    would partly cancel in the ratio if they were drawn alike."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(SIZE).astype(np.float32), rng.standard_normal((5, 24)).astype(np.float32)]
    grads = [((rng.random(SIZE) + 0.5) * 1e-3).astype(np.float32),
             (rng.standard_normal((5, 24)) * 1e-3).astype(np.float32)]
    return weights, grads


def exact_ratios(flavor: str, weights: list[np.ndarray], grads: list[np.ndarray]) -> dict[str, float]:
    """The reference's ratios in float64, from the same float32 values."""
    hp = lars.hyperparams(flavor, lr=0.1, momentum=0.9, weight_decay=1e-4, trust_coefficient=1e-3, eps=0.0,
                          exclude_from_weight_decay=None, exclude_from_adaptation=None)
    as64 = [x.astype(np.float64) for x in weights], [g.astype(np.float64) for g in grads]
    params, gradients = (dict(zip(NAMES, xs, strict=True)) for xs in as64)
    return reference.step(params, gradients, State(), hp).trust_ratios


@pytest.mark.parametrize("flavor", ["paper", "optax"])  # split and combined denominators
@pytest.mark.parametrize("aggregate_num", [4, 1], ids=["aggregated", "per-tensor"])
def test_the_trust_ratio_of_a_large_tensor_is_the_exact_one(flavor: str, aggregate_num: int) -> None:
    weights, grads = values()
    optimizer = OneLARS(flavor=flavor, aggregate_num=aggregate_num, param_idx2name=dict(enumerate(NAMES)),
                        exclude_from_weight_decay=None, exclude_from_adaptation=None, **OPTIONS)
    updater = mx.optimizer.get_updater(optimizer)
    updater([0, 1], [nd.array(g) for g in grads], [nd.array(w) for w in weights])
    ours, exact = optimizer.trust_ratios(), exact_ratios(flavor, weights, grads)
    assert abs(ours["big_weight"] - exact["big_weight"]) <= 1e-6 * exact["big_weight"]
    assert abs(ours["small_weight"] - exact["small_weight"]) <= 1e-5 * exact["small_weight"]


def test_mxnets_own_norms_would_miss_that_bound() -> None:
    w = values()[0][0]
    exact = float(np.linalg.norm(w.astype(np.float64)))
    for norm in (nd.norm(nd.array(w)), nd.sqrt(nd.multi_sum_sq(nd.array(w), num_arrays=1))):
        assert abs(float(norm.asscalar()) - exact) > 1e-6 * exact


def test_small_arrays_keep_multi_sum_sqs_bits() -> None:
    rng = np.random.default_rng(1)
    small = [nd.array(rng.standard_normal(n).astype(np.float32)) for n in (1, 108, BLOCK - 1)]
    large = nd.array(rng.standard_normal(3 * BLOCK + 5).astype(np.float32))  # 3 blocks and a rest
    ours = sums_of_squares([small[0], large, *small[1:]])
    mxnets = nd.multi_sum_sq(*small, num_arrays=len(small)).asnumpy()
    assert ours.dtype == np.float32
    assert ours[[0, 2, 3]].tobytes() == mxnets.tobytes()
    exact = float(np.sum(large.asnumpy().astype(np.float64) ** 2))
    assert abs(float(ours[1]) - exact) <= 2.0**-22 * exact  # two float32 units
