"""The Keras `LARS` against the core's NumPy reference (`lars.core.reference.step`): whole
trajectories in float32 and float64 for flavors that cover every momentum style, momentum
correction and dampening; validation errors; trust ratios; non-finite gradients; clear_state."""

import math

import keras
import keras_reference as kr
import numpy as np
import pytest

import lars
from lars.backends.keras import LARS
from lars.core import State, reference

STEPS = 20
#: flavor -> overrides. mxnet: heavy-ball with momentum correction (m * lr_t / lr_{t-1});
#: timm: SGD-style with dampening and a copy start; holocron: the ratio outside the buffer.
FLAVORS = {
    "paper": dict(lr=0.3, weight_decay=1e-2),
    "mxnet": dict(lr=0.3, momentum=0.9, weight_decay=1e-2),
    "timm": dict(lr=0.3, momentum=0.9, dampening=0.1, weight_decay=1e-2, larc_clip=True),
    "holocron": dict(lr=0.05, momentum=0.9, weight_decay=1e-2),
    "tf_models": dict(lr=0.3, weight_decay=1e-2, nesterov=True, exclude_from_weight_decay=["bias", "gamma"]),
}


def lr_at(base):
    """A learning rate that changes every step (so momentum correction has work to do)."""
    return lambda t: base * (1.0 + 0.5 * math.sin(t))


def run_ours(optimizer, params, grads, lrs):
    variables, trajectory, ratios = kr.keras_variables(params), [], []
    for t, g in enumerate(grads):
        optimizer.learning_rate = lrs(t)
        kr.apply(optimizer, variables, g)
        trajectory.append(kr.values(variables))
        ratios.append(optimizer.trust_ratios())
    return trajectory, ratios


def compare(flavor, dtype):
    overrides = dict(FLAVORS[flavor])
    lr = overrides.pop("lr")
    hp = lars.hyperparams(flavor, lr=lr, **overrides)
    params, grads, lrs = kr.initial(dtype), kr.gradient_stream(STEPS, dtype), lr_at(lr)
    ref, _, ref_ratios = kr.run_reference(hp, params, grads, lrs)
    ours, ratios = run_ours(LARS(learning_rate=lr, flavor=flavor, **overrides), params, grads, lrs)
    tol = kr.TOLERANCE[np.dtype(dtype)]
    for t in range(STEPS):
        assert kr.max_error(ours[t], ref[t]) <= tol, (flavor, t)
        for name, r in ref_ratios[t].items():
            assert ratios[t][name] == pytest.approx(r, rel=tol, abs=tol), (flavor, t, name)
    assert kr.max_error(ref[-1], params) > 1e-3  # the weights moved


@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_matches_reference_float32(flavor):
    assert keras.config.floatx() == "float32"
    compare(flavor, np.float32)


@pytest.mark.parametrize("flavor", ["paper", "mxnet", "timm", "holocron"])
def test_matches_reference_float64(flavor, float64):
    compare(flavor, np.float64)


def test_weight_decay_is_applied_once_inside_lars(float64):
    """The Keras base class's decoupled weight decay is off: with wd=0.1 the run is the reference
    with wd=0.1, not that followed by Keras's `w -= lr*wd*w`."""
    params, grads = kr.initial(np.float64), kr.gradient_stream(3, np.float64)
    hp = lars.hyperparams("paper", lr=0.3, weight_decay=0.1)
    ref, _, _ = kr.run_reference(hp, params, grads)
    optimizer = LARS(learning_rate=0.3, weight_decay=0.1)
    assert optimizer.weight_decay is None
    ours, _ = run_ours(optimizer, params, grads, lambda t: 0.3)
    assert kr.max_error(ours[-1], ref[-1]) <= 1e-12
    no_wd, _, _ = kr.run_reference(lars.hyperparams("paper", lr=0.3, weight_decay=0.0), params, grads)
    assert kr.max_error(ours[-1], no_wd[-1]) > 1e-6  # the weight decay did something


def core_error(**kwargs):
    with pytest.raises(lars.HyperparameterError) as caught:
        lars.hyperparams(**kwargs)
    return str(caught.value)


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1, momentum=1.0), dict(lr=-0.1), dict(lr=0.1, trust_coefficient=0.0),
    dict(lr=0.1, momentum=0.0, nesterov=True), dict(lr=0.1, flavor="no-such-flavor"),
    dict(flavor="paper"),  # paper has no default learning rate
    dict(lr=0.1, trust_denominator="update"),
])
def test_invalid_hyperparameters_raise_the_core_error(kwargs):
    kwargs = dict(kwargs)
    expected = core_error(**kwargs)
    lr = kwargs.pop("lr", None)
    with pytest.raises(lars.HyperparameterError) as caught:
        LARS(learning_rate=lr, **kwargs)
    assert str(caught.value) == expected


def test_set_lr_validates_and_keeps_the_old_rate():
    optimizer = LARS(learning_rate=0.1)
    expected = core_error(lr=-1.0)
    with pytest.raises(lars.HyperparameterError) as caught:
        optimizer.set_lr(-1.0)
    assert str(caught.value) == expected
    assert optimizer.hyperparameters.lr == 0.1
    assert float(optimizer.learning_rate) == pytest.approx(0.1)
    optimizer.set_lr(0.25)
    assert optimizer.hyperparameters.lr == 0.25
    assert float(optimizer.learning_rate) == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gradient_does_what_the_reference_does(bad, float64):
    """A NaN or inf in one tensor's gradient: no error and no skipped step; that tensor becomes
    non-finite exactly where the reference's does, its trust ratio is the reference's (1 for NaN:
    the zero-norm guard `||g|| > 0` is False; 0 for inf), the other tensors step normally."""
    params, grads = kr.initial(np.float64), kr.gradient_stream(2, np.float64)
    grads[1]["dense/kernel"][0, 0] = bad
    hp = lars.hyperparams("paper", lr=0.3, weight_decay=1e-2)
    ref, _, ref_ratios = kr.run_reference(hp, params, grads)
    ours, ratios = run_ours(LARS(learning_rate=0.3, weight_decay=1e-2), params, grads, lambda t: 0.3)
    kernel, ref_kernel = ours[-1]["dense/kernel"], ref[-1]["dense/kernel"]
    assert not np.all(np.isfinite(ref_kernel))
    np.testing.assert_array_equal(np.isnan(kernel), np.isnan(ref_kernel))
    np.testing.assert_array_equal(np.isinf(kernel), np.isinf(ref_kernel))
    finite = np.isfinite(ref_kernel)
    np.testing.assert_allclose(kernel[finite], ref_kernel[finite], rtol=1e-12, atol=0)
    assert ratios[-1]["dense/kernel"] == ref_ratios[-1]["dense/kernel"] == (1.0 if np.isnan(bad) else 0.0)
    others = [n for n in params if n != "dense/kernel"]
    assert kr.max_error({n: ours[-1][n] for n in others}, {n: ref[-1][n] for n in others}) <= 1e-12


def test_clear_state_makes_the_next_step_a_first_step(float64):
    params, grads = kr.initial(np.float64), kr.gradient_stream(4, np.float64)
    hp = lars.hyperparams("timm", lr=0.3, momentum=0.9, dampening=0.1, weight_decay=1e-2)
    optimizer = LARS(learning_rate=0.3, flavor="timm", momentum=0.9, dampening=0.1, weight_decay=1e-2)
    variables = kr.keras_variables(params)
    for g in grads[:3]:
        kr.apply(optimizer, variables, g)
    optimizer.clear_state()
    assert int(optimizer.iterations) == 0
    assert all(not np.any(m.numpy()) for m in optimizer.momentums)
    before = kr.values(variables)
    kr.apply(optimizer, variables, grads[3])
    first = reference.step(before, grads[3], State(), hp)
    assert kr.max_error(kr.values(variables), first.params) <= 1e-12
    # without clearing, the step would not be a first step: the buffers carry earlier gradients
    _, state, _ = kr.run_reference(hp, params, grads[:3])
    assert kr.max_error(reference.step(before, grads[3], state, hp).params, first.params) > 1e-6


def test_neutral_state_round_trip_continues_the_same_run():
    import lars as core_lars

    def make():
        variables = [keras.Variable(np.full((3, 2), 0.5, dtype="float32"), name="dense_kernel")]
        optimizer = LARS(0.1, "paper", weight_decay=1e-2)
        optimizer.build(variables)
        return variables, optimizer

    grads = [np.full((3, 2), 0.1, dtype="float32")]
    variables, optimizer = make()
    for _ in range(3):
        optimizer.apply([keras.ops.convert_to_tensor(grads[0])], variables)
    state = optimizer.export_state()
    again, fresh = make()
    again[0].assign(variables[0])
    fresh.import_state(state)
    optimizer.apply([keras.ops.convert_to_tensor(grads[0])], variables)
    fresh.apply([keras.ops.convert_to_tensor(grads[0])], again)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variables[0]),
                                  keras.ops.convert_to_numpy(again[0]))
    with pytest.raises(core_lars.StateError):
        fresh.import_state(core_lars.State(1, 0.1, {"other": np.zeros((3, 2))}))


def keras_clipped(grads, clipnorm=None, clipvalue=None, global_clipnorm=None):
    """Keras's three clipping options, in NumPy, on one step's gradients."""
    if clipnorm is not None:
        return {n: g * (clipnorm / max(np.linalg.norm(g), clipnorm)) for n, g in grads.items()}
    if clipvalue is not None:
        return {n: np.clip(g, -clipvalue, clipvalue) for n, g in grads.items()}
    total = np.sqrt(sum(np.sum(np.square(g)) for g in grads.values()))
    return {n: g * (global_clipnorm / max(total, global_clipnorm)) for n, g in grads.items()}


@pytest.mark.parametrize("option", [dict(clipnorm=2.0), dict(clipvalue=0.5), dict(global_clipnorm=3.0)])
def test_keras_clipping_clips_the_gradients_lars_sees(option, float64):
    """Keras's clipnorm / clipvalue / global_clipnorm act before LARS: the run is the reference
    run on the clipped gradients (norms included), and differs from the unclipped one."""
    params, grads = kr.initial(np.float64), kr.gradient_stream(4, np.float64)
    hp = lars.hyperparams("paper", lr=0.3, weight_decay=1e-2)
    ref, _, ref_ratios = kr.run_reference(hp, params, [keras_clipped(g, **option) for g in grads])
    ours, ratios = run_ours(LARS(learning_rate=0.3, weight_decay=1e-2, **option), params, grads,
                            lambda t: 0.3)
    assert kr.max_error(ours[-1], ref[-1]) <= 1e-12
    assert ratios[-1] == pytest.approx(ref_ratios[-1], rel=1e-12)
    unclipped, _, _ = kr.run_reference(hp, params, grads)
    assert kr.max_error(unclipped[-1], ref[-1]) > 1e-6


def test_gradient_accumulation_steps_on_the_mean_gradient(float64):
    """With gradient_accumulation_steps=2, Keras accumulates two gradients and LARS steps once
    on their mean: two reference steps for four gradients."""
    params, grads = kr.initial(np.float64), kr.gradient_stream(4, np.float64)
    hp = lars.hyperparams("paper", lr=0.3, weight_decay=1e-2)
    means = [{n: (grads[t][n] + grads[t + 1][n]) / 2 for n in params} for t in (0, 2)]
    ref, _, _ = kr.run_reference(hp, params, means)
    ours, _ = run_ours(LARS(learning_rate=0.3, weight_decay=1e-2, gradient_accumulation_steps=2),
                       params, grads, lambda t: 0.3)
    assert kr.max_error(ours[1], ref[0]) <= 1e-12 and kr.max_error(ours[3], ref[1]) <= 1e-12
    assert kr.max_error(ours[0], params) == 0.0  # the first gradient is only accumulated


def test_global_norm_clip_over_variables_of_two_dtypes():
    """The global norm of `grad_clip_norm` is over every gradient of the step, whatever its dtype
    (each dtype is its own batch of the step): float32 and float64 variables, as the reference."""
    params = {**kr.initial(np.float32, shapes={"dense/kernel": (4, 5)}),
              **kr.initial(np.float64, shapes={"head/kernel": (5, 3)})}
    shapes = {"dense/kernel": (4, 5), "head/kernel": (5, 3)}
    grads = [{n: (3.0 * g).astype(params[n].dtype) for n, g in step.items()}
             for step in kr.gradient_stream(3, np.float64, shapes=shapes)]
    hp = lars.hyperparams("paper", lr=1.0, momentum=0.9, weight_decay=1e-3, trust_coefficient=0.02,
                          grad_clip_norm=0.5)
    ref, _, _ = kr.run_reference(hp, params, grads)
    variables = kr.keras_variables(params)
    optimizer = LARS(hyperparameters=hp)
    for g in grads:
        kr.apply(optimizer, variables, g)
    assert kr.relative_error(kr.values(variables)["dense/kernel"], ref[-1]["dense/kernel"]) <= 1e-5
    assert kr.relative_error(kr.values(variables)["head/kernel"], ref[-1]["head/kernel"]) <= 1e-5
    assert kr.max_error(ref[-1], params) > 1e-3


def test_momentum_correction_reaches_the_first_variables_of_a_step_across_dtypes():
    """MXNet's correction reaches the first `momentum_correction_tensors` variables of a step in
    their order, whatever their dtype (each dtype is its own batch of the step)."""
    params = {**kr.initial(np.float64, shapes={"a/kernel": (3, 2)}),
              **kr.initial(np.float32, shapes={"b/kernel": (2, 2)}),
              **kr.initial(np.float64, shapes={"c/kernel": (4,)})}
    lrs = [0.5, 0.25, 1.0, 0.5]
    grads = [{n: g.astype(params[n].dtype) for n, g in step.items()} for step in
             kr.gradient_stream(len(lrs), np.float64, shapes={n: p.shape for n, p in params.items()})]
    hp = lars.hyperparams("mxnet", lr=lrs[0], momentum=0.9, momentum_correction_tensors=2,
                          trust_coefficient=0.02)
    ref, _, _ = kr.run_reference(hp, params, grads, lrs.__getitem__)
    variables = kr.keras_variables(params)
    optimizer = LARS(hyperparameters=hp)
    for lr, g in zip(lrs, grads, strict=True):
        optimizer.learning_rate = lr
        kr.apply(optimizer, variables, g)
    for name, value in kr.values(variables).items():
        assert kr.relative_error(value, ref[-1][name]) <= 1e-5, name
    assert kr.max_error(ref[-1], params) > 1e-3


def test_keras_exclude_from_weight_decay_hook_is_the_cores_exclusion(float64):
    """`optimizer.exclude_from_weight_decay(var_names=["bias"])`, the Keras 3 way (as for AdamW),
    keeps the bias free of weight decay: the run is the reference's with that exclusion, and not
    the reference's without it."""
    params, grads = kr.initial(np.float64), kr.gradient_stream(5, np.float64)
    variables = kr.keras_variables(params)
    optimizer = LARS(0.1, "paper", momentum=0.9, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    for g in grads:
        kr.apply(optimizer, variables, g)
    excluded = lars.hyperparams("paper", lr=0.1, momentum=0.9, weight_decay=0.1,
                                exclude_from_weight_decay=["bias"])
    ours = kr.values(variables)
    assert kr.max_error(ours, kr.run_reference(excluded, params, grads)[0][-1]) <= 1e-12
    decayed = lars.hyperparams("paper", lr=0.1, momentum=0.9, weight_decay=0.1)
    assert kr.max_error(ours, kr.run_reference(decayed, params, grads)[0][-1]) > 1e-6
    with pytest.raises(ValueError, match="before the optimizer is built"):
        optimizer.exclude_from_weight_decay(var_names=["kernel"])
