"""The `mxnet` flavor against the installed `mxnet.optimizer.LARS` 1.9.1, run here.

MXNet's LARS has two paths: the aggregated one (dense tensors: `multi_sum_sq`, `multi_lars`,
`preloaded_multi_sgd_mom_update`) and the per-tensor one (`_get_lars`, `sgd_mom_update`), which
it takes when a weight or gradient is not dense; all-rows `row_sparse` arrays with lazy update
give the same math through it. Ours: `OneLARS(flavor="mxnet")` with lists (aggregated) and with
`aggregate_num=1` (per tensor).
"""

from __future__ import annotations

from unittest import mock

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd
from mxnet_helpers import NAMES, assert_close, gradients, max_error, run_updater, tensors

from lars.backends.mxnet import OneLARS

STEPS = 120
INIT = tensors(0)
GRADS = gradients(STEPS)
#: rescale_grad scales the gradient and its norm; clip_gradient (after rescaling) is not seen by
#: the norm; clip 0.7 is hit by about a third of the rescaled entries.
OPTIONS = dict(learning_rate=0.5, momentum=0.9, wd=1e-3, rescale_grad=0.5, clip_gradient=0.7,
               param_idx2name=dict(enumerate(NAMES)))


def schedule() -> mx.lr_scheduler.LRScheduler:
    """Changes the learning rate every 7 updates: the momentum correction is active (num_update
    counts from 1)."""
    return mx.lr_scheduler.FactorScheduler(step=7, factor=0.7, base_lr=0.5)


@pytest.fixture(scope="module")
def peer() -> dict[str, list[np.ndarray]]:
    """MXNet's LARS on its aggregated path and on its per-tensor path (checked to be taken)."""
    aggregated = run_updater(mx.optimizer.LARS(lr_scheduler=schedule(), **OPTIONS), INIT, GRADS)
    real = mx.optimizer.LARS._get_lars
    with mock.patch.object(mx.optimizer.LARS, "_get_lars", autospec=True, side_effect=real) as per_tensor:
        sparse = run_updater(mx.optimizer.LARS(lr_scheduler=schedule(), **OPTIONS), INIT, GRADS,
                             stype="row_sparse")
    assert per_tensor.call_count == STEPS * len(NAMES)
    return {"aggregated": aggregated, "per_tensor": sparse}


@pytest.mark.parametrize("mxnet_path", ["aggregated", "per_tensor"])
@pytest.mark.parametrize("aggregate_num", [4, 1], ids=["ours-aggregated", "ours-per-tensor"])
def test_mxnet_flavor_matches_mxnet_lars(peer: dict[str, list[np.ndarray]], mxnet_path: str,
                                         aggregate_num: int) -> None:
    ours = OneLARS(flavor="mxnet", lr_scheduler=schedule(), aggregate_num=aggregate_num, **OPTIONS)
    got = run_updater(ours, INIT, GRADS)
    assert_close(got, peer[mxnet_path])
    moved = max(float(np.abs(a - b).max()) for a, b in zip(got, INIT, strict=True))
    assert moved > 0.1  # the run really trains
    unadapted = {"bn0_gamma", "bn0_beta", "conv1_bias", "dense0_bias"}
    assert {n for n, r in ours.trust_ratios().items() if r == 1.0} == unadapted


def test_the_two_mxnet_paths_agree(peer: dict[str, list[np.ndarray]]) -> None:
    assert_close(peer["per_tensor"], peer["aggregated"])


def test_momentum_correction_reaches_only_the_first_chunk(peer: dict[str, list[np.ndarray]]) -> None:
    """MXNet corrects the momentum (m * lr_t / lr_{t-1}) on the first update call of a step only:
    correcting all 8 tensors changes the second chunk, correcting none changes the first."""
    first, rest = slice(0, 4), slice(4, 8)
    everywhere = run_updater(OneLARS(flavor="mxnet", lr_scheduler=schedule(), momentum_correction_tensors=8,
                                     **OPTIONS), INIT, GRADS)
    assert_close(everywhere[first], peer["aggregated"][first], names=NAMES[first])
    assert max_error(everywhere[rest], peer["aggregated"][rest]) > 1e-3
    nowhere = run_updater(OneLARS(flavor="mxnet", lr_scheduler=schedule(), momentum_correction=False,
                                  **OPTIONS),
                          INIT, GRADS)
    assert max_error(nowhere[first], peer["aggregated"][first]) > 1e-3


def test_chunk_size_is_a_hyperparameter() -> None:
    """With MXNET_OPTIMIZER_AGGREGATION_SIZE=2 MXNet corrects two tensors per step:
    `momentum_correction_tensors=2` reproduces it."""
    grads = GRADS[:30]
    theirs = mx.optimizer.LARS(lr_scheduler=schedule(), **OPTIONS)
    theirs.aggregate_num = 2
    expected = run_updater(theirs, INIT, grads)
    ours = OneLARS(flavor="mxnet", lr_scheduler=schedule(), aggregate_num=2, momentum_correction_tensors=2,
                   **OPTIONS)
    assert_close(run_updater(ours, INIT, grads), expected)
    default = OneLARS(flavor="mxnet", lr_scheduler=schedule(), **OPTIONS)
    assert max_error(run_updater(default, INIT, grads), expected) > 1e-4


def test_paper_flavor_differs_from_mxnet_lars(peer: dict[str, list[np.ndarray]]) -> None:
    """Same numbers, other rules (no exclusions, no correction): the comparison can fail."""
    paper = OneLARS(flavor="paper", lr_scheduler=schedule(), **OPTIONS)
    assert max_error(run_updater(paper, INIT, GRADS), peer["aggregated"]) > 0.1


def test_name_rules_follow_mxnet() -> None:
    """Only `*_weight` gets weight decay (zero gradients: every ratio falls back to 1, the step is
    lr * wd * w where weight decay applies, nothing elsewhere)."""
    zeros = [[np.zeros_like(w) for w in INIT]]
    options = OPTIONS | {"momentum": 0.0}
    expected = run_updater(mx.optimizer.LARS(**options), INIT, zeros)
    ours = OneLARS(flavor="mxnet", **options)
    got = run_updater(ours, INIT, zeros)
    assert_close(got, expected)
    for name, w0, w1 in zip(NAMES, INIT, got, strict=True):
        decayed = name.endswith("_weight")
        np.testing.assert_allclose(w1, w0 * (1 - 0.5 * 1e-3) if decayed else w0, rtol=1e-6)


def gluon_net() -> gluon.nn.HybridSequential:
    """BatchNorm first: its running statistics (indices 2, 3 in the Trainer's name order) have no
    gradient, so the first update call of a step gets indices 0, 1, 4, 5. Shapes given:
    initialisation happens here, reproducibly."""
    mx.random.seed(0)
    net = gluon.nn.HybridSequential(prefix="net_")  # the same names (the Trainer sorts by name) every time
    with net.name_scope():
        net.add(gluon.nn.BatchNorm(in_channels=6), gluon.nn.Dense(8, in_units=6), gluon.nn.Activation("relu"),
                gluon.nn.Dense(5, in_units=8), gluon.nn.Dense(3, in_units=5))
    net.initialize(mx.init.Xavier())
    return net


def train_gluon(optimizer: str, options: dict[str, object], steps: int = 12) -> list[np.ndarray]:
    net = gluon_net()
    trainer = gluon.Trainer(net.collect_params(), optimizer, options)
    rng = np.random.default_rng(3)
    for _ in range(steps):
        x = nd.array(rng.standard_normal((16, 6)).astype(np.float32))
        with autograd.record():
            loss = ((net(x) - 1.0) ** 2).mean()
        loss.backward()
        trainer.step(16)
    return [p.data().asnumpy() for p in net.collect_params().values()]


def test_gluon_trainer_matches_mxnet_lars_without_name_rules() -> None:
    """Gluon's Trainer gives MXNet's LARS no names, so it excludes nothing; with the exclusions
    off, the `mxnet` flavor reproduces it under a schedule, BatchNorm included (the correction
    reaches the first 4 tensors *with* gradients)."""
    common = dict(momentum=0.9, wd=1e-3)
    expected = train_gluon("lars", common | {"lr_scheduler": mx.lr_scheduler.FactorScheduler(3, 0.5, 0.3)})
    ours = train_gluon("onelars", common | {"flavor": "mxnet", "exclude_from_weight_decay": None,
                                            "exclude_from_adaptation": None,
                                            "lr_scheduler": mx.lr_scheduler.FactorScheduler(3, 0.5, 0.3)})
    assert_close(ours, expected, names=[str(i) for i in range(len(expected))])
    named = train_gluon("onelars", common | {"flavor": "mxnet",
                                             "lr_scheduler": mx.lr_scheduler.FactorScheduler(3, 0.5, 0.3)})
    assert max_error(named, expected) > 1e-3  # by default the name rules apply to Gluon's names
