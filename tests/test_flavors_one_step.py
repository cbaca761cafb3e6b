"""One and two reference steps of every flavor against that flavor's formula in the spec.

The example: a 2-D weight `fc_weight = [[3, 4]]` (norm 5) and a 1-D `fc_bias`, two steps of
gradients with nice norms. Expected values come from `spec_math` (plain Python floats written
from each implementation's section of the specification), never from the code under test.
"""

import math

import numpy as np
import pytest
import spec_math as sm

from lars.core import State, hyperparams, reference

W0, B0 = [3.0, 4.0], [1.0, -2.0]
GW = [[0.3, 0.4], [-0.4, 0.3]]          # norms 0.5, 0.5
GB = [[0.1, -0.2], [0.05, 0.1]]
LR, M, WD = 0.1, 0.9, 0.01
WN, BN = "fc_weight", "fc_bias"


def run(hp, gw=GW, gb=GB, w0=W0, b0=B0, lrs=None):
    """Steps the reference; returns the list of StepResults (one per gradient pair)."""
    params = {WN: np.array([w0], dtype=float), BN: np.array(b0, dtype=float)}
    state, out = State(), []
    for i, (g_w, g_b) in enumerate(zip(gw, gb, strict=True)):
        grads = {WN: np.array([g_w], dtype=float), BN: np.array(g_b, dtype=float)}
        res = reference.step(params, grads, state, hp, lr=None if lrs is None else lrs[i])
        params, state = res.params, res.state
        out.append(res)
    return out


def check(results, expected_w, expected_b):
    for res, ew, eb in zip(results, expected_w, expected_b, strict=True):
        sm.assert_close(res.params[WN], ew)
        sm.assert_close(res.params[BN], eb)


def test_paper_first_step_by_hand():
    res = run(hyperparams("paper", lr=LR, momentum=M, weight_decay=WD))[0]
    r = 0.001 * 5.0 / (0.5 + 0.01 * 5.0)               # eta ||w|| / (||g|| + wd ||w||)
    rb = 0.001 * math.sqrt(5.0) / (math.sqrt(0.05) + 0.01 * math.sqrt(5.0))
    sm.assert_close(res.params[WN], [3.0 - 0.1 * r * (0.3 + 0.03), 4.0 - 0.1 * r * (0.4 + 0.04)])
    sm.assert_close(res.params[BN], [1.0 - 0.1 * rb * (0.1 + 0.01), -2.0 - 0.1 * rb * (-0.2 - 0.02)])
    assert res.trust_ratios[WN] == pytest.approx(r, rel=1e-12)
    sm.assert_close(res.state.momentum_buffers[WN], [0.1 * r * 0.33, 0.1 * r * 0.44])


def two_steps(fn, w0, grads, *args, **kwargs):
    """Runs a spec_math heavy-ball style function (w, g, v, ...) -> (w, v, ...) twice."""
    w, v, out = list(w0), sm.zeros(len(w0)), []
    for g in grads:
        w, v, *_ = fn(w, g, v, *args, **kwargs)
        out.append(w)
    return out


def two_steps_copy(fn, w0, grads, *args, **kwargs):
    """The same for torch-SGD style functions whose buffer starts as None (copy start)."""
    w, v, out = list(w0), None, []
    for g in grads:
        w, v, *_ = fn(w, g, v, *args, **kwargs)
        out.append(w)
    return out


@pytest.mark.parametrize("nesterov", [False, True])
def test_paper(nesterov):
    hp = hyperparams("paper", lr=LR, momentum=M, weight_decay=WD, nesterov=nesterov)
    ew = two_steps(sm.paper, W0, GW, LR, M, WD, 1e-3, 0.0, nesterov=nesterov)
    eb = two_steps(sm.paper, B0, GB, LR, M, WD, 1e-3, 0.0, nesterov=nesterov)
    check(run(hp), ew, eb)


def test_yscv_is_paper_without_eps():
    hp = hyperparams("yscv", lr=LR, momentum=M, weight_decay=WD)
    check(run(hp), two_steps(sm.paper, W0, GW, LR, M, WD, 1e-3, 0.0),
          two_steps(sm.paper, B0, GB, LR, M, WD, 1e-3, 0.0))


def test_mlperf_eps_zero_becomes_1e7_and_bias_is_skipped():
    hp = hyperparams("mlperf", lr=LR, weight_decay=WD, eps=0.0)
    assert hp.eps == 1e-7
    ew = two_steps(sm.paper, W0, GW, LR, 0.9, WD, 1e-3, 1e-7)
    eb = two_steps(sm.paper, B0, GB, LR, 0.9, WD, 1e-3, 1e-7, excluded=True)
    check(run(hp), ew, eb)


@pytest.mark.parametrize("name", ["resnet/batch_normalization/gamma", "conv1/bias", "layer1/bn2/kernel"])
def test_mlperf_skip_list_substrings_get_plain_momentum(name):
    hp = hyperparams("mlperf", lr=LR, weight_decay=WD)
    params, grads = {name: np.array([W0])}, {name: np.array([GW[0]])}
    res = reference.step(params, grads, State(), hp)
    sm.assert_close(res.params[name], [3.0 - 0.1 * 0.3, 4.0 - 0.1 * 0.4])    # no ratio, no wd
    assert res.trust_ratios[name] == 1.0


@pytest.mark.parametrize("nesterov", [False, True])
def test_optax(nesterov):
    hp = hyperparams("optax", lr=LR, weight_decay=WD, nesterov=nesterov)
    ew = two_steps(sm.optax, W0, GW, LR, 0.9, WD, 1e-3, 0.0, nesterov=nesterov)
    eb = two_steps(sm.optax, B0, GB, LR, 0.9, WD, 1e-3, 0.0, nesterov=nesterov)
    results = run(hp)
    check(results, ew, eb)
    # the core keeps the buffer positive (w -= v); optax's trace is its negative
    v_optax = sm.optax(W0, GW[0], [0.0, 0.0], LR, 0.9, WD, 1e-3, 0.0)[1]
    sm.assert_close(results[0].state.momentum_buffers[WN], sm.scale(v_optax, -1.0))


def test_mxnet_name_rules_and_negative_buffer():
    hp = hyperparams("mxnet", lr=LR, momentum=M, weight_decay=WD)
    ew = two_steps(sm.mxnet, W0, GW, LR, M, WD, 1e-3, 0.0, True)
    eb = two_steps(sm.mxnet, B0, GB, LR, M, 0.0, 1e-3, 0.0, False)   # bias: no LARS, no wd
    results = run(hp)
    check(results, ew, eb)
    assert results[0].trust_ratios[BN] == 1.0


@pytest.mark.parametrize("name, lars, wd", [("conv0_kernel", True, 0.0), ("bn_gamma", False, 0.0),
                                            ("bn_beta", False, 0.0), ("dense_weight", True, WD)])
def test_mxnet_suffix_rules(name, lars, wd):
    hp = hyperparams("mxnet", lr=LR, weight_decay=WD)
    res = reference.step({name: np.array([W0])}, {name: np.array([GW[0]])}, State(), hp)
    sm.assert_close(res.params[name], sm.mxnet(W0, GW[0], [0.0, 0.0], LR, 0.0, wd, 1e-3, 0.0, lars)[0])


def test_mxnet_grad_rescale_and_clip_value():
    g = [0.6, 0.8]                                  # rescaled by 0.5: [0.3, 0.4], norm 0.5
    hp = hyperparams("mxnet", lr=LR, momentum=M, weight_decay=WD, grad_rescale=0.5, grad_clip_value=0.35)
    res = reference.step({WN: np.array([W0])}, {WN: np.array([g])}, State(), hp)
    r = 0.001 * 5.0 / (0.5 + 0.01 * 5.0)            # the norm sees 0.5 * g, unclipped
    expected = [3.0 - LR * r * (0.3 + 0.03), 4.0 - LR * r * (0.35 + 0.04)]   # update sees the clip
    sm.assert_close(res.params[WN], expected)
    sm.assert_close(expected, sm.mxnet(W0, g, [0.0, 0.0], LR, M, WD, 1e-3, 0.0, True, 0.5, 0.35)[0])


def mxnet_momentum_run(lrs, n_tensors=5):
    names = [f"t{i}_bias" for i in range(n_tensors)]          # no LARS, no wd: v = m v - lr g
    hp = hyperparams("mxnet", lr=LR, momentum=M)
    params = {n: np.array([1.0, 2.0]) for n in names}
    grads = [{n: np.array([0.5, -1.0]) for n in names}, {n: np.array([0.25, 0.5]) for n in names}]
    state = State()
    for lr, g in zip(lrs, grads, strict=True):
        res = reference.step(params, g, state, hp, lr=lr)
        params, state = res.params, res.state
    return names, params


def test_mxnet_momentum_correction_first_four_tensors_only():
    names, params = mxnet_momentum_run([0.1, 0.05])
    v1 = [-0.1 * 0.5, 0.1 * 1.0]
    for i, name in enumerate(names):
        m_eff = 0.9 * (0.05 / 0.1) if i < 4 else 0.9
        v2 = [m_eff * v1[0] - 0.05 * 0.25, m_eff * v1[1] - 0.05 * 0.5]
        sm.assert_close(params[name], [1.0 + v1[0] + v2[0], 2.0 + v1[1] + v2[1]])


def test_mxnet_no_correction_when_lr_unchanged():
    names, params = mxnet_momentum_run([0.1, 0.1])
    v1 = [-0.05, 0.1]
    v2 = [0.9 * v1[0] - 0.1 * 0.25, 0.9 * v1[1] - 0.1 * 0.5]
    for name in names:
        sm.assert_close(params[name], [1.0 + v1[0] + v2[0], 2.0 + v1[1] + v2[1]])


@pytest.mark.parametrize("nesterov", [False, True])
def test_tf_models_classic(nesterov):
    hp = hyperparams("tf_models", lr=LR, weight_decay=WD, nesterov=nesterov)
    check(run(hp), two_steps(sm.tf_models, W0, GW, LR, 0.9, WD, 1e-3, nesterov=nesterov),
          two_steps(sm.tf_models, B0, GB, LR, 0.9, WD, 1e-3, nesterov=nesterov))


def test_tf_models_adaptation_exclusion_defaults_to_weight_decay_rule():
    hp = hyperparams("tf_models", lr=LR, weight_decay=WD, exclude_from_weight_decay=["bias"])
    assert hp.adaptation_exclusion.excludes(BN, (2,))
    check(run(hp), two_steps(sm.tf_models, W0, GW, LR, 0.9, WD, 1e-3),
          two_steps(sm.tf_models, B0, GB, LR, 0.9, 0.0, 1e-3, adapt=False))


def test_tf_models_separate_adaptation_rule():
    hp = hyperparams("tf_models", lr=LR, weight_decay=WD, exclude_from_weight_decay=["bias"],
                     exclude_from_adaptation=["nothing_matches"])
    check(run(hp), two_steps(sm.tf_models, W0, GW, LR, 0.9, WD, 1e-3),
          two_steps(sm.tf_models, B0, GB, LR, 0.9, 0.0, 1e-3, adapt=True))


@pytest.mark.parametrize("nesterov", [False, True])
def test_timm(nesterov):
    hp = hyperparams("timm", lr=LR, momentum=M, weight_decay=WD, nesterov=nesterov)
    args = (LR, M, 0.0, WD, 1e-3, 1e-8)
    check(run(hp), two_steps_copy(sm.timm, W0, GW, *args, nesterov=nesterov),
          two_steps_copy(sm.timm, B0, GB, *args, nesterov=nesterov))


def test_timm_without_weight_decay_is_plain_sgd_unless_always_adapt():
    hp = hyperparams("timm", lr=LR, momentum=M, dampening=0.5)
    args = (LR, M, 0.5, 0.0, 1e-3, 1e-8)
    check(run(hp), two_steps_copy(sm.timm, W0, GW, *args), two_steps_copy(sm.timm, B0, GB, *args))
    hp = hp.replace(adapt_requires_weight_decay=False)
    check(run(hp), two_steps_copy(sm.timm, W0, GW, *args, always_adapt=True),
          two_steps_copy(sm.timm, B0, GB, *args, always_adapt=True))


@pytest.mark.parametrize("dampening", [0.0, 0.3])
def test_larc_clip(dampening):
    hp = hyperparams("larc", lr=LR, momentum=M, weight_decay=WD, dampening=dampening)
    args = (LR, M, WD, 0.02, 1e-8)
    check(run(hp), two_steps_copy(sm.larc, W0, GW, *args, d=dampening),
          two_steps_copy(sm.larc, B0, GB, *args, d=dampening))


@pytest.mark.parametrize("lr", [0.1, 1.0])
def test_larc_clip_is_min_ratio_over_lr_and_one(lr):
    hp = hyperparams("larc", lr=lr)                      # wd 0, m 0: w -= lr * min(r/lr, 1) g
    res = reference.step({WN: np.array([W0])}, {WN: np.array([GW[0]])}, State(), hp)
    r = 0.02 * 5.0 / (0.5 + 1e-8)                        # about 0.2
    clipped = min(r / lr, 1.0)
    assert clipped == (1.0 if lr == 0.1 else r / lr)
    sm.assert_close(res.params[WN], [3.0 - lr * clipped * 0.3, 4.0 - lr * clipped * 0.4])


@pytest.mark.parametrize("nesterov", [False, True])
def test_torchlars(nesterov):
    hp = hyperparams("torchlars", lr=LR, momentum=M, weight_decay=WD, nesterov=nesterov)
    args = (LR, M, WD, 1e-3, 1e-8)
    check(run(hp), two_steps_copy(sm.torchlars, W0, GW, *args, nesterov=nesterov),
          two_steps_copy(sm.torchlars, B0, GB, *args, nesterov=nesterov))


@pytest.mark.parametrize("wd", [WD, 0.0])
def test_lightning_bolts(wd):
    hp = hyperparams("lightning_bolts", lr=LR, momentum=M, weight_decay=wd, dampening=0.2)
    args = (LR, M, wd, 1e-3, 1e-8)
    check(run(hp), two_steps_copy(sm.bolts, W0, GW, *args, d=0.2),
          two_steps_copy(sm.bolts, B0, GB, *args, d=0.2))


@pytest.mark.parametrize("nesterov, dampening", [(False, 0.1), (True, 0.0)])
def test_pytorch_optimizer(nesterov, dampening):
    hp = hyperparams("pytorch_optimizer", lr=LR, weight_decay=WD, dampening=dampening, nesterov=nesterov)
    args = (LR, 0.9, dampening, WD, 1e-3)
    check(run(hp), two_steps(sm.pytorch_optimizer, W0, GW, *args, 2, nesterov=nesterov),
          two_steps(sm.pytorch_optimizer, B0, GB, *args, 1, nesterov=nesterov))


def test_pytorch_optimizer_maximize():
    hp = hyperparams("pytorch_optimizer", lr=LR, weight_decay=WD, maximize=True)
    args = (LR, 0.9, 0.0, WD, 1e-3)
    ew = two_steps(sm.pytorch_optimizer, W0, GW, *args, 2, maximize=True)
    check(run(hp), ew, two_steps(sm.pytorch_optimizer, B0, GB, *args, 1, maximize=True))
    minimized = run(hp.replace(maximize=False), gw=[sm.scale(g, -1.0) for g in GW],
                    gb=[sm.scale(g, -1.0) for g in GB])
    sm.assert_close(minimized[-1].params[WN], ew[-1])


def test_moco():
    hp = hyperparams("moco", lr=LR, weight_decay=WD)
    check(run(hp), two_steps(sm.moco, W0, GW, LR, 0.9, WD, 1e-3, True),
          two_steps(sm.moco, B0, GB, LR, 0.9, WD, 1e-3, False))


@pytest.mark.parametrize("flavor, adapted", [("moco", False), ("dino", True)])
def test_zero_dim_tensor_moco_excluded_dino_adapted(flavor, adapted):
    hp = hyperparams(flavor, lr=LR, weight_decay=WD)
    res = reference.step({"s": np.array(2.0)}, {"s": np.array(0.5)}, State(), hp)
    sm.assert_close(res.params["s"], sm.moco([2.0], [0.5], [0.0], LR, 0.9, WD, 1e-3, adapted)[0])


def test_dino_excludes_one_dim_and_adapts_two_dim():
    hp = hyperparams("dino", lr=LR, weight_decay=WD)
    check(run(hp), two_steps(sm.moco, W0, GW, LR, 0.9, WD, 1e-3, True),
          two_steps(sm.moco, B0, GB, LR, 0.9, WD, 1e-3, False))


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (M, False), (M, True)])
def test_holocron_ratio_outside_buffer(momentum, nesterov):
    hp = hyperparams("holocron", lr=LR, momentum=momentum, weight_decay=WD, nesterov=nesterov)
    check(run(hp), two_steps_copy(sm.holocron, W0, GW, LR, momentum, WD, nesterov=nesterov),
          two_steps_copy(sm.holocron, B0, GB, LR, momentum, WD, nesterov=nesterov))


def test_tensorlogic_names_with_b_not_adapted_but_decayed():
    hp = hyperparams("tensorlogic", lr=LR)                 # default wd 0.01, m 0.9
    check(run(hp), two_steps(sm.tensorlogic, W0, GW, LR, 0.9, 0.01, 1e-3, WN),
          two_steps(sm.tensorlogic, B0, GB, LR, 0.9, 0.01, 1e-3, BN))
    res = reference.step({"embedding": np.array([W0])}, {"embedding": np.array([GW[0]])}, State(), hp)
    sm.assert_close(res.params["embedding"], [3.0 - LR * (0.3 + 0.03), 4.0 - LR * (0.4 + 0.04)])


# Zero-norm branches (one step, no momentum, w = [[3, 4]], wd = 0.01, lr = 0.1).

def one_step(flavor, w, g, lr=LR, **kw):
    hp = hyperparams(flavor, lr=lr, **{"momentum": 0.0, "weight_decay": WD, **kw})
    return reference.step({WN: np.array([w])}, {WN: np.array([g])}, State(), hp)


@pytest.mark.parametrize("flavor, factor", [
    ("larc", 1.0),                                   # fallback drops wd: nothing moves
    ("lightning_bolts", 1.0),
    ("torchlars", 1.0 - 0.1 * 0.01),                 # r = 1, wd kept: w -= lr wd w
    ("timm", 1.0 - 0.1 * 0.01),
    ("paper", 1.0 - 0.1 * 0.01),
    ("yscv", 1.0 - 0.1 * 0.01),
    ("pytorch_optimizer", 1.0 - 0.1 * (0.001 * 5 / (0.01 * 5)) * 0.01),   # r = eta ||w|| / (wd ||w||)
    ("holocron", 1.0 - 0.1 * (5 / (0.01 * 5)) * 0.01),                    # local = 1/wd
    ("optax", 1.0 - 0.1 * (0.001 * 5 / (0.01 * 5)) * 0.01),               # combined norm ||wd w||
])
def test_zero_gradient_with_weight_decay(flavor, factor):
    res = one_step(flavor, W0, [0.0, 0.0])
    sm.assert_close(res.params[WN], [3.0 * factor, 4.0 * factor])


@pytest.mark.parametrize("flavor", ["paper", "larc", "torchlars", "timm", "lightning_bolts",
                                    "pytorch_optimizer", "holocron", "moco", "optax", "tensorlogic"])
def test_zero_weights_give_ratio_one(flavor):
    res = one_step(flavor, [0.0, 0.0], GW[0])
    sm.assert_close(res.params[WN], [-0.1 * 0.3, -0.1 * 0.4])
    assert res.trust_ratios[WN] == 1.0


def test_timm_trust_clip_also_hits_the_fallback():
    res = one_step("timm", [0.0, 0.0], GW[0], lr=2.0, larc_clip=True)
    sm.assert_close(res.params[WN], [-2.0 * 0.5 * 0.3, -2.0 * 0.5 * 0.4])     # r = min(1/lr, 1) = 0.5
    larc = one_step("larc", [0.0, 0.0], GW[0], lr=2.0)                        # LARC: clip only if valid
    sm.assert_close(larc.params[WN], [-2.0 * 0.3, -2.0 * 0.4])


# Gradient clipping before the norms (tensorlogic).

def test_tensorlogic_clip_value_is_seen_by_the_norm():
    hp = hyperparams("tensorlogic", lr=LR, grad_clip_value=0.5)
    res = reference.step({WN: np.array([W0])}, {WN: np.array([[0.6, 0.8]])}, State(), hp)
    adaptive = LR * 0.001 * 5.0 / math.sqrt(0.5)                           # ||clip(g)|| = sqrt(0.5)
    sm.assert_close(res.params[WN], [3.0 - adaptive * (0.5 + 0.03), 4.0 - adaptive * (0.5 + 0.04)])


@pytest.mark.parametrize("clip_norm, factor", [(6.5, 0.5), (13.0, 1.0), (20.0, 1.0)])
def test_global_grad_clip_norm(clip_norm, factor):
    hp = hyperparams("tensorlogic", lr=LR, grad_clip_norm=clip_norm)     # total norm sqrt(25 + 144) = 13
    params = {WN: np.array([W0]), BN: np.array(B0)}
    res = reference.step(params, {WN: np.array([[3.0, 4.0]]), BN: np.array([0.0, 12.0])}, State(), hp)
    gw, gb = [3.0 * factor, 4.0 * factor], [0.0, 12.0 * factor]
    adaptive = LR * 0.001 * 5.0 / sm.norm(gw)
    sm.assert_close(res.params[WN], [3.0 - adaptive * (gw[0] + 0.03), 4.0 - adaptive * (gw[1] + 0.04)])
    sm.assert_close(res.params[BN], [1.0 - LR * (gb[0] + 0.01), -2.0 - LR * (gb[1] - 0.02)])
