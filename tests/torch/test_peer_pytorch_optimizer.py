"""The `pytorch_optimizer` flavor against the installed `pytorch_optimizer.LARS` (4.1.0).

Both optimizers start from identical tensors and see identical gradient streams (fresh tensors
every step, one copy per optimizer: the peer overwrites `p.grad` in place). The peer gives
tensors with ndim <= 1 no weight decay and no trust ratio, starts its buffer at zero, applies
dampening from the first step and has no eps; the flavor must follow it for 100+ steps.
"""

import pytest
import pytorch_optimizer
import torch

from lars.backends.torch import LARS

SHAPES = {"conv": (4, 3, 3, 3), "fc": (5, 6), "bias": (5,), "scalar": ()}
STEPS = 120
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
PATHS = {"default": {}, "foreach": {"foreach": True}, "per_tensor": {"foreach": False}}
CONFIGS = {
    "plain": dict(momentum=0.9, weight_decay=0.0, dampening=0.0, nesterov=False),
    "nesterov_wd": dict(momentum=0.9, weight_decay=5e-3, dampening=0.0, nesterov=True),
    "dampening_wd": dict(momentum=0.8, weight_decay=1e-2, dampening=0.3, nesterov=False),
}


def initial(dtype):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES.values()]


def gradients(t, dtype):
    gen = torch.Generator().manual_seed(1000 + t)
    # Different scales per tensor so the ratios differ; occasionally a step's gradient is 10x.
    scale = 10.0 if t % 17 == 0 else 1.0
    return [scale * (i + 1) * torch.randn(s, generator=gen, dtype=torch.float64).to(dtype)
            for i, s in enumerate(SHAPES.values())]


def relative_error(ours, ref):
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def run_both(dtype, config, path, steps=STEPS, lrs=None, maximize=False):
    ours = [p.clone().requires_grad_() for p in initial(dtype)]
    peer = [p.clone().requires_grad_() for p in initial(dtype)]
    common = dict(lr=0.05, trust_coefficient=0.02, maximize=maximize, **config)
    opt = LARS(ours, flavor="pytorch_optimizer", **common, **PATHS[path])
    ref = pytorch_optimizer.LARS(peer, **common)
    for t in range(steps):
        if lrs is not None:
            opt.set_lr(lrs(t))
            for group in ref.param_groups:
                group["lr"] = lrs(t)
        grads = gradients(t, dtype)
        for p, q, g in zip(ours, peer, grads, strict=True):
            p.grad = g.clone()
            q.grad = g.clone()
        opt.step()
        ref.step()
    return ours, peer


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_matches_pytorch_optimizer_for_120_steps(dtype, config, path):
    ours, peer = run_both(dtype, CONFIGS[config], path)
    for name, p, q in zip(SHAPES, ours, peer, strict=True):
        assert p.dtype == dtype
        assert not torch.equal(q, initial(dtype)[list(SHAPES).index(name)]), "the peer did not move"
        assert relative_error(p.detach(), q.detach()) <= TOLERANCE[dtype], name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_matches_with_a_changing_learning_rate_and_maximize(dtype):
    ours, peer = run_both(dtype, CONFIGS["dampening_wd"], "default", steps=100,
                          lrs=lambda t: 0.05 * (1 + t) / 100, maximize=True)
    for name, p, q in zip(SHAPES, ours, peer, strict=True):
        assert relative_error(p.detach(), q.detach()) <= TOLERANCE[dtype], name


def test_low_rank_tensors_get_plain_sgd_momentum():
    """The peer's documented rule, checked by formula: ndim <= 1 tensors step as SGD, no wd."""
    ours, _ = run_both(torch.float64, CONFIGS["dampening_wd"], "default", steps=3)
    m, d, lr = 0.8, 0.3, 0.05
    for index in (2, 3):  # bias, scalar
        w, buf = initial(torch.float64)[index], torch.zeros(())
        for t in range(3):
            buf = m * buf + (1 - d) * gradients(t, torch.float64)[index]
            w = w - lr * buf
        assert relative_error(ours[index].detach(), w) <= 1e-12


def test_the_peer_differs_from_the_paper_flavor():
    """The comparison above can fail: another flavor with the same numbers does not match."""
    dtype = torch.float64
    ours = [p.clone().requires_grad_() for p in initial(dtype)]
    peer = [p.clone().requires_grad_() for p in initial(dtype)]
    common = dict(lr=0.05, trust_coefficient=0.02, **CONFIGS["dampening_wd"])
    opt = LARS(ours, flavor="paper", **common)
    ref = pytorch_optimizer.LARS(peer, **common)
    for t in range(5):
        for p, q, g in zip(ours, peer, gradients(t, dtype), strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    assert max(relative_error(p.detach(), q.detach()) for p, q in zip(ours, peer, strict=True)) > 1e-3
