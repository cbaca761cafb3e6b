"""`lars.compat.mxnet.LARS`, the drop-in for `mxnet.optimizer.LARS` (1.9.1), against the
installed one built with the very same arguments: 120 steps side by side through MXNet's
`Updater` (as Module and Gluon drive an optimizer) from the same weights with the same
gradients, compared at the end of every step, in float32 only (MXNet's kernels take lr, wd and
momentum as C++ floats), to 1e-5; and under Gluon's Trainer, which gives MXNet's LARS no names.
"""

from __future__ import annotations

import inspect
from typing import Any

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd
from mxnet_helpers import NAMES, TOLERANCE, gradients, max_error, tensors

from lars import HyperparameterError
from lars.backends.mxnet import OneLARS, export_state
from lars.compat.mxnet import LARS, REGISTERED_AS

STEPS = 120
INIT = tensors(0)
GRADS = gradients(STEPS)
FP32 = TOLERANCE[np.dtype(np.float32)]
IDX2NAME = dict(enumerate(NAMES))


def factor_schedule(**kwargs: Any) -> mx.lr_scheduler.FactorScheduler:
    """The learning rate changes every 7 updates: the momentum correction is at work."""
    return mx.lr_scheduler.FactorScheduler(step=7, factor=0.7, **({"base_lr": 0.5} | kwargs))


def symbol() -> mx.sym.Symbol:
    """A symbol whose attributes set lr_mult and wd_mult (bn0_gamma gets weight decay back)."""
    attrs = {"conv0_weight": dict(lr_mult=2.0), "bn0_gamma": dict(wd_mult=0.5),
             "dense0_weight": dict(wd_mult=3.0)}
    return mx.sym.Group([mx.sym.var(n, **attrs.get(n, {})) for n in NAMES])


#: Arguments (made afresh for each optimizer: a scheduler and a symbol are per optimizer) given
#: as they are to both.
CASES = {
    "learning-rate-only": lambda: dict(learning_rate=0.5, param_idx2name=IDX2NAME),
    "all-numbers-scheduled": lambda: dict(
        momentum=0.9, eta=2e-3, eps=1e-4, wd=1e-3, rescale_grad=0.5, clip_gradient=0.7,
        lr_scheduler=factor_schedule(), param_idx2name=IDX2NAME),
    "no-momentum-correction": lambda: dict(momentum=0.9, momentum_correction=False, wd=1e-3,
                                           lr_scheduler=factor_schedule(), param_idx2name=IDX2NAME),
    "clip-gradient-zero-is-off": lambda: dict(learning_rate=0.5, momentum=0.8, clip_gradient=0,
                                              rescale_grad=2.0, param_idx2name=IDX2NAME),
    "symbol-multipliers-begin-num-update": lambda: dict(
        momentum=0.9, wd=1e-3, lr_scheduler=factor_schedule(), sym=symbol(), begin_num_update=5,
        param_idx2name=IDX2NAME),
    "learning-rate-overrides-scheduler": lambda: dict(
        learning_rate=0.3, momentum=0.9, wd=1e-3, lr_scheduler=factor_schedule(), lazy_update=False,
        param_idx2name=IDX2NAME),
    "no-names": lambda: dict(momentum=0.9, wd=1e-3, learning_rate=0.5),
}


def run(optimizer: mx.optimizer.Optimizer, after_creation: Any = None) -> list[list[np.ndarray]]:
    """The weights after every step, through `mx.optimizer.get_updater`."""
    if after_creation is not None:
        after_creation(optimizer)
    updater = mx.optimizer.get_updater(optimizer)
    weights = [nd.array(w, dtype=w.dtype) for w in INIT]
    trajectory = []
    for step in GRADS:
        updater(list(range(len(weights))), [nd.array(g, dtype=g.dtype) for g in step], weights)
        trajectory.append([w.asnumpy() for w in weights])
    return trajectory


def worst(ours: list[list[np.ndarray]], theirs: list[list[np.ndarray]]) -> float:
    return max(max_error(a, b) for a, b in zip(ours, theirs, strict=True))


def test_the_signature_is_mxnets():
    ours = list(inspect.signature(LARS.__init__).parameters.values())
    theirs = list(inspect.signature(mx.optimizer.LARS.__init__).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours] == [(p.name, p.kind, p.default) for p in theirs]


def test_registered_under_its_own_name_leaving_mxnets_lars():
    assert type(mx.optimizer.create(REGISTERED_AS, param_idx2name=IDX2NAME)) is LARS
    assert type(mx.optimizer.create("lars")) is mx.optimizer.LARS


@pytest.mark.parametrize("case", list(CASES))
def test_the_drop_in_matches_mxnet_lars_at_every_step(case):
    ours = LARS(**CASES[case]())
    assert isinstance(ours, OneLARS) and ours.hyperparameters.flavor == "mxnet"
    expected = run(mx.optimizer.LARS(**CASES[case]()))
    assert worst(run(ours), expected) <= FP32
    moved = max(float(np.abs(a - b).max()) for a, b in zip(expected[-1], INIT, strict=True))
    assert moved > 0.1  # the run really trains


def test_multipliers_set_after_creation_match(monkeypatch):
    """set_lr_mult / set_wd_mult as a user calls them (bn0_beta gets weight decay back), and a
    chunk size of 3 from MXNET_OPTIMIZER_AGGREGATION_SIZE: the correction reaches 3 tensors."""
    monkeypatch.setenv("MXNET_OPTIMIZER_AGGREGATION_SIZE", "3")

    def multipliers(optimizer: mx.optimizer.Optimizer) -> None:
        optimizer.set_lr_mult({"dense0_weight": 0.5})
        optimizer.set_wd_mult({"bn0_beta": 2.0})

    options = CASES["all-numbers-scheduled"]
    expected = run(mx.optimizer.LARS(**options()), multipliers)
    assert worst(run(LARS(**options()), multipliers), expected) <= FP32
    monkeypatch.setenv("MXNET_OPTIMIZER_AGGREGATION_SIZE", "4")
    assert worst(run(LARS(**options()), multipliers), expected) > 100 * FP32  # 4 tensors corrected: caught


def test_wrong_mappings_are_caught():
    """The comparison can fail: without the symbol's multipliers, without begin_num_update,
    with the clipping left on, or with the `mxnet` flavor's name rules where MXNet's LARS has no
    names, the runs end measurably elsewhere."""
    sym_case = CASES["symbol-multipliers-begin-num-update"]
    expected = run(mx.optimizer.LARS(**sym_case()))
    assert worst(run(LARS(**(sym_case() | {"sym": None}))), expected) > 100 * FP32
    assert worst(run(LARS(**(sym_case() | {"begin_num_update": 0}))), expected) > 100 * FP32
    unnamed = run(mx.optimizer.LARS(**CASES["no-names"]()))
    named = OneLARS(flavor="mxnet", **CASES["no-names"](), param_idx2name=IDX2NAME)
    assert worst(run(named), unnamed) > 100 * FP32
    clipped = CASES["clip-gradient-zero-is-off"]() | {"clip_gradient": 0.05}
    assert worst(run(LARS(**clipped)), run(mx.optimizer.LARS(**CASES["clip-gradient-zero-is-off"]()))) > 1e-3


def gluon_run(optimizer: str, options: dict[str, Any], steps: int = 15) -> list[np.ndarray]:
    """A Gluon net trained by `gluon.Trainer(params, optimizer, options)`: the Trainer passes
    `param_dict`, not names, to the optimizer."""
    mx.random.seed(0)
    net = gluon.nn.HybridSequential(prefix="net_")
    with net.name_scope():
        net.add(gluon.nn.Dense(8, in_units=6), gluon.nn.Activation("relu"), gluon.nn.Dense(3, in_units=8))
    net.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), optimizer, options)
    rng = np.random.default_rng(5)
    for _ in range(steps):
        x = nd.array(rng.standard_normal((16, 6)).astype(np.float32))
        with autograd.record():
            loss = ((net(x) - 1.0) ** 2).mean()
        loss.backward()
        trainer.step(16)
    return [p.data().asnumpy() for p in net.collect_params().values()]


def test_under_gluons_trainer_by_its_registered_name():
    """MXNet's LARS under Gluon has no names: biases are decayed and adapted. The drop-in does
    the same; the `mxnet` flavor's name rules (on Gluon's names) would not."""

    def options() -> dict[str, Any]:
        return dict(momentum=0.9, wd=1e-2, lr_scheduler=mx.lr_scheduler.FactorScheduler(4, 0.5, 0.5))

    expected = gluon_run("lars", options())
    got = gluon_run(REGISTERED_AS, options())
    assert max_error(got, expected) <= FP32
    assert max_error(gluon_run("onelars", options() | {"flavor": "mxnet"}), expected) > 1e-3


@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(eta=0.0), "eta"),
    (dict(wd=-1e-3), "wd"),
    (dict(momentum=1.0), "momentum"),
    (dict(eps=-1.0), "eps"),
    (dict(rescale_grad=0.0), "rescale_grad"),
    (dict(learning_rate=-0.1), "learning_rate"),
    (dict(lazy_update="yes"), "lazy_update"),
])
def test_what_ours_cannot_take_raises_naming_the_argument(kwargs, field):
    with pytest.raises(HyperparameterError) as error:
        LARS(**kwargs)
    assert error.value.field == field


def test_an_unknown_keyword_is_a_type_error_in_both():
    with pytest.raises(TypeError):
        mx.optimizer.LARS(lars_eta=1e-3)
    with pytest.raises(TypeError):
        LARS(lars_eta=1e-3)


def test_our_tools_work_on_the_drop_in():
    optimizer = LARS(momentum=0.9, learning_rate=0.5, param_idx2name=IDX2NAME)
    updater = mx.optimizer.get_updater(optimizer)
    weights = [nd.array(w) for w in INIT]
    updater(list(range(len(NAMES))), [nd.array(g) for g in GRADS[0]], weights)
    state = export_state(updater, IDX2NAME)
    assert state.step == 1 and set(state.momentum_buffers) == set(NAMES)
    assert {n for n, r in optimizer.trust_ratios().items() if r == 1.0} == {
        "bn0_gamma", "bn0_beta", "conv1_bias", "dense0_bias"}
