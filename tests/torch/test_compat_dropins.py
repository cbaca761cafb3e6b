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

import lars
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
                              {"params": p[2:], "weight_decay": 0.0, "always_adapt": True,
                               "trust_coeff": 0.01}],
                   None),
        "one_cycle": (dict(lr=0.1, momentum=0.9, weight_decay=1e-2, trust_clip=True), None, one_cycle),
    },
    "pytorch_optimizer": {
        "defaults": ({}, None, None),
        "nesterov_wd": (dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-3, trust_coefficient=0.02),
                        None, None),
        "dampening_maximize": (dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=1e-2, maximize=True),
                               None, None),
        "no_momentum_nesterov_noop": (dict(lr=0.05, momentum=0.0, nesterov=True, weight_decay=1e-2),
                                      None, None),
        "per_tensor_path": (dict(lr=0.05, weight_decay=1e-2, foreach=False), None, None),
        "groups": (dict(lr=0.05, nesterov=True, weight_decay=1e-2),
                   lambda p: [{"params": p[:2], "trust_coefficient": 0.05},
                              {"params": p[2:], "momentum": 0.0, "lr": 0.01}], None),
        "cosine": (dict(lr=0.05, weight_decay=1e-2, dampening=0.1), None, cosine),
        # nesterov=True is a no-op at momentum 0, but a group with momentum inherits it
        "nesterov_inherited_by_a_group": (dict(lr=0.05, momentum=0.0, nesterov=True, weight_decay=1e-2),
                                          lambda p: [{"params": p[:2], "momentum": 0.9}, {"params": p[2:]}],
                                          None),
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
# lightly's lr has no default: every case but the one without lr
CASES["lightly"] = {k: v for k, v in CASES["lightning_bolts"].items() if k != "lr_only_in_groups"}
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


# A wrong mapping is caught ------------------------------------------------------------------------
#: library -> (a neighbouring flavor, the case that must tell them apart)
NEIGHBOURS = {
    "timm": ("torchlars", "dampening_clip_lr_above_1"),  # only the clipped fallback ratio differs
    "pytorch_optimizer": ("moco", "nesterov_wd"),  # the combined denominator
    "holocron": ("timm", "momentum_wd"),
    "lightning_bolts": ("timm", "momentum_wd"),  # only weight decay on the fallback differs
}


@pytest.mark.parametrize("library", list(NEIGHBOURS))
def test_a_swapped_flavor_fails_the_comparison(library, monkeypatch):
    flavor, case = NEIGHBOURS[library]
    monkeypatch.setattr(LIBRARIES[library][0], "FLAVOR", flavor)
    assert worst(*run_both(library, case, torch.float64)) > 1e-6


def test_always_adapt_passed_through_unnegated_fails_the_comparison(monkeypatch):
    cls = lars.compat.timm.Lars
    wrong = {**cls.ARGUMENTS, "always_adapt": ("adapt_requires_weight_decay", bool)}
    monkeypatch.setattr(cls, "ARGUMENTS", wrong)
    assert worst(*run_both("timm", "always_adapt_no_wd", torch.float64)) > 1e-6


# Signatures ---------------------------------------------------------------------------------------
def signature(cls):
    return [(p.name, p.kind, p.default, type(p.default)) for p in inspect.signature(cls).parameters.values()]


@pytest.mark.parametrize("library", ["timm", "pytorch_optimizer", "holocron", "lightning_bolts"])
def test_signature_and_defaults_are_the_library_s(library):
    ours, real = LIBRARIES[library][0], LIBRARIES[library][1]()
    assert signature(ours) == signature(real)
    assert issubclass(ours, LARS)


def test_lightly_differs_from_bolts_only_by_lr_having_no_default():
    ours, lightly = signature(lars.compat.lightning_bolts.LARS), signature(compat_peers.lightly_lars())
    assert [s for s in ours if s[0] != "lr"] == [s for s in lightly if s[0] != "lr"]
    assert [s[2] for s in lightly if s[0] == "lr"] == [inspect.Parameter.empty]


# What the core cannot express ------------------------------------------------------------------
INEXPRESSIBLE = [  # (library, constructor kwargs, param-group keys, the argument named)
    ("timm", dict(trust_coeff=0.0), {}, "trust_coeff"),
    ("timm", dict(momentum=1.0), {}, "momentum"),
    ("timm", dict(eps=-1e-8), {}, "eps"),
    ("timm", {}, {"trust_coeff": 0.0}, "trust_coeff"),
    ("timm", dict(lr=torch.tensor(0.1)), {}, "lr"),
    ("pytorch_optimizer", dict(nesterov=True, dampening=0.1), {}, "nesterov"),
    ("pytorch_optimizer", dict(trust_coefficient=0.0), {}, "trust_coefficient"),
    ("pytorch_optimizer", {}, {"maximize": True}, "maximize"),  # the library ignores it there
    ("holocron", dict(momentum=1.5), {}, "momentum"),
    ("holocron", dict(dampening=-0.5), {}, "dampening"),
    ("lightning_bolts", dict(lr=0.1, trust_coefficient=0.0), {}, "trust_coefficient"),
    ("lightning_bolts", dict(lr=0.1, dampening=2.0), {}, "dampening"),
]


@pytest.mark.parametrize(("library", "kwargs", "group", "argument"), INEXPRESSIBLE)
def test_an_argument_the_core_cannot_express_raises_naming_it(library, kwargs, group, argument):
    def params():
        return [{"params": [torch.ones(2, 2, requires_grad=True)], **group}]

    LIBRARIES[library][1]()(params(), **kwargs)  # the library itself takes it
    with pytest.raises(HyperparameterError) as raised:
        LIBRARIES[library][0](params(), **kwargs)
    assert raised.value.field == argument


def test_bolts_without_lr_needs_one_in_every_group():
    w, b = torch.ones(2, 2, requires_grad=True), torch.ones(2, requires_grad=True)
    for params in ([w, b], [{"params": [w], "lr": 0.1}, {"params": [b]}]):
        with pytest.raises(ValueError, match="lr"):
            compat_peers.bolts_lars()(params)
        with pytest.raises(HyperparameterError) as raised:
            lars.compat.lightning_bolts.LARS(params)
        assert raised.value.field == "lr"


def test_pytorch_optimizer_ignores_unknown_keywords_as_the_library_does_but_says_so():
    w = torch.ones(2, 2, requires_grad=True)
    compat_peers.pytorch_optimizer_lars()([w], betas=(0.9, 0.99))
    with pytest.warns(UserWarning, match="betas"):
        lars.compat.pytorch_optimizer.LARS([w], betas=(0.9, 0.99))


# Migrating mid-training, and everything of ours -------------------------------------------------
@pytest.mark.parametrize(("library", "case"), [("timm", "groups"), ("pytorch_optimizer", "groups"),
                                               ("holocron", "groups"), ("lightning_bolts", "simclr_groups")])
def test_continues_from_a_state_dict_saved_by_the_library(library, case):
    """The library trains 60 steps; its checkpoint (weights and state dict) goes into the
    drop-in; 60 more steps each must agree: momentum buffers mean the same in both."""
    kwargs, groups, _ = CASES[library][case]
    ours_cls, theirs_cls = LIBRARIES[library][0], LIBRARIES[library][1]()
    theirs = [p.clone().requires_grad_() for p in initial(torch.float64)]
    real = theirs_cls(groups(theirs), **kwargs)
    ours, dropin = None, None
    for t in range(120):
        if t == 60:
            ours = [p.detach().clone().requires_grad_() for p in theirs]
            dropin = ours_cls(groups(ours), **kwargs)
            dropin.load_state_dict(copy.deepcopy(real.state_dict()))
        grads = gradients(t, torch.float64)
        for tensors, opt in ((theirs, real), (ours, dropin)):
            if opt is not None:
                for p, g in zip(tensors, grads, strict=True):
                    p.grad = g.clone()
                opt.step()
    assert worst([p.detach() for p in ours], [p.detach() for p in theirs]) <= TOLERANCE[torch.float64]


def test_a_dropin_saves_loads_and_reports_trust_ratios_as_ours(tmp_path):
    params = [p.clone().requires_grad_() for p in initial(torch.float64)]
    opt = lars.compat.timm.Lars(params, lr=0.1, momentum=0.9, weight_decay=1e-2)
    for t in range(5):
        for p, g in zip(params, gradients(t, torch.float64), strict=True):
            p.grad = g
        opt.step()
    assert sorted(opt.trust_ratios()) == ["0.0", "0.1", "0.2", "0.3"]
    assert opt.trust_ratios()["0.0"] < 0.1  # adapted: far below 1 with trust_coeff 1e-3
    path = opt.save(tmp_path / "state.npz")
    other = lars.compat.timm.Lars([p.detach().clone().requires_grad_() for p in params], lr=0.1,
                                  momentum=0.9, weight_decay=1e-2)
    other.load(path)
    assert other.export_state().step == 5
    buffers = other.export_state().momentum_buffers
    for name, buffer in opt.export_state().momentum_buffers.items():
        assert (buffers[name] == buffer).all()


def test_from_file_on_a_dropin_gives_the_config_s_optimizer():
    params = [("fc.weight", torch.ones(2, 2, requires_grad=True))]  # its skip list needs names
    opt = lars.compat.timm.Lars.from_file(params, lars.default_config())
    assert type(opt) is LARS
    assert opt.hyperparameters == lars.default_config().hyperparams


@pytest.mark.parametrize("library", list(LIBRARIES))
def test_a_small_model_trains_alike_with_either(library):
    """The migration as a user does it: the same model, its own backward, 100 steps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    # Holocron has no trust coefficient (its steps are lr*||w|| long): a larger lr makes the
    # training chaotic, and any two implementations part ways at the first rounding difference.
    kwargs = dict(lr=0.002 if library == "holocron" else 0.05, momentum=0.9, weight_decay=1e-3)
    start = [p.detach().clone() for p in model.parameters()]
    models = {"ours": model, "theirs": copy.deepcopy(model)}
    optimizers = {"ours": LIBRARIES[library][0](models["ours"].parameters(), **kwargs),
                  "theirs": LIBRARIES[library][1]()(models["theirs"].parameters(), **kwargs)}
    for _ in range(100):
        for side, opt in optimizers.items():
            opt.zero_grad()
            torch.nn.functional.mse_loss(models[side](x), y).backward()
            opt.step()
    ours, theirs = ([p.detach() for p in models[side].parameters()] for side in ("ours", "theirs"))
    assert all(not torch.equal(q, p) for p, q in zip(start, theirs, strict=True)), "not trained"
    assert worst(ours, theirs) <= TOLERANCE[torch.float64]
