"""The private MXNet APIs `lars.backends.mxnet._compat` relies on still behave as on mxnet 1.9.1:
each test fails loudly if MXNet renames one, stops calling it, or changes what it holds."""

from __future__ import annotations

import mxnet as mx
import pytest
from mxnet import autograd, gluon, nd

from lars.backends.mxnet import OneLARS, _compat


def test_an_updater_keeps_the_update_counts_per_device() -> None:
    """`Updater.__call__` swaps in the weights' device's counts (`_set_current_context`) before
    `_update_count` advances `_index_update_count` and `num_update`; `count` says when a
    device's step begins; OneLARS keeps its books by the same device ids."""
    optimizer = OneLARS(flavor="paper", learning_rate=0.1, momentum=0.9)
    updater = mx.optimizer.get_updater(optimizer)
    begins = []
    real = optimizer.count
    optimizer.count = lambda indices: begins.append(real(indices)) or begins[-1]  # type: ignore[method-assign]
    for ctx, indices in ((mx.cpu(1), [0, 1]), (mx.cpu(1), [2]), (mx.cpu(0), [0]), (mx.cpu(1), [0])):
        updater(indices, [nd.ones((3,), ctx=ctx)] * len(indices), [nd.ones((3,), ctx=ctx) for _ in indices])
    assert begins == [True, False, True, True]
    assert optimizer._all_index_update_counts == {0: {0: 1}, 1: {0: 2, 1: 1, 2: 1}}
    assert optimizer._index_update_count is optimizer._all_index_update_counts[1]
    assert optimizer.num_update == 2
    assert optimizer.books[0].steps == {0: 1} and optimizer.books[1].steps == {0: 2, 1: 1, 2: 1}


def test_counts_are_set_in_place() -> None:
    optimizer = OneLARS(flavor="paper", learning_rate=0.1)
    current = optimizer._index_update_count
    optimizer.set_counts(2, 4, [1])
    optimizer.set_counts(0, 7, [0, 3])
    assert optimizer._index_update_count is current and current == {0: 7, 3: 7}
    assert optimizer._all_index_update_counts[2] == {1: 4} and optimizer.num_update == 7
    assert optimizer.count([0]) is True and optimizer.num_update == 8


def test_counts_are_taken_back_in_place() -> None:
    """`restore_counts` undoes `count` on the current device's dict, the one MXNet keeps."""
    optimizer = OneLARS(flavor="paper", learning_rate=0.1)
    optimizer.set_counts(0, 3, [0, 1])
    current, before = optimizer._index_update_count, optimizer.counts()
    optimizer.count([0, 1, 2])
    assert optimizer.num_update == 4 and current == {0: 4, 1: 4, 2: 1}  # 2 counts from begin_num_update
    optimizer.restore_counts(before)
    assert optimizer._index_update_count is current is optimizer._all_index_update_counts[0]
    assert current == {0: 3, 1: 3} and optimizer.num_update == 3


def test_lrs_and_wds_apply_the_scheduler_and_multipliers() -> None:
    """`_get_lrs`/`_get_wds`: the scheduler at `num_update`, Gluon's `lr_mult` and `wd_mult`."""
    params = {0: gluon.Parameter("a_weight", shape=(2,), lr_mult=0.5, wd_mult=2.0),
              1: gluon.Parameter("b_bias", shape=(2,))}
    scheduler = mx.lr_scheduler.FactorScheduler(step=1, factor=0.5, base_lr=1.0)
    optimizer = OneLARS(flavor="paper", lr_scheduler=scheduler, wd=0.1, param_dict=params)
    optimizer.count([0, 1])
    optimizer.count([0, 1])
    assert optimizer.lrs_and_wds([0, 1]) == ([0.25, 0.5], [pytest.approx(0.2), pytest.approx(0.1)])


def test_an_updater_holds_its_optimizer_and_states_by_index() -> None:
    optimizer = OneLARS(flavor="paper", learning_rate=0.1, momentum=0.9)
    updater = mx.optimizer.get_updater(optimizer)
    updater([3], [nd.ones((2,))], [nd.ones((2,))])
    held, states = _compat.held(updater)
    assert held is optimizer and list(states) == [3] and updater.states_synced == {3: True}
    fresh = {3: nd.zeros((2,))}
    _compat.set_states(updater, fresh)
    assert updater.states is fresh and updater.states_synced == {3: True}


def step(net: gluon.nn.Dense, trainer: gluon.Trainer) -> None:
    with autograd.record():
        losses = [net(nd.ones((1, 3), ctx=c)).sum() for c in (mx.cpu(0), mx.cpu(1))]
    autograd.backward(losses)
    trainer.step(1)


def test_a_trainer_has_one_updater_per_context_over_its_parameters_in_order() -> None:
    net = gluon.nn.Dense(2, in_units=3, prefix="d_")
    net.initialize(ctx=[mx.cpu(0), mx.cpu(1)])
    trainer = gluon.Trainer(net.collect_params(), "onelars", {"learning_rate": 0.1, "momentum": 0.9},
                            update_on_kvstore=False)
    step(net, trainer)
    found = _compat.updaters(trainer)
    assert [names for _, names, _ in found] == [{0: "d_bias", 1: "d_weight"}] * 2  # sorted by name
    assert [{w.context for w in weights.values()} for _, _, weights in found] == [{mx.cpu(0)}, {mx.cpu(1)}]
    assert all(_compat.held(u)[0] is trainer.optimizer and set(_compat.held(u)[1]) == {0, 1}
               for u, _, _ in found)
    on_kvstore = gluon.Trainer(net.collect_params(), "onelars", {"learning_rate": 0.1},
                               update_on_kvstore=True)
    step(net, on_kvstore)
    with pytest.raises(ValueError, match="kvstore"):
        _compat.updaters(on_kvstore)
