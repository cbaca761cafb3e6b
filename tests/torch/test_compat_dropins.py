"""The drop-ins of `lars.compat` against the real libraries they replace (loaded by
`compat_peers`): the same signature, and the same weights after 100+ steps over each library's
argument space, from the same initial weights and the same gradients (fresh copies for each
optimizer: Holocron and pytorch_optimizer overwrite `p.grad`).

The tensors: a conv weight, a matrix whose gradient is exactly zero every tenth step, a bias
that starts at zero and a 0-d scalar, so that every fallback branch is taken. Tolerances are
the project's: 1e-12 relative in float64, 1e-5 in float32.
"""

from __future__ import annotations

import copy
import inspect

import compat_peers
import pytest
import torch

import lars.compat.holocron
import lars.compat.lightning_bolts
import lars.compat.pytorch_optimizer
import lars.compat.timm
from lars import HyperparameterError
from lars.backends.torch import LARS

SHAPES = {"conv": (4, 3, 3, 3), "fc": (5, 6), "bias": (5,), "scalar": ()}
STEPS = 120
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])

#: drop-in name -> (our class, a loader of the real one)
LIBRARIES = {
    "timm": (lars.compat.timm.Lars, compat_peers.timm_lars),
    "pytorch_optimizer": (lars.compat.pytorch_optimizer.LARS, compat_peers.pytorch_optimizer_lars),
    "holocron": (lars.compat.holocron.LARS, compat_peers.holocron_lars),
    "lightning_bolts": (lars.compat.lightning_bolts.LARS, compat_peers.bolts_lars),
    "lightly": (lars.compat.lightning_bolts.LARS, compat_peers.lightly_lars),
}


def initial(dtype):
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES.values()]
    values[2].zero_()  # a zero-initialized bias: both norms' fallbacks on the first step
    return [v.to(dtype) for v in values]


def gradients(t, dtype):
    gen = torch.Generator().manual_seed(1000 + t)
    scale = 10.0 if t % 17 == 0 else 1.0  # now and then a step 10x larger: the ratios move
    grads = [scale * (i + 1) * torch.randn(s, generator=gen, dtype=torch.float64)
             for i, s in enumerate(SHAPES.values())]
    if t % 10 == 5:
        grads[1].zero_()  # a layer that got no gradient: the zero-gradient fallback
    return [g.to(dtype) for g in grads]


def two_groups(params, extra=None):
    """Weights and the rest (bias, scalar), the second with the library's own keys `extra`."""
    return [{"params": params[:2]}, {"params": params[2:], **(extra or {})}]


def lambda_schedule(opt):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + 0.05 * t))


def one_cycle(opt):
    """OneCycleLR also cycles each group's `momentum`, between 0.85 and 0.95."""
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=STEPS + 1)


def cosine(opt):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)


#: library -> case -> (constructor kwargs, param groups or None, scheduler or None)
CASES = {
    "timm": {
        "defaults": ({}, None, None),
        "momentum_wd": (dict(lr=0.1, momentum=0.9, weight_decay=1e-2), None, None),
        "nesterov_eps_coeff": (dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-3, eps=1e-6,
                                    trust_coeff=0.02), None, None),
        "dampening_clip_lr_above_1": (dict(lr=2.0, momentum=0.8, dampening=0.3, weight_decay=1e-2,
                                           trust_clip=True), None, None),
        "always_adapt_no_wd": (dict(lr=0.5, momentum=0.9, always_adapt=True), None, None),
        "single_tensor_path": (dict(lr=0.1, momentum=0.9, weight_decay=1e-2, foreach=False), None, None),
        "groups": (dict(lr=0.1, momentum=0.9, weight_decay=1e-2),
                   lambda p: [{"params": p[:2], "trust_clip": True},
                              {"params": p[2:], "weight_decay": 0.0, "always_adapt": True, "trust_coeff": 0.01}],
                   None),
        "one_cycle": (dict(lr=0.1, momentum=0.9, weight_decay=1e-2, trust_clip=True), None, one_cycle),
    },
    "pytorch_optimizer": {
        "defaults": ({}, None, None),
        "nesterov_wd": (dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-3, trust_coefficient=0.02),
                        None, None),
        "dampening_maximize": (dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=1e-2, maximize=True),
                               None, None),
        "no_momentum_nesterov_noop": (dict(lr=0.05, momentum=0.0, nesterov=True, weight_decay=1e-2), None, None),
        "per_tensor_path": (dict(lr=0.05, weight_decay=1e-2, foreach=False), None, None),
        "groups": (dict(lr=0.05, nesterov=True, weight_decay=1e-2),
                   lambda p: [{"params": p[:2], "trust_coefficient": 0.05},
                              {"params": p[2:], "momentum": 0.0, "lr": 0.01}], None),
        "cosine": (dict(lr=0.05, weight_decay=1e-2, dampening=0.1), None, cosine),
    },
    "holocron": {
        "defaults": ({}, None, None),
        "momentum_wd": (dict(lr=0.01, momentum=0.9, weight_decay=1e-2), None, None),
        "nesterov": (dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-3), None, None),
        "dampening": (dict(lr=0.01, momentum=0.8, dampening=0.3, scale_clip=(0.5, 2.0)), None, None),
        "groups": (dict(lr=0.01, momentum=0.9, weight_decay=1e-2),
                   lambda p: two_groups(p, {"weight_decay": 0.0, "lr": 0.02}), None),
        "lambda_lr": (dict(lr=0.01, momentum=0.9, weight_decay=1e-2), None, lambda_schedule),
    },
    "lightning_bolts": {
        "plain_sgd_without_wd": (dict(lr=0.1, momentum=0.9), None, None),
        "momentum_wd": (dict(lr=0.1, momentum=0.9, weight_decay=1e-2), None, None),
        "nesterov_eps_coeff": (dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-3, eps=1e-6,
                                    trust_coefficient=0.02), None, None),
        "dampening": (dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=1e-2), None, None),
        "simclr_groups": (dict(lr=0.1, momentum=0.9, weight_decay=1e-2),
                          lambda p: two_groups(p, {"weight_decay": 0.0}), None),
        "lr_only_in_groups": (dict(momentum=0.9, weight_decay=1e-2),
                              lambda p: [{"params": p[:2], "lr": 0.1}, {"params": p[2:], "lr": 0.05}], None),
        "one_cycle": (dict(lr=0.1, momentum=0.9, weight_decay=1e-2), None, one_cycle),
    },
}
CASES["lightly"] = {k: v for k, v in CASES["lightning_bolts"].items() if k != "lr_only_in_groups"}  # lr required
ALL_CASES = [(library, case) for library, cases in CASES.items() for case in cases]


def relative_error(ours, ref):
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def run_both(library, case, dtype, steps=STEPS, ours_cls=None):
    """Both optimizers on identical tensors and gradient streams; their final weights."""
    kwargs, groups, schedule = CASES[library][case]
    ours_cls = ours_cls or LIBRARIES[library][0]
    theirs_cls = LIBRARIES[library][1]()
    tensors = {side: [p.clone().requires_grad_() for p in initial(dtype)] for side in ("ours", "theirs")}
    optimizers = {side: cls(groups(tensors[side]) if groups else tensors[side], **kwargs)
                  for side, cls in (("ours", ours_cls), ("theirs", theirs_cls))}
    schedulers = [schedule(opt) for opt in optimizers.values()] if schedule else []
    for t in range(steps):
        grads = gradients(t, dtype)
        for side, opt in optimizers.items():
            for p, g in zip(tensors[side], grads, strict=True):
                p.grad = g.clone()
            opt.step()
        for scheduler in schedulers:
            scheduler.step()
    return [p.detach() for p in tensors["ours"]], [p.detach() for p in tensors["theirs"]]


def worst(ours, theirs):
    return max(relative_error(p, q) for p, q in zip(ours, theirs, strict=True))


@DTYPES
@pytest.mark.parametrize(("library", "case"), ALL_CASES)
def test_matches_the_real_library_for_120_steps(library, case, dtype):
    ours, theirs = run_both(library, case, dtype)
    for name, p, q, start in zip(SHAPES, ours, theirs, initial(dtype), strict=True):
        assert p.dtype == dtype
        assert not torch.equal(q, start), f"{name}: the real library did not move it"
        assert relative_error(p, q) <= TOLERANCE[dtype], name
