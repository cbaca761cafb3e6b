"""`lars.backends.torch.LARS` as a torch optimizer: construction, validation, the step's edge cases,
its three paths, telemetry, torch.compile and mixed precision, checked against the NumPy core."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch_reference import (
    TOLERANCE,
    assert_matches,
    gradient_stream,
    relative_error,
    run_reference,
    run_torch,
    tensors,
)

import lars
from lars.backends.torch import LARS

SHAPES = [(6, 5), (5,), (3, 2, 2)]
NAMES = ["0.0", "0.1", "0.2"]  # how LARS names unnamed parameters: group.position


def leaves(dtype=torch.float64, shapes=SHAPES, seed=0):
    return [t.requires_grad_() for t in tensors(shapes, seed, dtype)]


# Construction -------------------------------------------------------------------------------------
def test_plain_parameters_follow_the_reference():
    hp = lars.hyperparams("paper", lr=0.2, weight_decay=1e-2)
    params, grads = leaves(), gradient_stream(SHAPES, 4)
    expected, _, ratios = run_reference(hp, NAMES, leaves(), grads)
    opt = LARS(params, lr=0.2, weight_decay=1e-2)
    run_torch(opt, params, grads)
    assert_matches(params, NAMES, expected, torch.float64)
    assert opt.trust_ratios().keys() == set(NAMES)
    for name, ratio in opt.trust_ratios().items():
        assert math.isclose(ratio, ratios[-1][name], rel_tol=1e-12)


def test_param_groups_override_hyperparameters_per_group():
    hp = lars.hyperparams("paper", lr=0.2, weight_decay=1e-2)
    params, grads = leaves(), gradient_stream(SHAPES, 4)
    opt = LARS([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0, "lr": 0.05}],
               lr=0.2, weight_decay=1e-2)
    run_torch(opt, params, grads)
    first, _, _ = run_reference(hp, NAMES[:1], leaves()[:1], [g[:1] for g in grads])
    rest, _, _ = run_reference(hp.replace(weight_decay=0.0, lr=0.05), NAMES[1:], leaves()[1:],
                               [g[1:] for g in grads])
    assert_matches(params[:1], NAMES[:1], first, torch.float64)
    assert_matches(params[1:], NAMES[1:], rest, torch.float64)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-2, 0.0]
    assert sorted(opt.trust_ratios()) == ["0.0", "1.0", "1.1"]


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)).double()


def test_named_parameters_name_the_trust_ratios_and_drive_exclusion():
    model = mlp()
    names = [n for n, _ in model.named_parameters()]
    initial = [p.detach().clone() for p in model.parameters()]
    opt = LARS(model.named_parameters(), lr=0.1, exclude_from_adaptation=r"bias|\b1\.",
               exclude_from_weight_decay="bias")
    grads = gradient_stream([tuple(p.shape) for p in model.parameters()], 3)
    run_torch(opt, list(model.parameters()), grads)
    assert list(opt.trust_ratios()) == names
    for name, ratio in opt.trust_ratios().items():
        excluded = name.endswith("bias") or name.startswith("1.")
        assert (ratio == 1.0) == excluded, name
    hp = lars.hyperparams("paper", lr=0.1, exclude_from_adaptation=r"bias|\b1\.",
                          exclude_from_weight_decay="bias")
    expected, _, ratios = run_reference(hp, names, initial, grads)
    assert_matches(list(model.parameters()), names, expected, torch.float64)
    for name, ratio in opt.trust_ratios().items():
        assert math.isclose(ratio, ratios[-1][name], rel_tol=1e-12)


def test_name_based_exclusion_without_names_raises():
    with pytest.raises(lars.ExclusionError, match="needs parameter names"):
        LARS(mlp().parameters(), lr=0.1, exclude_from_weight_decay="bias")
    with pytest.raises(lars.ExclusionError, match="needs parameter names"):
        LARS([{"params": list(mlp().parameters())}], lr=0.1, exclude_from_adaptation=["bias"])
    LARS(mlp().parameters(), lr=0.1, exclude_from_weight_decay="ndim<=1")  # shape rules need no names


# Validation ---------------------------------------------------------------------------------------
INVALID = [
    {"lr": -0.1}, {"lr": math.inf}, {"momentum": 1.0}, {"momentum": -0.5}, {"dampening": 1.5},
    {"weight_decay": -1e-4}, {"trust_coefficient": 0.0}, {"eps": math.nan}, {"nesterov": "yes"},
    {"grad_clip_norm": 0.0}, {"trust_denominator": "max"}, {"momentum_style": "adam"},
    {"nesterov": True, "dampening": 0.5}, {"no_such_option": 1},
]


def core_message(**overrides):
    with pytest.raises(lars.HyperparameterError) as info:
        lars.hyperparams("paper", **({"lr": 0.1} | overrides))
    return str(info.value)


@pytest.mark.parametrize("bad", INVALID, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_invalid_hyperparameters_raise_the_core_error_everywhere(bad):
    message = core_message(**bad)
    with pytest.raises(lars.HyperparameterError) as info:
        LARS(leaves(), **({"lr": 0.1} | bad))
    assert str(info.value) == message

    params = leaves()
    opt = LARS(params[:2], lr=0.1)
    groups_before = [dict(g) for g in opt.param_groups]
    with pytest.raises(lars.HyperparameterError) as info:
        opt.add_param_group({"params": params[2:], **bad})
    assert str(info.value) == message
    assert [dict(g) for g in opt.param_groups] == groups_before


@pytest.mark.parametrize("lr", [-1.0, math.nan, "0.1", None])
def test_set_lr_validates_and_leaves_every_group_unchanged(lr):
    params = leaves()
    opt = LARS([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], lr=0.1)
    with pytest.raises(lars.HyperparameterError, match="lr="):
        opt.set_lr(lr)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.05]
    opt.set_lr(0.3)
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]


def test_an_invalid_lr_written_into_a_group_fails_the_step_before_any_change():
    params = leaves()
    opt = LARS(params, lr=0.1)
    before = [p.detach().clone() for p in params]
    for p, g in zip(params, gradient_stream(SHAPES, 1)[0], strict=True):
        p.grad = g
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(lars.HyperparameterError, match=r"lr=-1\.0"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert len(opt.state) == 0


# The step -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"foreach": False}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_maximize_equals_stepping_with_the_negated_gradient(dtype, path):
    grads = gradient_stream(SHAPES, 3, dtype)
    up, down = leaves(dtype), leaves(dtype)
    run_torch(LARS(up, lr=0.1, maximize=True, **path), up, grads)
    run_torch(LARS(down, lr=0.1, **path), down, [[-g for g in gs] for gs in grads])
    assert all(torch.equal(a, b) for a, b in zip(up, down, strict=True))


def test_step_with_a_closure_returns_its_loss_and_steps():
    w = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0, trust_coefficient=0.1)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 25.0
    # g = 2w, r = 0.1*||w||/||g|| = 0.05, w -= lr*r*g = 0.1*w
    assert torch.allclose(w.detach(), torch.tensor([[2.7, 3.6]], dtype=torch.float64), rtol=1e-12)


@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"foreach": False}])
def test_a_parameter_without_gradient_is_untouched_and_gets_no_state(path):
    params = leaves(torch.float32)
    opt = LARS(params, lr=0.1, **path)
    frozen = params[1].detach().clone()
    grads = [[g[0], None, g[2]] for g in gradient_stream(SHAPES, 3, torch.float32)]
    run_torch(opt, params, grads)
    assert torch.equal(params[1], frozen)
    assert params[1] not in opt.state and params[0] in opt.state
    assert "0.1" not in opt.trust_ratios()
    hp = lars.hyperparams("paper", lr=0.1)
    expected, _, _ = run_reference(hp, NAMES, leaves(torch.float32), grads)
    assert_matches(params, NAMES, expected, torch.float32)


def test_a_sparse_gradient_raises_a_clear_error():
    embedding = nn.Embedding(10, 3, sparse=True)
    opt = LARS(embedding.named_parameters(), lr=0.1)
    embedding(torch.tensor([1, 2])).sum().backward()
    before = embedding.weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"sparse gradients .*weight"):
        opt.step()
    assert torch.equal(embedding.weight, before)


@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"foreach": False}])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_gradient_spoils_only_its_own_tensor(bad, path):
    """Documented behaviour: no check, no skipped step, as in the reference. A NaN entry makes
    ||g|| NaN, so the ratio falls back to 1; an inf entry makes ||g|| = inf and the ratio 0. Either
    way that entry of w (and of its buffer) becomes NaN and the others stay finite; from then on
    ||w|| is NaN, so that tensor is no longer adapted (ratio 1). Other tensors step normally."""
    params = leaves(torch.float32)
    grads = gradient_stream(SHAPES, 2, torch.float32)
    grads[0][0][1, 2] = bad
    opt = LARS(params, lr=0.1, **path)
    hp = lars.hyperparams("paper", lr=0.1)
    for steps in (1, 2):
        run_torch(opt, params, grads[steps - 1:steps])
        with np.errstate(invalid="ignore", over="ignore"):
            expected, _, ratios = run_reference(hp, NAMES, leaves(torch.float32), grads[:steps])
        spoiled = params[0].detach()
        assert int(spoiled.isnan().sum()) == 1 and bool(spoiled[1, 2].isnan())
        np.testing.assert_allclose(spoiled.numpy(), expected["0.0"], rtol=1e-5, equal_nan=True)
        assert_matches(params[1:], NAMES[1:], expected, torch.float32)
        assert all(p.isfinite().all() for p in params[1:])
    assert ratios[0]["0.0"] == (1.0 if math.isnan(bad) else 0.0)
    assert opt.trust_ratios()["0.0"] == ratios[1]["0.0"] == 1.0


FLAVORS = {
    "paper": dict(weight_decay=1e-2),
    "pytorch_optimizer": dict(weight_decay=1e-2, dampening=0.2),
    "timm": dict(momentum=0.9, weight_decay=1e-2),
    "larc": dict(momentum=0.9, weight_decay=1e-2),
    "holocron": dict(momentum=0.9, weight_decay=1e-2),
}


@pytest.mark.parametrize("path", [{}, {"fused": True}, {"foreach": True}, {"foreach": False}],
                         ids=["default", "fused", "foreach", "per_tensor"])
@pytest.mark.parametrize("flavor", list(FLAVORS))
def test_every_path_follows_the_reference_in_float32(flavor, path):
    hp = lars.hyperparams(flavor, lr=0.1, **FLAVORS[flavor])
    params, grads = leaves(torch.float32), gradient_stream(SHAPES, 5, torch.float32)
    opt = LARS(params, lr=0.1, flavor=flavor, **FLAVORS[flavor], **path)
    lrs = [0.1, 0.1, 0.05, 0.2, 0.1]
    run_torch(opt, params, grads, lrs=lrs.__getitem__)
    expected, _, ratios = run_reference(hp, NAMES, leaves(torch.float32), grads, lrs=lrs.__getitem__)
    assert_matches(params, NAMES, expected, torch.float32)
    for name, ratio in opt.trust_ratios().items():
        assert math.isclose(ratio, ratios[-1][name], rel_tol=1e-5), name


@pytest.mark.parametrize("flavor", ["paper", "optax", "mxnet", "tf_models", "tensorlogic", "moco"])
def test_trust_ratios_equal_the_reference_ones_at_every_step(flavor):
    hp = lars.hyperparams(flavor, lr=0.1, momentum=0.9, weight_decay=1e-2)
    names = ["fc_weight", "fc_bias", "conv_weight"]
    params, grads = leaves(), gradient_stream(SHAPES, 4)
    opt = LARS([{"params": params, "param_names": names}], lr=0.1, flavor=flavor, momentum=0.9,
               weight_decay=1e-2)
    _, _, ratios = run_reference(hp, names, leaves(), grads)
    for t, step_grads in enumerate(grads):
        run_torch(opt, params, [step_grads])
        got = opt.trust_ratios()
        assert got.keys() == ratios[t].keys()
        for name in names:
            assert math.isclose(got[name], ratios[t][name], rel_tol=1e-12), (t, name)
    assert any(r != 1.0 for r in ratios[-1].values())


def test_fused_true_refuses_what_it_cannot_compute_exactly():
    params = leaves(torch.float64)
    with pytest.raises(RuntimeError, match=r"fused=True is not possible here: .*float32"):
        run_torch(LARS(params, lr=0.1, fused=True), params, gradient_stream(SHAPES, 1))
    assert torch.equal(params[0], leaves(torch.float64)[0])
    params = leaves(torch.float32)
    opt = LARS(params, lr=0.1, nesterov=True, fused=True)
    with pytest.raises(RuntimeError, match="fused=True is not possible here: nesterov"):
        run_torch(opt, params, gradient_stream(SHAPES, 1, torch.float32))
    assert torch.equal(params[0], leaves(torch.float32)[0])
    assert all(not s for s in opt.state.values())


# torch.compile and mixed precision -------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_compiled_step_matches_the_eager_step():
    shapes = [(4, 3), (3,)]
    grads = gradient_stream(shapes, 3, torch.float32)
    eager_params = leaves(torch.float32, shapes)
    compiled_params = leaves(torch.float32, shapes)
    eager = LARS(eager_params, lr=0.1, weight_decay=1e-2)
    opt = LARS(compiled_params, lr=0.1, weight_decay=1e-2)

    @torch.compile
    def compiled_step():
        opt.step()

    for step_grads in grads:
        for p, q, g in zip(eager_params, compiled_params, step_grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        eager.step()
        compiled_step()
    for p, q in zip(eager_params, compiled_params, strict=True):
        assert relative_error(q, p.detach().numpy()) <= 1e-5
    assert not torch.equal(eager_params[0], leaves(torch.float32, shapes)[0])


@pytest.mark.parametrize("path", [{}, {"foreach": False}])
def test_bfloat16_parameters_step_with_float32_buffers(path):
    params = leaves(torch.bfloat16)
    opt = LARS(params, lr=0.1, **path)
    run_torch(opt, params, gradient_stream(SHAPES, 3, torch.bfloat16))
    for p in params:
        assert p.dtype == torch.bfloat16 and p.isfinite().all()
        assert opt.state[p]["momentum_buffer"].dtype == torch.float32
    assert not torch.equal(params[0], leaves(torch.bfloat16)[0])


@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"foreach": False}])
def test_master_weights_track_the_float32_reference(path):
    params = leaves(torch.bfloat16)
    initial32 = [p.detach().float() for p in params]
    grads = gradient_stream(SHAPES, 5, torch.bfloat16)
    opt = LARS(params, lr=0.1, weight_decay=1e-2, master_weights=True, **path)
    run_torch(opt, params, grads)
    hp = lars.hyperparams("paper", lr=0.1, weight_decay=1e-2)
    expected, _, _ = run_reference(hp, NAMES, initial32, [[g.float() for g in gs] for gs in grads])
    for name, p in zip(NAMES, params, strict=True):
        master = opt.state[p]["master_weight"]
        assert master.dtype == torch.float32 and opt.state[p]["momentum_buffer"].dtype == torch.float32
        assert relative_error(master, expected[name]) <= TOLERANCE[torch.float32]
        assert torch.equal(p, master.to(torch.bfloat16))
        rounding = 2.0 ** -8 * np.abs(expected[name])  # half an ulp of bfloat16, relative
        assert np.all(np.abs(p.detach().float().numpy() - expected[name]) <= rounding)


# Regressions of bugs found while writing these tests --------------------------------------------

def test_master_weights_step_on_the_default_path():
    w = torch.nn.Parameter(torch.randn(8, 8).to(torch.bfloat16))
    opt = LARS([w], lr=0.1, master_weights=True)
    w.grad = torch.randn(8, 8).to(torch.bfloat16)
    opt.step()
    assert opt.state[w]["master_weight"].dtype == torch.float32
    assert opt.state[w]["momentum_buffer"].dtype == torch.float32


def test_fused_refusal_changes_nothing_in_a_mixed_dtype_group():
    a = torch.nn.Parameter(torch.ones(3, 3))
    b = torch.nn.Parameter(torch.ones(3, 3, dtype=torch.float64))
    opt = LARS([a, b], lr=0.1, fused=True)
    a.grad, b.grad = torch.full((3, 3), 0.1), torch.full((3, 3), 0.1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="fused=True is not possible"):
        opt.step()
    assert torch.equal(a.detach(), torch.ones(3, 3)) and len(opt.state) == 0


def test_loaded_state_keeps_float32_buffers_and_master_of_bf16_params():
    w = torch.nn.Parameter(torch.randn(8, 8).to(torch.bfloat16))
    opt = LARS([w], lr=0.1, master_weights=True, foreach=True)
    w.grad = torch.randn(8, 8).to(torch.bfloat16)
    opt.step()
    fresh = LARS([w], lr=0.1, master_weights=True, foreach=True)
    fresh.load_state_dict(opt.state_dict())
    for key in ("master_weight", "momentum_buffer"):
        assert fresh.state[w][key].dtype == torch.float32
        assert torch.equal(fresh.state[w][key], opt.state[w][key])


@pytest.mark.parametrize("key, value", [("exclude_from_adaptation", "ndim<=1"), ("flavor", "timm")])
def test_per_group_exclusions_and_flavors_are_refused(key, value):
    a, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    with pytest.raises(lars.HyperparameterError, match=key):
        LARS([{"params": [a]}, {"params": [b], key: value}], lr=0.1)


def test_unnamed_params_in_several_groups_step():
    a, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    opt = LARS([{"params": [a]}, {"params": [b], "weight_decay": 0.0}], lr=0.1)
    a.grad, b.grad = torch.full((2, 2), 0.1), torch.full((2,), 0.1)
    opt.step()
    assert set(opt.trust_ratios()) == {"0.0", "1.0"}
