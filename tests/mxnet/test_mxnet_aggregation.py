"""OneLARS's default chunk (32 tensors per update call, not MXNet's 4) changes speed, not
results: the same bits as chunks of 4 on both kernel choices, for a network larger than a chunk;
an aggregation MXNet cannot run is refused by name."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

import lars
from lars.backends.mxnet import AGGREGATION, OneLARS

SHAPES = [(5, 3) if i % 2 else (5,) for i in range(2 * AGGREGATION + 3)]  # three default chunks
NAMES = {i: f"layer{i // 2}_{'weight' if i % 2 else 'bias'}" for i in range(len(SHAPES))}


def run(optimizer: OneLARS) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    weights = [nd.array(rng.standard_normal(s), dtype="float32") for s in SHAPES]
    updater = mx.optimizer.get_updater(optimizer)
    for _ in range(3):
        grads = [nd.array(rng.standard_normal(s) * 0.1, dtype="float32") for s in SHAPES]
        updater(list(range(len(SHAPES))), grads, weights)
    return [w.asnumpy() for w in weights]


@pytest.mark.parametrize("kernels", ["single", "multi"])
@pytest.mark.parametrize("flavor", ["paper", "mxnet"])
def test_the_default_chunk_gives_the_bits_of_chunks_of_four(flavor: str, kernels: str) -> None:
    options = dict(learning_rate=0.1, momentum=0.9, wd=1e-3, param_idx2name=NAMES, kernels=kernels)
    default = OneLARS(flavor=flavor, **options)
    assert default.aggregate_num == AGGREGATION
    by_four = OneLARS(flavor=flavor, aggregate_num=4, **options)
    for ours, fours in zip(run(default), run(by_four), strict=True):
        assert np.array_equal(ours, fours)


@pytest.mark.parametrize("value", [0, 61, 2.5, True])
def test_an_aggregation_mxnet_cannot_run_is_refused(value: object) -> None:
    with pytest.raises(lars.HyperparameterError, match=r"aggregate_num.*from 1 to 60"):
        OneLARS(flavor="paper", learning_rate=0.1, aggregate_num=value)  # type: ignore[arg-type]
