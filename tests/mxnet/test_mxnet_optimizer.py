"""OneLARS against the core's NumPy reference (`lars.core.reference.step`): flavors, dtypes and
both paths; Gluon's multipliers; validation; float16; telemetry, exported and loaded state."""

from __future__ import annotations

import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd
from mxnet_helpers import NAMES, SHAPES, TOLERANCE, assert_close, gradients, relative_error, tensors

import lars
from lars.backends.mxnet import OneLARS, export_state, import_state
from lars.backends.mxnet.kernels import HostOps, Lazy
from lars.core import State, reference
from lars.core.policy import plan
from lars.core.rule import Rule

STEPS = 20
#: flavor -> its arguments here (timm: wd so that it adapts, and dampening).
FLAVORS = {
    "paper": dict(learning_rate=0.3, momentum=0.9, wd=1e-3),
    "timm": dict(learning_rate=0.3, momentum=0.9, dampening=0.1, wd=1e-3),
    "holocron": dict(learning_rate=0.05, momentum=0.9, wd=1e-3),
    "pytorch_optimizer": dict(learning_rate=0.3, momentum=0.9, wd=1e-3),
    "larc": dict(learning_rate=0.3, momentum=0.9, wd=1e-3),
}
CORE = {"learning_rate": "lr", "wd": "weight_decay"}


def core_hp(flavor: str, options: dict[str, float]) -> lars.Hyperparams:
    return lars.hyperparams(flavor, **{CORE.get(k, k): v for k, v in options.items()})


def reference_run(hp: lars.Hyperparams, init: list[np.ndarray], grads: list[list[np.ndarray]],
                  names: list[str] = NAMES) -> tuple[list[np.ndarray], lars.core.StepResult]:
    params, state = dict(zip(names, init, strict=True)), State()
    result = None
    for step in grads:
        result = reference.step(params, dict(zip(names, step, strict=True)), state, hp)
        params, state = result.params, result.state
    assert result is not None
    return [params[n] for n in names], result


def our_run(optimizer: OneLARS, init: list[np.ndarray], grads: list[list[np.ndarray]]
            ) -> tuple[list[np.ndarray], mx.optimizer.Updater]:
    updater = mx.optimizer.get_updater(optimizer)
    weights = [nd.array(w, dtype=w.dtype) for w in init]
    for step in grads:
        updater(list(range(len(weights))), [nd.array(g, dtype=g.dtype) for g in step], weights)
    return [w.asnumpy() for w in weights], updater


@pytest.mark.parametrize("aggregate_num", [4, 1], ids=["aggregated", "per-tensor"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_matches_the_reference(flavor: str, dtype: type, aggregate_num: int) -> None:
    options = FLAVORS[flavor]
    init, grads = tensors(0, dtype), gradients(STEPS, dtype)
    expected, last = reference_run(core_hp(flavor, options), init, grads)
    optimizer = OneLARS(flavor=flavor, aggregate_num=aggregate_num, param_idx2name=dict(enumerate(NAMES)),
                        **options)
    got, updater = our_run(optimizer, init, grads)
    assert all(w.dtype == dtype for w in got)
    assert_close(got, expected)
    # telemetry: the ratios of the last step, by name
    ratios = optimizer.trust_ratios()
    tol = TOLERANCE[np.dtype(dtype)]
    for name, r in last.trust_ratios.items():
        assert abs(ratios[name] - r) <= tol * max(abs(r), 1.0), name
    # the neutral state: positive buffers, step count, last learning rate
    state = export_state(updater, dict(enumerate(NAMES)))
    assert (state.step, state.last_lr) == (STEPS, pytest.approx(options["learning_rate"]))
    assert sorted(state.momentum_buffers) == sorted(last.state.momentum_buffers)
    assert_close([state.momentum_buffers[n] for n in NAMES], [last.state.momentum_buffers[n] for n in NAMES])


def test_flavors_are_not_interchangeable() -> None:
    """The comparison above can fail: another flavor's rule misses the reference."""
    init, grads = tensors(0, np.float64), gradients(5, np.float64)
    expected, _ = reference_run(core_hp("paper", FLAVORS["paper"]), init, grads)
    got, _ = our_run(OneLARS(flavor="pytorch_optimizer", **FLAVORS["paper"]), init, grads)
    assert max(relative_error(a, b) for a, b in zip(got, expected, strict=True)) > 1e-3


def test_gluon_wd_mult_is_respected() -> None:
    """`Parameter.wd_mult` scales the tensor's weight decay, as in every MXNet optimizer."""
    mults = [1.0, 0.0, 0.5, 2.0, 1.0, 0.0, 0.5, 1.0]
    params = {i: gluon.Parameter(f"p{i}", shape=s, wd_mult=m)
              for i, (s, m) in enumerate(zip(SHAPES, mults, strict=True))}
    init, grads = tensors(0, np.float64), gradients(STEPS, np.float64)
    got, _ = our_run(OneLARS(flavor="paper", param_dict=params, **FLAVORS["paper"]), init, grads)
    for i, mult in enumerate(mults):  # paper: each tensor's step depends on its own data only
        options = FLAVORS["paper"] | {"wd": 1e-3 * mult}
        expected, _ = reference_run(core_hp("paper", options), [init[i]], [[g[i]] for g in grads], [f"p{i}"])
        assert relative_error(got[i], expected[0]) <= 1e-12, i
    plain, _ = our_run(OneLARS(flavor="paper", **FLAVORS["paper"]), init, grads)
    assert relative_error(got[1], plain[1]) > 1e-6  # wd_mult=0 made a difference


@pytest.mark.parametrize(("arguments", "core"), [
    ({"momentum": 1.0}, {"momentum": 1.0}),
    ({"learning_rate": -0.1}, {"lr": -0.1}),
    ({"eta": 0.0}, {"trust_coefficient": 0.0}),
    ({"wd": float("nan")}, {"weight_decay": float("nan")}),
])
def test_invalid_hyperparameters_raise_the_core_error(arguments: dict[str, float],
                                                      core: dict[str, float]) -> None:
    with pytest.raises(lars.HyperparameterError) as expected:
        lars.hyperparams("paper", **({"lr": 0.1} | core))
    with pytest.raises(lars.HyperparameterError) as got:
        OneLARS(flavor="paper", **({"learning_rate": 0.1} | arguments))
    assert str(got.value) == str(expected.value)
    with pytest.raises(lars.HyperparameterError):
        dense = gluon.nn.Dense(2, in_units=2)
        dense.initialize()
        gluon.Trainer(dense.collect_params(), "onelars", {"learning_rate": 0.1} | arguments)


def test_grad_clip_norm_is_refused() -> None:
    with pytest.raises(lars.HyperparameterError, match=r"grad_clip_norm.*clip_global_norm"):
        OneLARS(flavor="paper", learning_rate=0.1, grad_clip_norm=1.0)


def test_sparse_gradients_are_refused() -> None:
    updater = mx.optimizer.get_updater(OneLARS(flavor="paper", learning_rate=0.1))
    weight = nd.ones((4, 3))
    before = weight.asnumpy()
    with pytest.raises(RuntimeError, match="sparse"):
        updater([0], [nd.ones((4, 3)).tostype("row_sparse")], [weight])
    assert np.array_equal(weight.asnumpy(), before)


def test_float16_without_multi_precision_warns() -> None:
    updater = mx.optimizer.get_updater(OneLARS(flavor="paper", learning_rate=0.1))
    with pytest.warns(UserWarning, match="multi_precision"):
        updater([0], [nd.ones((4, 3), dtype="float16")], [nd.ones((4, 3), dtype="float16")])


@pytest.mark.parametrize("aggregate_num", [4, 1], ids=["aggregated", "per-tensor"])
def test_float16_multi_precision_keeps_an_fp32_master(aggregate_num: int) -> None:
    init = [w.astype(np.float16) for w in tensors(0)]
    grads = [[g.astype(np.float16) for g in step] for step in gradients(STEPS)]
    optimizer = OneLARS(flavor="paper", multi_precision=True, aggregate_num=aggregate_num, **FLAVORS["paper"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no float16 warning with multi_precision
        got, updater = our_run(optimizer, init, grads)
    expected, _ = reference_run(core_hp("paper", FLAVORS["paper"]), [w.astype(np.float32) for w in init],
                                [[g.astype(np.float32) for g in step] for step in grads])
    masters = [updater.states[i][0].asnumpy() for i in range(len(init))]
    assert all(m.dtype == np.float32 for m in masters) and all(w.dtype == np.float16 for w in got)
    assert all(np.array_equal(w, m.astype(np.float16)) for w, m in zip(got, masters, strict=True))
    assert_close(masters, expected, tolerance=2e-3)  # fp16 norms, fp32 update
    assert_close(got, expected, tolerance=2e-3)
    # the master copy holds what float16 cannot: the fp32 run is not the fp16-rounded one
    assert any(not np.array_equal(m, w.astype(np.float32)) for m, w in zip(masters, got, strict=True))


def test_a_float16_gradient_is_rescaled_and_clipped_in_float32() -> None:
    hp = lars.hyperparams("paper", lr=0.1, grad_rescale=0.3, grad_clip_value=0.1)
    g = np.array([0.1235, -0.2471, 0.3333, 0.5, -1.0, 0.01], np.float16)
    rule = Rule(hp, plan(hp, [("w", g.shape)]))
    (prepared,) = rule.prepare(HostOps(np.float32), [Lazy(nd.array(g, dtype=g.dtype))])
    scale, made = prepared.parts()
    expected = np.clip(np.float32(0.3) * g.astype(np.float32), np.float32(-0.1), np.float32(0.1))
    assert scale == 1.0 and made.dtype == np.float32
    assert np.array_equal(made.asnumpy(), expected)  # not 0.3·g rounded to float16 first


def trainer_for(in_units: int, options: dict[str, object]) -> tuple[gluon.nn.HybridSequential, gluon.Trainer]:
    mx.random.seed(0)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(8, in_units=in_units), gluon.nn.Dense(5, in_units=8))
    net.initialize(mx.init.Xavier())
    return net, gluon.Trainer(net.collect_params(), "onelars", options)


def one_step(net: gluon.nn.HybridSequential, trainer: gluon.Trainer, in_units: int) -> None:
    with autograd.record():
        loss = (net(nd.ones((4, in_units))) ** 2).mean()
    loss.backward()
    trainer.step(4)


def test_loading_states_of_another_network_is_refused(tmp_path: Path) -> None:
    """States whose buffers have other shapes raise `lars.StateError` on the next step, before any
    weight or count changes (MXNet's kernels would fail mid-step)."""
    options = {"learning_rate": 0.3, "momentum": 0.9}
    small, trainer = trainer_for(6, options)
    one_step(small, trainer, 6)
    trainer.save_states(str(tmp_path / "small.states"))
    net, trainer = trainer_for(12, options)
    one_step(net, trainer, 12)
    trainer.load_states(str(tmp_path / "small.states"))
    before = [p.data().asnumpy() for p in net.collect_params().values()]
    count = trainer.optimizer.num_update
    with pytest.raises(lars.StateError, match=r"has shape \(8, 6\), but the parameter has shape \(8, 12\)"):
        one_step(net, trainer, 12)
    after = [p.data().asnumpy() for p in net.collect_params().values()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert trainer.optimizer.num_update == count


@pytest.mark.parametrize("aggregate_num", [4, 1], ids=["aggregated", "per-tensor"])
def test_a_buffer_of_the_wrong_shape_is_refused(aggregate_num: int) -> None:
    optimizer = OneLARS(flavor="paper", learning_rate=0.1, momentum=0.9, aggregate_num=aggregate_num)
    updater = mx.optimizer.get_updater(optimizer)
    weights = [nd.ones((4, 3)), nd.ones((3,))]
    updater([0, 1], [nd.ones((4, 3)), nd.ones((3,))], weights)
    updater.states[1] = nd.zeros((2,))
    before = [w.asnumpy() for w in weights]
    message = r"parameter 1 has shape \(2,\), but the parameter has shape \(3,\)"
    with pytest.raises(lars.StateError, match=message):
        updater([0, 1], [nd.ones((4, 3)), nd.ones((3,))], weights)
    # the update call that holds the bad buffer changes nothing (with aggregate_num=1, the
    # Updater calls once per tensor: tensor 0's call came first and went through)
    assert optimizer.books[0].steps[1] == 1 and np.array_equal(weights[1].asnumpy(), before[1])
    if aggregate_num > 1:
        assert optimizer.books[0].steps == {0: 1, 1: 1} and np.array_equal(weights[0].asnumpy(), before[0])


def test_import_state_continues_a_reference_run() -> None:
    """A neutral state saved by another backend (here the reference, after 3 steps with changing
    learning rates) continues in MXNet as if the run had never stopped, momentum correction
    included; a state that does not fit is refused before anything changes."""
    hp = core_hp("mxnet", {"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-3})
    lrs, grads = [0.1, 0.1, 0.05, 0.05, 0.02, 0.01], gradients(6, np.float64)
    params, state = dict(zip(NAMES, tensors(0, np.float64), strict=True)), State()
    saved = None
    for t, lr in enumerate(lrs):
        if t == 3:
            saved = (params, state)
        result = reference.step(params, dict(zip(NAMES, grads[t], strict=True)), state, hp, lr=lr)
        params, state = result.params, result.state
    assert saved is not None

    def resume(neutral: State | None) -> list[np.ndarray]:
        optimizer = OneLARS(flavor="mxnet", learning_rate=0.1, momentum=0.9, wd=1e-3,
                            param_idx2name=dict(enumerate(NAMES)))
        updater = mx.optimizer.get_updater(optimizer)
        weights = [nd.array(saved[0][n], dtype="float64") for n in NAMES]
        if neutral is not None:
            import_state(neutral, updater, dict(enumerate(NAMES)), dict(enumerate(weights)))
        for t in range(3, 6):
            optimizer.set_learning_rate(lrs[t])
            updater(list(range(len(NAMES))), [nd.array(g, dtype="float64") for g in grads[t]], weights)
        return [w.asnumpy() for w in weights]

    assert_close(resume(saved[1]), [params[n] for n in NAMES])
    assert max(relative_error(a, params[n]) for a, n in zip(resume(None), NAMES, strict=True)) > 1e-3

    optimizer = OneLARS(flavor="mxnet", learning_rate=0.1, momentum=0.9)
    updater = mx.optimizer.get_updater(optimizer)
    weights = {i: nd.zeros(s if i else (5, 5), dtype="float64") for i, s in enumerate(SHAPES)}
    with pytest.raises(lars.StateError, match="conv0_weight"):
        import_state(saved[1], updater, dict(enumerate(NAMES)), weights)
    assert updater.states == {} and optimizer.num_update == 0
