"""OneLARS under Gluon's `Trainer` over two contexts (`mx.cpu(0)`, `mx.cpu(1)`) with a kvstore:
each context's parameters after 20 steps equal a single-context run on the whole batch.

Each context computes the gradient of its half of the batch; the kvstore sums them, so the
update sees the whole batch's gradient, and `trainer.step(batch)` with the *whole* batch size
sets `rescale_grad = 1/batch` in both runs. With `update_on_kvstore=False` every context runs
the optimizer on its own copy (one `Updater` per context over the one optimizer: the step
counts, last learning rates and step positions must be kept per device, or the second context
sees the first's and the momentum correction and the first-step buffer go wrong); with
`update_on_kvstore=True` the optimizer runs once, inside the kvstore, and the contexts pull
the result.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd
from mxnet_helpers import relative_error

from lars.backends.mxnet import export_state, import_state

STEPS, BATCH = 20, 16
CONTEXTS = [mx.cpu(0), mx.cpu(1)]
#: paper: the aggregated path; mxnet: a schedule and the momentum correction of the first 4 of
#: the 6 tensors; larc with dampening: the per-tensor path and a first step that copies.
FLAVORS = {
    "paper": {"flavor": "paper", "learning_rate": 0.5, "momentum": 0.9, "eta": 0.02, "wd": 1e-3},
    "mxnet": {"flavor": "mxnet", "momentum": 0.9, "eta": 0.02, "wd": 1e-3, "schedule": True},
    "larc": {"flavor": "larc", "learning_rate": 0.5, "momentum": 0.9, "dampening": 0.3, "wd": 1e-3},
}
KVSTORES = [("device", False), ("device", True), ("local", False), ("local", True)]


def options(flavor: str) -> dict[str, Any]:
    out = dict(FLAVORS[flavor])
    if out.pop("schedule", False):
        out["lr_scheduler"] = mx.lr_scheduler.FactorScheduler(step=3, factor=0.7, base_lr=0.5)
    return out


def network(contexts: list[mx.Context]) -> gluon.nn.HybridSequential:
    """Three Dense layers (6 tensors), no BatchNorm: its batch statistics would differ per half."""
    mx.random.seed(0)
    net = gluon.nn.HybridSequential(prefix="kv_")
    with net.name_scope():
        net.add(gluon.nn.Dense(6, in_units=8, activation="tanh"),
                gluon.nn.Dense(6, in_units=6, activation="tanh"), gluon.nn.Dense(3, in_units=6))
    net.initialize(mx.init.Xavier(), ctx=contexts)
    return net


def batches() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((STEPS, BATCH, 8)).astype(np.float32),
            rng.standard_normal((STEPS, BATCH, 3)).astype(np.float32))


def train(net: gluon.nn.HybridSequential, trainer: gluon.Trainer, contexts: list[mx.Context],
          steps: range, clip: float | None = None) -> list[float]:
    """Each step splits the batch evenly over the contexts; `step` gets the whole batch size.
    With `clip`: allreduce_grads, clip_global_norm on each context's gradients, update; returns
    the global norms (of the first context's gradients)."""
    x, y = batches()
    loss_fn = gluon.loss.L2Loss()
    norms = []
    for t in steps:
        parts = zip(np.split(x[t], len(contexts)), np.split(y[t], len(contexts)), contexts, strict=True)
        with autograd.record():
            losses = [loss_fn(net(nd.array(xb, ctx=c)), nd.array(yb, ctx=c)) for xb, yb, c in parts]
        autograd.backward(losses)
        if clip is None:
            trainer.step(BATCH)
            continue
        trainer.allreduce_grads()
        for c in contexts:
            norm = gluon.utils.clip_global_norm([p.grad(c) for p in net.collect_params().values()], clip)
            if c == contexts[0]:
                norms.append(norm)
        trainer.update(BATCH)
    return norms


def run(flavor: str, contexts: list[mx.Context], kvstore: str = "device",
        update_on_kvstore: bool | None = None) -> tuple[dict[str, list[np.ndarray]], gluon.Trainer]:
    net = network(contexts)
    trainer = gluon.Trainer(net.collect_params(), "onelars", options(flavor), kvstore=kvstore,
                            update_on_kvstore=update_on_kvstore)
    train(net, trainer, contexts, range(STEPS))
    return {n: [d.asnumpy() for d in p.list_data()] for n, p in net.collect_params().items()}, trainer


@functools.cache
def single(flavor: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The single-context run on the whole batch: final params and trust ratios."""
    params, trainer = run(flavor, [mx.cpu(0)])
    return {n: d[0] for n, d in params.items()}, trainer.optimizer.trust_ratios()


@pytest.mark.parametrize("kvstore,update_on_kvstore", KVSTORES,
                         ids=[f"{k}-{'on' if u else 'off'}_kvstore" for k, u in KVSTORES])
@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_two_contexts_match_one_context_on_the_whole_batch(flavor: str, kvstore: str,
                                                           update_on_kvstore: bool) -> None:
    params, trainer = run(flavor, CONTEXTS, kvstore, update_on_kvstore)
    assert trainer._update_on_kvstore is update_on_kvstore and trainer._kvstore.type == kvstore
    expected, ratios = single(flavor)
    for name, copies in params.items():
        assert len(copies) == 2
        assert np.array_equal(copies[0], copies[1]), f"{name}: the contexts drifted apart"
        error = relative_error(copies[0], expected[name])
        assert error <= 1e-5, f"{name}: relative error {error:.3g}"
    got = trainer.optimizer.trust_ratios()
    assert got.keys() == ratios.keys()
    for name, r in got.items():
        assert abs(r - ratios[name]) <= 1e-5 * abs(ratios[name]), name
    assert any(r not in (0.0, 1.0) for r in got.values())
    # every context (or the kvstore) stepped every tensor STEPS times, not STEPS per context
    assert all(set(book.steps.values()) == {STEPS} for book in trainer.optimizer.books.values())
    if not update_on_kvstore:  # each context's state exports as a run of STEPS steps
        names = dict(enumerate(params))
        states = [export_state(u, names) for u in trainer._updaters]
        assert [s.step for s in states] == [STEPS, STEPS]
        for name in names.values():
            assert np.array_equal(states[0].momentum_buffers[name], states[1].momentum_buffers[name])


def test_the_comparison_sees_a_wrong_batch_size() -> None:
    """The check above can fail: `step` with each context's share of the batch (8 instead of
    16) doubles `rescale_grad`, and the result moves well past the tolerance."""
    net = network(CONTEXTS)
    trainer = gluon.Trainer(net.collect_params(), "onelars", options("paper"), kvstore="device")
    x, y = batches()
    loss_fn = gluon.loss.L2Loss()
    for t in range(STEPS):
        parts = zip(np.split(x[t], 2), np.split(y[t], 2), CONTEXTS, strict=True)
        with autograd.record():
            losses = [loss_fn(net(nd.array(xb, ctx=c)), nd.array(yb, ctx=c)) for xb, yb, c in parts]
        autograd.backward(losses)
        trainer.step(BATCH // 2)
    expected, _ = single("paper")
    got = {n: p.list_data()[0].asnumpy() for n, p in net.collect_params().items()}
    assert max(relative_error(got[n], expected[n]) for n in expected) > 1e-3


@pytest.mark.parametrize("update_on_kvstore", [False, True], ids=["off_kvstore", "on_kvstore"])
def test_save_and_load_states_resume_on_two_contexts(update_on_kvstore: bool, tmp_path: Path) -> None:
    """Trainer.save_states after 10 steps, a fresh network and trainer load them and go on: the
    20 steps equal the uninterrupted two-context run (the schedule and correction continue)."""
    expected, _ = run("mxnet", CONTEXTS, "device", update_on_kvstore)
    net = network(CONTEXTS)
    trainer = gluon.Trainer(net.collect_params(), "onelars", options("mxnet"), kvstore="device",
                            update_on_kvstore=update_on_kvstore)
    train(net, trainer, CONTEXTS, range(STEPS // 2))
    trainer.save_states(str(tmp_path / "trainer.states"))
    net.save_parameters(str(tmp_path / "net.params"))

    resumed = network(CONTEXTS)
    resumed.load_parameters(str(tmp_path / "net.params"), ctx=CONTEXTS)
    trainer = gluon.Trainer(resumed.collect_params(), "onelars", options("mxnet"), kvstore="device",
                            update_on_kvstore=update_on_kvstore)
    trainer.load_states(str(tmp_path / "trainer.states"))
    train(resumed, trainer, CONTEXTS, range(STEPS // 2, STEPS))
    for name, p in resumed.collect_params().items():
        for copy in p.list_data():
            error = relative_error(copy.asnumpy(), expected[name][0])
            assert error <= 1e-5, f"{name}: relative error {error:.3g}"


def test_export_and_import_state_resume_on_two_contexts(tmp_path: Path) -> None:
    """`export_state(trainer)` after 10 steps, `import_state(state, trainer)` into a fresh
    two-context Trainer: the 20 steps equal the uninterrupted run on both contexts (the schedule
    and the correction continue from the neutral state's step count and last learning rate)."""
    expected, _ = run("mxnet", CONTEXTS, "device", False)
    net = network(CONTEXTS)
    trainer = gluon.Trainer(net.collect_params(), "onelars", options("mxnet"), kvstore="device",
                            update_on_kvstore=False)
    train(net, trainer, CONTEXTS, range(STEPS // 2))
    state = export_state(trainer)
    assert state.step == STEPS // 2 and len(state.momentum_buffers) == 6
    net.save_parameters(str(tmp_path / "net.params"))

    resumed = network(CONTEXTS)
    resumed.load_parameters(str(tmp_path / "net.params"), ctx=CONTEXTS)
    trainer = gluon.Trainer(resumed.collect_params(), "onelars", options("mxnet"), kvstore="device",
                            update_on_kvstore=False)
    import_state(state, trainer)
    train(resumed, trainer, CONTEXTS, range(STEPS // 2, STEPS))
    for name, p in resumed.collect_params().items():
        for copy in p.list_data():
            error = relative_error(copy.asnumpy(), expected[name][0])
            assert error <= 1e-5, f"{name}: relative error {error:.3g}"


def test_global_norm_clipping_with_allreduce_grads_then_update() -> None:
    """OneLARS refuses grad_clip_norm (an update call sees a chunk of the step). The Gluon recipe:
    `allreduce_grads` (the kvstore sums the contexts' gradients), `clip_global_norm` on each
    context's copy of the summed gradients, `update`: every context clips by the same whole-batch
    norm and matches one context doing the same on the whole batch."""
    results = []
    for contexts in ([mx.cpu(0)], CONTEXTS):
        net = network(contexts)
        trainer = gluon.Trainer(net.collect_params(), "onelars", options("paper"), kvstore="device",
                                update_on_kvstore=False)
        norms = train(net, trainer, contexts, range(STEPS), clip=1.0)
        results.append(({n: [d.asnumpy() for d in p.list_data()] for n, p in net.collect_params().items()},
                        norms))
    (single_params, single_norms), (params, norms) = results
    assert min(norms) > 1.0  # every step clipped
    np.testing.assert_allclose(norms, single_norms, rtol=1e-5)
    for name, copies in params.items():
        assert np.array_equal(copies[0], copies[1]), name
        error = relative_error(copies[0], single_params[name][0])
        assert error <= 1e-5, f"{name}: relative error {error:.3g}"
