"""Property tests of the reference step: invariants that follow from the LARS formulas."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lars.core import FLAVORS, Exclude, State, hyperparams, reference

SETTINGS = settings(max_examples=60, deadline=None)
MAGNITUDE = st.builds(lambda x, s: x * s, st.floats(1e-3, 1e3), st.sampled_from([1.0, -1.0]))
SCALE = st.floats(1e-2, 1e2)
LR = st.floats(1e-4, 10.0)
WD = st.floats(0.0, 0.1)
FLAVOR = st.sampled_from(sorted(FLAVORS))


@st.composite
def weight_and_grad(draw, min_dims=2):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4))
    w = draw(hnp.arrays(np.float64, shape, elements=MAGNITUDE))
    g = draw(hnp.arrays(np.float64, shape, elements=MAGNITUDE))
    return w, g


def step(hp, w, g, state=None, name="layer"):
    return reference.step({name: w}, {name: g}, state or State(), hp)


def flavor_hp(flavor, **overrides):
    lr = {"lr": 0.1} if FLAVORS[flavor].lr_required else {}
    return hyperparams(flavor, **lr, **overrides)


@SETTINGS
@given(weight_and_grad(), SCALE, st.floats(0.5, 0.99))
def test_heavy_ball_update_invariant_to_gradient_scale(wg, c, m):
    w, g = wg
    hp = hyperparams("paper", lr=0.1, momentum=m, weight_decay=0.0, eps=0.0)
    base, scaled = step(hp, w, g), step(hp, w, c * g)
    # heavy-ball with a zero start: the buffer is the update, lr * eta ||w|| g / ||g||
    np.testing.assert_allclose(scaled.state.momentum_buffers["layer"], base.state.momentum_buffers["layer"],
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose(scaled.trust_ratios["layer"] * c, base.trust_ratios["layer"], rtol=1e-12)


@SETTINGS
@given(weight_and_grad(min_dims=0), FLAVOR)
def test_zero_gradient_without_weight_decay_changes_nothing(wg, flavor):
    w, _ = wg
    result = step(flavor_hp(flavor, weight_decay=0.0), w, np.zeros_like(w))
    np.testing.assert_array_equal(result.params["layer"], w)


@SETTINGS
@given(weight_and_grad(min_dims=0), weight_and_grad(min_dims=0), st.floats(0.0, 0.99), WD, LR)
def test_fully_excluded_tensor_is_sgd_with_heavy_ball_momentum(wg1, wg2, m, wd, lr):
    w, g1 = wg1
    g2 = np.resize(wg2[1], w.shape)
    everything = Exclude.where(lambda name, shape: True)
    hp = hyperparams("paper", lr=lr, momentum=m, weight_decay=wd,
                     exclude_from_weight_decay=everything, exclude_from_adaptation=everything)
    first = step(hp, w, g1)
    second = step(hp, first.params["layer"], g2, first.state)
    v1 = lr * g1
    v2 = m * v1 + lr * g2
    atol = 1e-12 * float(np.max(np.abs(w)) + np.max(np.abs(v1)) + np.max(np.abs(v2)))
    np.testing.assert_allclose(second.params["layer"], w - v1 - v2, rtol=1e-12, atol=atol)
    assert first.trust_ratios["layer"] == 1.0 == second.trust_ratios["layer"]


WEIGHT_AND_GRAD_RULE = sorted(n for n, f in FLAVORS.items()
                              if f.defaults["zero_norm_rule"] == "weight_and_grad")


@SETTINGS
@given(weight_and_grad(min_dims=0), st.sampled_from(WEIGHT_AND_GRAD_RULE), WD, st.booleans())
def test_trust_ratio_is_one_at_a_zero_norm(wg, flavor, wd, zero_weights):
    w, g = wg
    w, g = (np.zeros_like(w), g) if zero_weights else (w, np.zeros_like(g))
    hp = flavor_hp(flavor, weight_decay=wd, exclude_from_weight_decay=None, exclude_from_adaptation=None)
    assert step(hp, w, g).trust_ratios["layer"] == 1.0


@SETTINGS
@given(weight_and_grad(min_dims=0), LR, WD, st.floats(1e-3, 1.0))
def test_larc_clip_never_exceeds_the_learning_rate(wg, lr, wd, eta):
    w, g = wg
    hp = hyperparams("larc", lr=lr, weight_decay=wd, trust_coefficient=eta)
    result = step(hp, w, g)
    r = result.trust_ratios["layer"]
    assert 0.0 < r <= 1.0
    moved = np.linalg.norm(w - result.params["layer"])
    assert moved <= lr * np.linalg.norm(g + wd * w) * (1 + 1e-9) + 1e-12 * np.linalg.norm(w)


@SETTINGS
@given(weight_and_grad(min_dims=0), weight_and_grad(min_dims=0), FLAVOR, st.floats(0.0, 0.99))
def test_step_is_pure(wg1, wg2, flavor, m):
    w, g1 = wg1
    g2 = np.resize(wg2[1], w.shape)
    hp = flavor_hp(flavor, momentum=m)
    first = step(hp, w, g1)
    params, grads, state = {"layer": first.params["layer"]}, {"layer": g2}, first.state
    copies = (params["layer"].copy(), g2.copy(), {k: v.copy() for k, v in state.momentum_buffers.items()})
    reference.step(params, grads, state, hp)
    np.testing.assert_array_equal(params["layer"], copies[0])
    np.testing.assert_array_equal(grads["layer"], copies[1])
    assert state.momentum_buffers.keys() == copies[2].keys()
    for name, buffer in copies[2].items():
        np.testing.assert_array_equal(state.momentum_buffers[name], buffer)


@SETTINGS
@given(weight_and_grad(min_dims=0), SCALE, WD, st.sampled_from(["paper", "yscv", "pytorch_optimizer",
                                                                "optax", "moco", "tensorlogic"]))
def test_trust_ratio_invariant_to_joint_scaling(wg, c, wd, flavor):
    w, g = wg
    hp = flavor_hp(flavor, weight_decay=wd, eps=0.0, trust_coefficient=1e-3,
                   exclude_from_weight_decay=None, exclude_from_adaptation=None)
    r, r_scaled = step(hp, w, g).trust_ratios["layer"], step(hp, c * w, c * g).trust_ratios["layer"]
    np.testing.assert_allclose(r_scaled, r, rtol=1e-12)


@SETTINGS
@given(weight_and_grad(min_dims=0), FLAVOR, WD)
def test_maximize_equals_stepping_with_the_negated_gradient(wg, flavor, wd):
    w, g = wg
    hp = flavor_hp(flavor, weight_decay=wd)
    up = step(hp.replace(maximize=True), w, g)
    down = step(hp, w, -g)
    np.testing.assert_array_equal(up.params["layer"], down.params["layer"])


@SETTINGS
@given(weight_and_grad(), weight_and_grad(), st.floats(0.1, 0.99), WD)
def test_copy_and_zero_start_agree_without_dampening(wg1, wg2, m, wd):
    w, g1 = wg1
    g2 = np.resize(wg2[1], w.shape)
    finals = []
    for start in ("copy", "zero"):
        hp = hyperparams("torchlars", lr=0.1, momentum=m, weight_decay=wd, buffer_start=start)
        first = step(hp, w, g1)
        finals.append(step(hp, first.params["layer"], g2, first.state).state.momentum_buffers["layer"])
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-12, atol=0)


@SETTINGS
@given(weight_and_grad(), weight_and_grad(), st.floats(0.1, 0.99), WD, st.floats(1e-3, 1.0))
def test_heavy_ball_buffer_is_lr_times_sgd_buffer_at_constant_lr(wg1, wg2, m, wd, lr):
    w, g1 = wg1
    g2 = np.resize(wg2[1], w.shape)
    buffers = {}
    for style in ("heavy_ball", "sgd"):
        hp = hyperparams("paper", lr=lr, momentum=m, weight_decay=wd, momentum_style=style)
        first = step(hp, w, g1)
        # same w for both styles, so that only the buffer convention differs
        buffers[style] = step(hp, w, g2, first.state).state.momentum_buffers["layer"]
    np.testing.assert_allclose(buffers["heavy_ball"], lr * buffers["sgd"], rtol=1e-12, atol=0)
