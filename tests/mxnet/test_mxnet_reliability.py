"""Bad input to `OneLARS` is refused with a `lars.LarsError` that names the tensor or field, the value
and what is allowed, before anything changes: an update call, an import or a load happens
completely or not at all (weights, buffers, MXNet's update counts, the books and the learning rate
byte-identical after a refusal). MXNet's unit is one update call: `aggregate_num` tensors of a dtype
(with 1, every tensor is its own call, and the calls before a bad one have gone through)."""

from __future__ import annotations

import copy
import json
import math

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

import lars
from lars.backends.mxnet import OneLARS, export_state, import_state, load

SHAPES = [(4, 3), (5,), (2,)]


LAST_LR = r"last_lr=.* is invalid: expected None or a finite number >= 0"


def updater_of(aggregate_num=4, flavor="paper", **kwargs):
    optimizer = OneLARS(0.1, flavor, momentum=0.9, wd=1e-3, aggregate_num=aggregate_num, **kwargs)
    updater = mx.optimizer.get_updater(optimizer)
    weights = [nd.array(np.linspace(0.5, 1.5, math.prod(s)).reshape(s)) for s in SHAPES]
    for scale in (1.0, 2.0):  # buffers, counts and books that are not their initial values
        updater(list(range(len(SHAPES))), [nd.full(s, 0.1 * scale) for s in SHAPES], weights)
    return optimizer, updater, weights


def snapshot(optimizer, updater, weights):
    """Every number an update call, an import or a load may change."""
    states = {i: (s.asnumpy().tobytes() if s is not None else None) for i, s in updater.states.items()}
    return ([w.asnumpy().tobytes() for w in weights], states, optimizer.num_update,
            copy.deepcopy(optimizer._all_index_update_counts), copy.deepcopy(optimizer.books),
            dict(optimizer.ratios), optimizer.learning_rate, optimizer.hyperparameters)


@pytest.mark.parametrize("aggregate_num", [4, 1], ids=["aggregated", "per-tensor"])
@pytest.mark.parametrize("flavor", ["paper", "timm", "holocron"])
@pytest.mark.parametrize("bad", [dict(shape=(3,)), dict(dtype="float64"), dict(dtype="int32"),
                                 dict(dtype="float16")], ids=str)
def test_a_bad_gradient_for_the_last_tensor_changes_nothing(bad, flavor, aggregate_num):
    """Row 22 and the transaction: the update call holding the bad gradient neither steps the
    tensors before it nor counts an update."""
    optimizer, updater, weights = updater_of(aggregate_num, flavor)
    last = nd.full(bad.get("shape", SHAPES[-1]), 0.1, dtype=bad.get("dtype", "float32"))
    grads = [*[nd.full(s, 0.3) for s in SHAPES[:-1]], last]
    if aggregate_num == 1:  # the calls of the tensors before it are their own
        updater(list(range(len(SHAPES) - 1)), grads[:-1], weights[:-1])
    before = snapshot(optimizer, updater, weights)
    floating = "shape" in bad or bad["dtype"].startswith("float")  # another float: it does not fit
    with pytest.raises(lars.ShapeError if floating else lars.DtypeError) as caught:
        updater(list(range(len(SHAPES))) if aggregate_num > 1 else [2], grads if aggregate_num > 1 else
                grads[-1:], weights if aggregate_num > 1 else weights[-1:])
    message = str(caught.value)
    assert "parameter 2" in message or "'2'" in message
    if "shape" in bad:
        assert "shape (3,)" in message and "shape (2,)" in message
    else:
        assert f"dtype {bad['dtype']}" in message
    assert snapshot(optimizer, updater, weights) == before


@pytest.mark.parametrize("dtype", ["int32", "int8", "uint8"])
def test_a_parameter_that_is_not_floating_point_is_refused(dtype):
    """Row 20 (MXNet has no complex arrays): one message naming the parameter and its dtype."""
    optimizer = OneLARS(0.1, "paper", momentum=0.9, param_idx2name={0: "dense0_weight"})
    updater = mx.optimizer.get_updater(optimizer)
    weight = nd.ones((3,), dtype=dtype)
    message = rf"parameter 'dense0_weight' has dtype {dtype}: .*floating-point"
    with pytest.raises(lars.DtypeError, match=message):
        updater([0], [nd.ones((3,), dtype=dtype)], [weight])
    assert weight.asnumpy().tolist() == [1, 1, 1] and optimizer.num_update == 0 and not optimizer.books


def trainer_of(optimizer):
    net = gluon.nn.Dense(2, in_units=3, prefix="dense_")
    net.initialize(mx.init.Constant(0.5))
    return net, gluon.Trainer(net.collect_params(), optimizer)


def step(net, trainer):
    with autograd.record():
        loss = (net(nd.ones((4, 3))) ** 2).sum()
    loss.backward()
    trainer.step(4)


def trainer_snapshot(net, trainer):
    state = export_state(trainer)
    return ([p.data().asnumpy().tobytes() for p in net.collect_params().values()], state.step, state.last_lr,
            {n: b.tobytes() for n, b in state.momentum_buffers.items()}, trainer.optimizer.num_update,
            trainer.learning_rate)


@pytest.mark.parametrize("bad", [-100.0, math.nan, math.inf, "0.1"])
def test_trainer_set_learning_rate_is_validated(bad):
    """Row 23: Gluon's Trainer sets the rate through OneLARS.set_learning_rate."""
    net, trainer = trainer_of(OneLARS(0.1, "paper", momentum=0.9))
    step(net, trainer)
    before = trainer_snapshot(net, trainer)
    with pytest.raises(lars.HyperparameterError, match=r"^lr="):
        trainer.set_learning_rate(bad)
    assert trainer_snapshot(net, trainer) == before and trainer.optimizer.hyperparameters.lr == 0.1


class Falling(mx.lr_scheduler.LRScheduler):
    """A scheduler that goes below zero at its second update."""

    def __call__(self, num_update):
        return 0.1 - 0.15 * (num_update - 1)


def test_a_refused_scheduler_rate_does_not_count_an_update():
    """Row 23's scheduler part: MXNet counts the update before the scheduler is asked; the count is
    taken back when the rate is refused, so the next call asks for the same update's rate."""
    net, trainer = trainer_of(OneLARS(flavor="paper", momentum=0.9, lr_scheduler=Falling(base_lr=0.1)))
    step(net, trainer)
    before = trainer_snapshot(net, trainer)
    counts = copy.deepcopy(trainer.optimizer._all_index_update_counts)
    for _ in range(2):
        with pytest.raises(lars.HyperparameterError, match=r"lr=-0\.049"):
            step(net, trainer)
    assert trainer_snapshot(net, trainer) == before
    assert trainer.optimizer._all_index_update_counts == counts


def test_import_state_refuses_what_is_not_a_state():
    net, trainer = trainer_of(OneLARS(0.1, "paper", momentum=0.9))
    step(net, trainer)
    before = trainer_snapshot(net, trainer)
    with pytest.raises(lars.StateError, match=r"state=None is invalid: expected a lars\.State"):
        import_state(None, trainer)
    assert trainer_snapshot(net, trainer) == before


@pytest.mark.parametrize("last_lr", [math.nan, math.inf, -0.1, "0.1"])
def test_import_state_refuses_a_last_lr_that_is_not_a_rate(last_lr):
    net, trainer = trainer_of(OneLARS(0.1, "mxnet", momentum=0.9))
    step(net, trainer)
    before, state = trainer_snapshot(net, trainer), export_state(trainer)
    with pytest.raises(lars.StateError, match=LAST_LR):
        import_state(lars.State(state.step, last_lr, state.momentum_buffers), trainer)
    assert trainer_snapshot(net, trainer) == before


def test_import_and_load_of_a_string_buffer_change_nothing(tmp_path):
    net, trainer = trainer_of(OneLARS(0.1, "paper", momentum=0.9))
    step(net, trainer)
    before, state = trainer_snapshot(net, trainer), export_state(trainer)
    bad = lars.State(5, 0.3, {"dense_weight": state.momentum_buffers["dense_weight"],
                              "dense_bias": np.array(["a", "b"])})
    with pytest.raises(lars.StateError, match=r"'dense_bias' has dtype <U1: expected a floating-point"):
        import_state(bad, trainer)
    assert trainer_snapshot(net, trainer) == before
    hyperparams = trainer.optimizer.hyperparameters.to_dict()
    save_with_a_string_buffer(tmp_path / "bad.npz", state, hyperparams, "dense_bias")
    with pytest.raises(lars.StateError, match="dense_bias"):
        load(tmp_path / "bad.npz", trainer)
    assert trainer_snapshot(net, trainer) == before


def save_with_a_string_buffer(path, state, hyperparams, name):
    """A state file whose buffer `name` holds strings (`save_state` refuses to write one)."""
    lars.save_state(path, state, hyperparams)
    with np.load(path) as archive:
        arrays = dict(archive)
    header = json.loads(bytes(arrays["header"]).decode())
    for i, entry in enumerate(header["buffers"]):
        if entry["name"] == name:
            arrays[f"buffer_{i}"] = np.full(entry["shape"], "a")
            entry["dtype"] = "<U1"
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)
