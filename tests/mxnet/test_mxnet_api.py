"""MXNet's own ways to set the learning rate go through the core's validation: `set_learning_rate`
(and `set_lr`, every adapter's name) and a scheduler's rates, refused before anything changes."""

from __future__ import annotations

import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

import lars
from lars.backends.mxnet import OneLARS, clear_state, export_state


def trainer_of(optimizer):
    net = gluon.nn.Dense(2, in_units=3, prefix="dense_")
    net.initialize(mx.init.Constant(0.5))
    return net, gluon.Trainer(net.collect_params(), optimizer)


def step(net, trainer):
    with autograd.record():
        loss = (net(nd.ones((4, 3))) ** 2).sum()
    loss.backward()
    trainer.step(4)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "0.1"])
def test_set_learning_rate_is_validated_like_every_hyperparameter(bad):
    optimizer = OneLARS(0.1, "paper")
    for setter in (optimizer.set_learning_rate, optimizer.set_lr):
        with pytest.raises(lars.HyperparameterError, match=r"^lr="):
            setter(bad)
    assert optimizer.learning_rate == 0.1 and optimizer.hyperparameters.lr == 0.1
    optimizer.set_lr(0.05)
    assert optimizer.learning_rate == 0.05 and optimizer.hyperparameters.lr == 0.05


class Falling(mx.lr_scheduler.LRScheduler):
    """A scheduler that goes below zero at its second update."""

    def __call__(self, num_update):
        return 0.1 - 0.15 * (num_update - 1)


def test_a_scheduler_rate_that_is_not_allowed_fails_the_step_before_any_change():
    net, trainer = trainer_of(OneLARS(flavor="paper", momentum=0.9, lr_scheduler=Falling(base_lr=0.1)))
    step(net, trainer)
    weights, state = net.weight.data().asnumpy(), export_state(trainer)
    with pytest.raises(lars.HyperparameterError, match=r"lr=-0\.049"):
        step(net, trainer)
    assert np.array_equal(net.weight.data().asnumpy(), weights)
    after = export_state(trainer)
    assert after.step == state.step and all(np.array_equal(after.momentum_buffers[n], b)
                                            for n, b in state.momentum_buffers.items())


def test_clear_state_makes_the_next_step_a_first_step():
    net, trainer = trainer_of(OneLARS(0.1, "paper", momentum=0.9))
    step(net, trainer)
    clear_state(trainer)
    assert export_state(trainer).step == 0 and not export_state(trainer).momentum_buffers
    fresh_net, fresh = trainer_of(OneLARS(0.1, "paper", momentum=0.9))
    fresh_net.weight.set_data(net.weight.data())
    fresh_net.bias.set_data(net.bias.data())
    step(net, trainer)
    step(fresh_net, fresh)
    assert np.array_equal(net.weight.data().asnumpy(), fresh_net.weight.data().asnumpy())
