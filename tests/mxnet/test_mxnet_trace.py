"""`lars.backends.mxnet.record` (issue 19): a `gluon.Trainer`'s OneLARS steps recorded, a step's
tensors coming in several update calls (`aggregate_num`), checked against formulas computed here
from the weights before and after each step and the gradients of a linear model's L2 loss (NumPy,
float64), the scheduler's rate, the trust ratios OneLARS reports and the losses handed over; one
step in `every`; the file read back; training the same with or without it."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

from lars.backends.mxnet import OneLARS, export_state, record
from lars.core.trace import QUANTITIES, TraceError, load_trace

BATCH, STEPS, WD = 8, 6, 1e-2
#: In the Trainer's order (by name).
NAMES = ("net_dense0_bias", "net_dense0_weight", "net_dense1_bias", "net_dense1_weight")
RTOL = 2e-5  # float32 training, float64 formulas
ONE, TWO = (mx.cpu(0),), (mx.cpu(0), mx.cpu(1))


def network(contexts=ONE):
    net = gluon.nn.HybridSequential(prefix="net_")
    with net.name_scope():
        net.add(gluon.nn.Dense(3, in_units=4), gluon.nn.Dense(2, in_units=3))
    net.initialize(mx.init.Xavier(rnd_type="gaussian"), ctx=list(contexts))
    for p in net.collect_params().values():  # reproducible, the biases nonzero
        p.set_data(nd.array(np.random.default_rng(len(p.name)).standard_normal(p.shape)))
    return net


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((STEPS, BATCH, 4)), rng.standard_normal((STEPS, BATCH, 2))


def train(path=None, every=1, aggregate_num=2, watch=None, contexts=ONE, **kvstore):
    """STEPS steps of a Trainer over OneLARS (flavor mxnet: the biases get no weight decay and no
    ratio), two tensors per update call, the batch split over `contexts`; the losses handed to the
    recorder."""
    net = network(contexts)
    scheduler = mx.lr_scheduler.FactorScheduler(step=2, factor=0.5, base_lr=0.2)
    optimizer = OneLARS(flavor="mxnet", momentum=0.9, wd=WD, eta=0.02, lr_scheduler=scheduler,
                        aggregate_num=aggregate_num)
    trainer = gluon.Trainer(net.collect_params(), optimizer, **kvstore)
    recorder = None if path is None else record(trainer, path, every=every, flush=4)
    params = [net.collect_params()[n] for n in NAMES]
    x, y = data()
    for t in range(STEPS):
        before = [p.list_data()[0].asnumpy().astype(np.float64) for p in params]
        with autograd.record():
            losses = [gluon.loss.L2Loss()(net(nd.array(a, ctx=c)), nd.array(b, ctx=c)) for a, b, c in
                      zip(*(np.split(z[t], len(contexts)) for z in (x, y)), contexts, strict=True)]
        autograd.backward(losses)
        trainer.step(BATCH)
        loss = nd.concat(*[x.as_in_context(contexts[0]) for x in losses], dim=0)
        if recorder is not None:
            recorder.add_loss(t, loss.mean())
        if watch is not None:
            watch.append((before, [p.list_data()[0].asnumpy().astype(np.float64) for p in params],
                          trainer.optimizer.trust_ratios(), float(loss.mean().asscalar())))
    if recorder is not None:
        recorder.close()
    return [p.list_data()[0].asnumpy() for p in params]


def gradients(weights, x, y):
    """The gradients of the mean over the batch of L2Loss, `mean_j (x·W1ᵀ + b1)·W2ᵀ + b2 - y)² / 2`,
    in `NAMES`' order."""
    b1, w1, b2, w2 = weights
    h = x @ w1.T + b1
    d = (h @ w2.T + b2 - y) / y.size
    dh = d @ w2
    return [dh.sum(0), dh.T @ x, d.sum(0), d.T @ h]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    path, watch = tmp_path_factory.mktemp("trace") / "run.npz", []
    return train(path, watch=watch), watch, load_trace(path)


def test_the_trace_holds_the_formulas_of_each_step(traced):
    _, watch, trace = traced
    assert trace.names == NAMES and trace.shapes == ((3,), (3, 4), (2,), (2, 3)) and trace.dtype == "float32"
    assert trace.framework == "mxnet" and trace.hyperparams["flavor"] == "mxnet"
    np.testing.assert_array_equal(trace.step, range(STEPS))
    np.testing.assert_allclose(trace.lr, [0.2, 0.2, 0.1, 0.1, 0.05, 0.05])  # FactorScheduler, per step
    x, y = data()
    for t, (before, after, ratios, loss) in enumerate(watch):
        row = {q: trace.columns[q][t] for q in QUANTITIES}
        np.testing.assert_allclose(row["weight_norm"], [np.linalg.norm(w) for w in before], rtol=RTOL)
        grads = gradients(before, x[t], y[t])  # of the loss: what MXNet hands over times rescale_grad
        np.testing.assert_allclose(row["grad_norm"], [np.linalg.norm(g) for g in grads], rtol=RTOL)
        np.testing.assert_allclose(row["update_norm"], [np.linalg.norm(a - b) for a, b in
                                                        zip(after, before, strict=True)], rtol=1e-4)
        np.testing.assert_array_equal(row["trust_ratio"], [ratios[n] for n in NAMES])
        np.testing.assert_array_equal(row["adapted"], [0, 1, 0, 1])  # the biases are excluded
        np.testing.assert_allclose(row["weight_decay"], [0, WD, 0, WD], rtol=1e-6)
        assert trace.loss[t] == pytest.approx(loss, rel=1e-7)
    assert trace.columns["trust_ratio"][0, 1] != 1.0


@pytest.mark.parametrize("aggregate_num", [1, 4])
def test_one_update_call_per_tensor_or_for_all_gives_the_same_trace(traced, tmp_path, aggregate_num):
    _, _, trace = traced
    train(tmp_path / "t.npz", aggregate_num=aggregate_num)
    for q in QUANTITIES:
        np.testing.assert_allclose(load_trace(tmp_path / "t.npz").columns[q], trace.columns[q], rtol=1e-6)


def test_every_k_records_one_step_in_k_the_same_values(traced, tmp_path):
    _, _, full = traced
    train(tmp_path / "every.npz", every=4)
    trace = load_trace(tmp_path / "every.npz")
    np.testing.assert_array_equal(trace.step, [0, 4])
    np.testing.assert_array_equal(trace.lr, full.lr[[0, 4]])
    np.testing.assert_array_equal(trace.loss, full.loss[[0, 4]])
    for q in QUANTITIES:
        np.testing.assert_array_equal(trace.columns[q], full.columns[q][[0, 4]])


@pytest.mark.parametrize("update_on_kvstore", [False, True])
def test_two_contexts_record_what_one_does(traced, tmp_path, update_on_kvstore):
    """Each context's Updater calls OneLARS (or the kvstore's, once): one device's calls are taken."""
    _, _, trace = traced
    train(tmp_path / "two.npz", contexts=TWO, update_on_kvstore=update_on_kvstore)
    two = load_trace(tmp_path / "two.npz")
    np.testing.assert_array_equal(two.step, trace.step)
    for q in QUANTITIES:
        np.testing.assert_allclose(two.columns[q], trace.columns[q], rtol=1e-5)
    np.testing.assert_allclose(two.loss, trace.loss, rtol=1e-6)


def test_recording_leaves_training_bit_identical(traced):
    for a, b in zip(traced[0], train(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_step_cut_short_is_added_with_nan_for_the_tensors_that_did_not_come(tmp_path):
    net = network()
    params = [net.collect_params()[n] for n in NAMES]
    optimizer = OneLARS(flavor="paper", learning_rate=0.1, momentum=0.0, aggregate_num=1)
    trainer = gluon.Trainer(params, optimizer)
    with record(trainer, tmp_path / "cut.npz") as recorder:
        with autograd.record():
            loss = net(nd.ones((2, 4))).sum()
        loss.backward()
        trainer.step(2)
        optimizer.update([0, 1], [p.data() for p in params[:2]], [p.grad() for p in params[:2]], [None, None])
        assert [s for s, *_ in recorder.pending] == [0]  # step 1 waits for the rest
    trace = load_trace(tmp_path / "cut.npz")
    np.testing.assert_array_equal(trace.step, [0, 1])
    np.testing.assert_array_equal(np.isnan(trace.columns["grad_norm"][1]), [False, False, True, True])


def test_the_trainer_saves_its_states_while_recording_and_the_loaded_optimizer_does_not_record(tmp_path):
    net = network()
    trainer = gluon.Trainer(net.collect_params(), OneLARS(0.1, "paper", momentum=0.9))
    with record(trainer, tmp_path / "t.npz"):
        with autograd.record():
            loss = net(nd.ones((2, 4))).sum()
        loss.backward()
        trainer.step(2)
        trainer.save_states(str(tmp_path / "run.states"))
    trainer.load_states(str(tmp_path / "run.states"))
    assert trainer.optimizer.tracing is None and export_state(trainer).step == 1


def test_bad_arguments_are_refused(tmp_path):
    net = network()
    with pytest.raises(TraceError, match="every=0 is invalid"):
        record(gluon.Trainer(net.collect_params(), OneLARS(0.1, "paper")), tmp_path / "t", every=0)
    with pytest.raises(TypeError, match="record\\(\\) records lars's OneLARS, not SGD"):
        record(gluon.Trainer(net.collect_params(), "sgd"), tmp_path / "t")
