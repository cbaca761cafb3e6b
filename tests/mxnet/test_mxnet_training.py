"""OneLARS trains a Gluon network (Dense + BatchNorm) on scikit-learn's digits, by name and as an
instance, and `Trainer.save_states` / `load_states` resumes a run bit for bit."""

from __future__ import annotations

from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd
from sklearn.datasets import load_digits

from lars.backends.mxnet import OneLARS

OPTIONS = {"learning_rate": 1.0, "momentum": 0.9, "eta": 0.02, "wd": 1e-4}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = (x[order] / 16.0).astype(np.float32), y[order].astype(np.float32)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def network() -> gluon.nn.HybridSequential:
    mx.random.seed(0)
    net = gluon.nn.HybridSequential(prefix="digits_")  # the same names, so the same parameter order
    with net.name_scope():
        net.add(gluon.nn.Dense(64, in_units=64), gluon.nn.BatchNorm(in_channels=64),
                gluon.nn.Activation("relu"), gluon.nn.Dense(10, in_units=64))
    net.initialize(mx.init.Xavier())
    return net


def train(net: gluon.nn.HybridSequential, trainer: gluon.Trainer, x: np.ndarray, y: np.ndarray,
          epochs: int, batch: int = 100) -> None:
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            xb, yb = nd.array(x[i:i + batch]), nd.array(y[i:i + batch])
            with autograd.record():
                loss = loss_fn(net(xb), yb)
            loss.backward()
            trainer.step(len(xb))


def accuracy(net: gluon.nn.HybridSequential, x: np.ndarray, y: np.ndarray) -> float:
    return float((net(nd.array(x)).argmax(axis=1).asnumpy() == y).mean())


def test_trains_by_name(digits: tuple[np.ndarray, ...]) -> None:
    xtr, ytr, xte, yte = digits
    net = network()
    trainer = gluon.Trainer(net.collect_params(), "onelars", OPTIONS)
    assert isinstance(trainer.optimizer, OneLARS)
    train(net, trainer, xtr, ytr, epochs=5)
    assert accuracy(net, xte, yte) >= 0.9
    ratios = trainer.optimizer.trust_ratios()
    weights = [name for name in ratios if name.endswith("_weight")]
    assert len(weights) == 2 and all(np.isfinite(ratios[n]) and ratios[n] not in (0.0, 1.0) for n in weights)


def test_learning_rate_zero_does_not_learn(digits: tuple[np.ndarray, ...]) -> None:
    xtr, ytr, xte, yte = digits
    net = network()
    before = [p.data().asnumpy() for p in net.collect_params().values() if p.grad_req != "null"]
    trainer = gluon.Trainer(net.collect_params(), "onelars", OPTIONS | {"learning_rate": 0.0})
    train(net, trainer, xtr, ytr, epochs=1)
    after = [p.data().asnumpy() for p in net.collect_params().values() if p.grad_req != "null"]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert accuracy(net, xte, yte) < 0.5


def test_trains_as_an_instance(digits: tuple[np.ndarray, ...]) -> None:
    xtr, ytr, xte, yte = digits
    net = network()
    optimizer = OneLARS(flavor="paper", learning_rate=1.0, momentum=0.9, eta=0.02, wd=1e-4)
    trainer = gluon.Trainer(net.collect_params(), optimizer)
    assert trainer.optimizer is optimizer
    train(net, trainer, xtr, ytr, epochs=5)
    assert accuracy(net, xte, yte) >= 0.9


def test_save_and_load_states_resume_bit_for_bit(digits: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    xtr, ytr, _, _ = digits
    schedule = {"lr_scheduler": mx.lr_scheduler.FactorScheduler(step=5, factor=0.8, base_lr=1.0)}
    options = OPTIONS | {"flavor": "mxnet"}
    net = network()
    trainer = gluon.Trainer(net.collect_params(), "onelars", options | schedule)
    train(net, trainer, xtr[:600], ytr[:600], epochs=1)
    trainer.save_states(str(tmp_path / "trainer.states"))
    net.save_parameters(str(tmp_path / "net.params"))
    train(net, trainer, xtr[600:], ytr[600:], epochs=1)  # uninterrupted
    expected = {k: p.data().asnumpy() for k, p in net.collect_params().items()}

    resumed = network()
    resumed.load_parameters(str(tmp_path / "net.params"))
    fresh = {"lr_scheduler": mx.lr_scheduler.FactorScheduler(step=5, factor=0.8, base_lr=1.0)}
    trainer = gluon.Trainer(resumed.collect_params(), "onelars", options | fresh)
    trainer.load_states(str(tmp_path / "trainer.states"))
    assert trainer.optimizer.num_update == 6  # the schedule and the momentum correction continue
    train(resumed, trainer, xtr[600:], ytr[600:], epochs=1)
    got = [p.data().asnumpy() for p in resumed.collect_params().values()]
    for (name, want), have in zip(expected.items(), got, strict=True):
        assert np.array_equal(have, want), name

    restarted = network()  # without the states: not the same run, so the comparison can fail
    restarted.load_parameters(str(tmp_path / "net.params"))
    trainer = gluon.Trainer(restarted.collect_params(), "onelars", options | {
        "lr_scheduler": mx.lr_scheduler.FactorScheduler(step=5, factor=0.8, base_lr=1.0)})
    train(restarted, trainer, xtr[600:], ytr[600:], epochs=1)
    assert not np.array_equal(restarted[0].weight.data().asnumpy(), expected[net[0].weight.name])
