"""Optimizer state of the torch LARS: torch's state_dict (in this process and in a fresh one),
refusals that leave everything unchanged, the core's neutral format, and clear_state.

(Named test_torch_state.py, not test_state.py: tests/ has a test_state.py, and two test modules
of the same basename in rootdir-less test folders cannot be collected by one pytest run.)
"""

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch_reference import gradient_stream, relative_error, run_reference, run_torch, tensors

import lars
from lars.backends.torch import LARS

SHAPES = [(6, 5), (5,), (3, 2, 2)]
NAMES = ["fc.weight", "fc.bias", "conv.weight"]
LRS = [0.1, 0.2, 0.15, 0.05, 0.1, 0.3]
CASES = {
    "paper-default-fp32": ("paper", {}, torch.float32),
    "pytorch_optimizer-foreach-fp64": ("pytorch_optimizer", {"foreach": True, "dampening": 0.1},
                                       torch.float64),
    "mxnet-per_tensor-fp64": ("mxnet", {"foreach": False, "momentum": 0.9}, torch.float64),
    "timm-fused-fp32": ("timm", {"fused": True, "momentum": 0.9}, torch.float32),
}


def leaves(dtype):
    return [t.requires_grad_() for t in tensors(SHAPES, 0, dtype)]


def make(flavor, options, params, named=True):
    group = {"params": params, "param_names": NAMES} if named else {"params": params}
    return LARS([group], lr=0.1, flavor=flavor, weight_decay=1e-2, **options)


def run(opt, params, grads, start):
    run_torch(opt, params, grads, lrs=lambda t: LRS[start + t])


def uninterrupted(flavor, options, dtype, steps=6):
    params = leaves(dtype)
    run(make(flavor, options, params), params, gradient_stream(SHAPES, steps, dtype), 0)
    return params


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_round_trip_continues_bit_identically(case):
    flavor, options, dtype = CASES[case]
    grads = gradient_stream(SHAPES, 6, dtype)
    params = leaves(dtype)
    opt = make(flavor, options, params)
    run(opt, params, grads[:3], 0)
    saved = copy.deepcopy(opt.state_dict())
    resumed = [p.detach().clone().requires_grad_() for p in params]
    fresh = make(flavor, options, resumed)
    fresh.load_state_dict(saved)
    run(fresh, resumed, grads[3:], 3)
    for a, b in zip(resumed, uninterrupted(flavor, options, dtype), strict=True):
        assert torch.equal(a, b)


SCRIPT = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, sys.argv[3])
    from lars.backends.torch import LARS
    checkpoint = torch.load(sys.argv[1])
    params = [p.requires_grad_() for p in checkpoint["params"]]
    names = ["fc.weight", "fc.bias", "conv.weight"]
    opt = LARS([{"params": params, "param_names": names}], lr=0.1, flavor="pytorch_optimizer",
               weight_decay=1e-2, dampening=0.1)
    opt.load_state_dict(checkpoint["optimizer"])
    for step_grads, lr in zip(checkpoint["grads"], checkpoint["lrs"]):
        opt.set_lr(lr)
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
    torch.save([p.detach() for p in params], sys.argv[2])
""")


def test_a_saved_state_dict_continues_in_a_fresh_process(tmp_path):
    flavor, options, dtype = "pytorch_optimizer", {"dampening": 0.1}, torch.float32
    grads = gradient_stream(SHAPES, 6, dtype)
    params = leaves(dtype)
    opt = make(flavor, options, params)
    run(opt, params, grads[:3], 0)
    torch.save({"params": [p.detach() for p in params], "optimizer": opt.state_dict(),
                "grads": grads[3:], "lrs": LRS[3:]}, tmp_path / "checkpoint.pt")
    (tmp_path / "resume.py").write_text(SCRIPT)
    root = str(__import__("pathlib").Path(lars.__file__).resolve().parent.parent)
    subprocess.run([sys.executable, str(tmp_path / "resume.py"), str(tmp_path / "checkpoint.pt"),
                    str(tmp_path / "result.pt"), root], check=True, timeout=120)
    result = torch.load(tmp_path / "result.pt")
    for a, b in zip(result, uninterrupted(flavor, options, dtype), strict=True):
        assert torch.equal(a, b)


def stepped_optimizer(dtype=torch.float64, named=False):
    params = leaves(dtype)
    opt = make("paper", {}, params, named=named)
    run(opt, params, gradient_stream(SHAPES, 2, dtype), 0)
    return opt, params


def snapshot(opt):
    return copy.deepcopy(opt.state_dict())


def assert_same_snapshot(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key, entry in a["state"].items():
        assert entry.keys() == b["state"][key].keys()
        for name, value in entry.items():
            other = b["state"][key][name]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


def mutilated(kind, saved):
    if kind == "fewer_params":
        saved["param_groups"][0]["params"] = saved["param_groups"][0]["params"][:2]
        saved["state"].pop(2)
        return ValueError, "2 parameters, the optimizer has 3"
    if kind == "buffer_shape":
        saved["state"][0]["momentum_buffer"] = torch.zeros(5, 6, dtype=torch.float64)
        return lars.StateError, r"shape \(5, 6\), the parameter has \(6, 5\)"
    if kind == "invalid_hyperparameter":
        saved["param_groups"][0]["momentum"] = 1.5
        return lars.HyperparameterError, r"momentum=1\.5 is invalid"
    saved["param_groups"].append(dict(saved["param_groups"][0]))
    return ValueError, "2 param groups"


@pytest.mark.parametrize("kind", ["fewer_params", "buffer_shape", "invalid_hyperparameter", "extra_group"])
def test_loading_a_mismatched_state_dict_raises_and_changes_nothing(kind):
    opt, _ = stepped_optimizer()
    other, _ = stepped_optimizer()
    run(other, other.param_groups[0]["params"], gradient_stream(SHAPES, 1), 2)  # a different state
    saved = copy.deepcopy(other.state_dict())
    error, message = mutilated(kind, saved)
    before = snapshot(opt)
    with pytest.raises(error, match=message):
        opt.load_state_dict(saved)
    assert_same_snapshot(snapshot(opt), before)


def test_export_state_is_the_reference_state():
    params, grads = leaves(torch.float64), gradient_stream(SHAPES, 3)
    opt = make("pytorch_optimizer", {"dampening": 0.1}, params, named=True)
    run(opt, params, grads, 0)
    hp = lars.hyperparams("pytorch_optimizer", lr=0.1, weight_decay=1e-2, dampening=0.1)
    _, state, _ = run_reference(hp, NAMES, leaves(torch.float64), grads, lrs=LRS.__getitem__)
    exported = opt.export_state()
    assert (exported.step, exported.last_lr) == (3, LRS[2]) == (state.step, state.last_lr)
    assert exported.momentum_buffers.keys() == set(NAMES)
    for name, buffer in state.momentum_buffers.items():
        assert relative_error(torch.as_tensor(exported.momentum_buffers[name]), buffer) <= 1e-12


@pytest.mark.parametrize("through", ["import_state", "file"])
@pytest.mark.parametrize("flavor", ["pytorch_optimizer", "mxnet", "timm"])
def test_the_neutral_format_continues_the_same_trajectory(tmp_path, flavor, through):
    options = {"momentum": 0.9}
    grads = gradient_stream(SHAPES, 6)
    params = leaves(torch.float64)
    opt = make(flavor, options, params, named=True)
    run(opt, params, grads[:3], 0)
    resumed = [p.detach().clone().requires_grad_() for p in params]
    fresh = make(flavor, options, resumed, named=True)
    if through == "file":
        opt.save(str(tmp_path / "state.npz"))
        fresh.load(str(tmp_path / "state.npz"))
    else:
        fresh.import_state(opt.export_state())
    run(fresh, resumed, grads[3:], 3)
    for a, b in zip(resumed, uninterrupted(flavor, options, torch.float64), strict=True):
        assert relative_error(a, b.detach().numpy()) <= 1e-12


@pytest.mark.parametrize("problem", ["unknown_name", "wrong_shape"])
def test_importing_a_state_that_does_not_fit_raises_before_any_change(problem):
    opt, _ = stepped_optimizer(named=True)
    good = opt.export_state()
    bad = dict(good.momentum_buffers)
    if problem == "unknown_name":
        bad["head.weight"] = np.zeros((2, 2))
        message = r"unknown parameters \['head.weight'\]"
    else:
        bad["fc.weight"] = np.zeros((5, 6))
        message = r"'fc.weight' has shape \(5, 6\)"
    before = snapshot(opt)
    with pytest.raises(lars.StateError, match=message):
        opt.import_state(lars.State(7, 0.5, bad))
    assert_same_snapshot(snapshot(opt), before)


def test_loading_a_file_for_other_parameters_raises_before_any_change(tmp_path):
    other = LARS([{"params": [torch.zeros(6, 6, dtype=torch.float64, requires_grad=True)],
                   "param_names": ["fc.weight"]}], lr=0.1)
    other.param_groups[0]["params"][0].grad = torch.ones(6, 6, dtype=torch.float64)
    other.step()
    other.save(str(tmp_path / "other.npz"))
    opt, _ = stepped_optimizer(named=True)
    before = snapshot(opt)
    with pytest.raises(lars.StateError, match="shape"):
        opt.load(str(tmp_path / "other.npz"))
    assert_same_snapshot(snapshot(opt), before)


@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"foreach": False}])
@pytest.mark.parametrize("flavor", ["paper", "timm"])  # zero and copy buffer starts
def test_clear_state_makes_the_next_step_a_first_step(flavor, path):
    options = {"momentum": 0.9, **path}
    params = leaves(torch.float32)
    opt = make(flavor, options, params)
    run(opt, params, gradient_stream(SHAPES, 3, torch.float32), 0)
    opt.clear_state()
    assert len(opt.state) == 0 and opt.trust_ratios() == {}
    restarted = [p.detach().clone().requires_grad_() for p in params]
    fresh = make(flavor, options, restarted)
    last = gradient_stream(SHAPES, 4, torch.float32)[3:]
    run(opt, params, last, 0)
    run(fresh, restarted, last, 0)
    for a, b in zip(params, restarted, strict=True):
        assert torch.equal(a, b)
    assert opt.export_state().step == 1
