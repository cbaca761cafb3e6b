"""Bad input to the torch LARS (issue 17): refused with a `lars.LarsError` naming what is wrong,
the value and what is allowed, before anything changes. Every refusal here is followed by a check
that the parameters, momentum buffers, step counts and learning rates are byte-identical to what
they were: a step, a `load_state_dict`, an `import_state` or a `load` happens completely or not
at all."""

import copy

import numpy as np
import pytest
import torch

import lars
from lars.backends.torch import LARS

#: The refusal of an integer or complex tensor, worded the same in every adapter.
NOT_FLOATING = ("{kind} {name!r} has dtype {dtype}: LARS steps real floating-point tensors only "
                "(float16, bfloat16, float32, float64), not integer or complex ones")


def model(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(shape, dtype=dtype)) for shape in [(4, 3), (3,), (2, 2)]]


def stepped(params, steps=2, **options):
    """An optimizer that has taken `steps` steps, so that it has buffers, step counts and a last lr."""
    names = ["w", "b", "last"][:len(params)]
    opt = LARS([{"params": params, "param_names": names}], lr=0.1, momentum=0.9, **options)
    for t in range(steps):
        for p in params:
            p.grad = torch.full_like(p, 0.1 * (t + 1))
        opt.step()
    return opt


def snapshot(opt, params):
    """Everything a refusal must leave as it was, copied."""
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def assert_identical(before, opt, params):
    weights, state_dict = before
    for old, p in zip(weights, params, strict=True):
        assert p.dtype == old.dtype and torch.equal(p.detach(), old)
    assert_same(copy.deepcopy(opt.state_dict()), state_dict)


def assert_same(a, b):
    """Equal, tensors byte for byte (dtype, shape and bits), NaN included."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.numpy().tobytes() == b.numpy().tobytes()
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b or (a != a and b != b), (a, b)


# load_state_dict ----------------------------------------------------------------------------------
def edited(state_dict, edit):
    out = copy.deepcopy(state_dict)
    edit(out)
    return out


def drop(key):
    return lambda sd: sd["param_groups"][0].pop(key)


def put_group(key, value):
    return lambda sd: sd["param_groups"][0].__setitem__(key, value)


def put_state(index, key, value):
    return lambda sd: sd["state"][index].__setitem__(key, value)


BAD_STATE_DICTS = {  # (edit, the error, words the message must have)
    "a group without eps": (drop("eps"), lars.StateError, ["group 0", "'eps'"]),
    "a group that is not a dict": (lambda sd: sd["param_groups"].__setitem__(0, "x"), lars.StateError,
                                   ["group 0", "'x'"]),
    "a group with an unknown key": (put_group("lr_decay", 0.5), lars.StateError, ["group 0", "'lr_decay'"]),
    "a group of another flavor": (put_group("flavor", "timm"), lars.HyperparameterError,
                                  ["flavor='timm'", "'paper'"]),
    "a group with foreach='yes'": (put_group("foreach", "yes"), lars.HyperparameterError,
                                   ["foreach='yes'", "None, True or False"]),
    "a group with a negative momentum": (put_group("momentum", -0.5), lars.HyperparameterError,
                                         ["momentum=-0.5"]),
    "step='x'": (put_state(2, "step", "x"), lars.StateError, ["step='x'", "parameter 2", "int >= 0"]),
    "step=-1": (put_state(2, "step", -1), lars.StateError, ["step=-1"]),
    "step=2.7": (put_state(2, "step", 2.7), lars.StateError, ["step=2.7"]),
    "last_lr=nan": (put_state(2, "last_lr", float("nan")), lars.StateError, ["last_lr=nan", "finite"]),
    "an integer buffer": (put_state(2, "momentum_buffer", torch.zeros(2, 2, dtype=torch.int64)),
                          lars.StateError, ["momentum_buffer", "parameter 2", "int64"]),
    "a buffer that is not a tensor": (put_state(2, "momentum_buffer", "abc"), lars.StateError,
                                      ["momentum_buffer", "'abc'"]),
    "an unknown state key": (put_state(2, "exp_avg", torch.zeros(2, 2)), lars.StateError, ["'exp_avg'"]),
}


@pytest.mark.parametrize("case", list(BAD_STATE_DICTS))
def test_a_bad_state_dict_is_refused_before_any_change(case):
    edit, error, words = BAD_STATE_DICTS[case]
    params = model()
    opt = stepped(params)
    bad = edited(opt.state_dict(), edit)
    before = snapshot(opt, params)
    with pytest.raises(error) as refused:
        opt.load_state_dict(bad)
    for word in words:
        assert word in str(refused.value)
    assert_identical(before, opt, params)
    opt.step()  # and the optimizer still works


def test_an_sgd_state_dict_is_refused_naming_what_lars_needs():
    params = model()
    opt = stepped(params)
    before = snapshot(opt, params)
    with pytest.raises(lars.StateError, match="group 0") as refused:
        opt.load_state_dict(torch.optim.SGD(params, lr=0.1, momentum=0.9).state_dict())
    assert "'trust_coefficient'" in str(refused.value) and "'differentiable'" in str(refused.value)
    assert_identical(before, opt, params)


def test_a_good_state_dict_still_loads_and_continues():
    params = model()
    opt = stepped(params)
    saved, weights = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params]
    opt.step()
    after = [p.detach().clone() for p in params]
    for p, w in zip(params, weights, strict=True):
        p.data.copy_(w)
    opt.load_state_dict(saved)
    opt.step()
    for p, w in zip(params, after, strict=True):
        assert torch.equal(p.detach(), w)


# The constructor and param groups -----------------------------------------------------------------
@pytest.mark.parametrize(("option", "value", "allowed"), [
    ("master_weights", "no", "True or False"),
    ("master_weights", None, "True or False"),
    ("foreach", "yes", "None, True or False"),
    ("fused", 1, "None, True or False"),
])
def test_implementation_options_are_validated(option, value, allowed):
    with pytest.raises(lars.HyperparameterError) as refused:
        LARS(model(), lr=0.1, **{option: value})
    assert str(refused.value) == f"{option}={value!r} is invalid: expected {allowed}"


def test_a_param_group_takes_what_the_constructor_takes():
    params = model()
    opt = stepped(params[:2])
    before_groups = len(opt.param_groups)
    extra = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(lars.HyperparameterError) as constructor:
        LARS([extra], lr=torch.tensor(0.1))
    with pytest.raises(lars.HyperparameterError) as group:
        opt.add_param_group({"params": [extra], "lr": torch.tensor(0.1)})
    assert str(group.value) == str(constructor.value)
    with pytest.raises(lars.HyperparameterError, match="foreach='yes'"):
        opt.add_param_group({"params": [extra], "foreach": "yes"})
    assert len(opt.param_groups) == before_groups


# Integer and complex parameters -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64])
def test_an_integer_or_complex_parameter_is_refused_with_one_message(dtype):
    params = model()
    opt = stepped(params)
    odd = torch.zeros(3, dtype=dtype)  # as a frozen integer tensor someone gave a gradient
    odd.grad = torch.ones(3, dtype=dtype)
    opt.add_param_group({"params": [odd], "param_names": ["odd"]})
    for p in params:
        p.grad = torch.ones_like(p)
    before = snapshot(opt, params)
    with pytest.raises(lars.LarsError) as refused:
        opt.step()
    assert isinstance(refused.value, TypeError)
    name = str(dtype).removeprefix("torch.")
    assert str(refused.value) == NOT_FLOATING.format(kind="parameter", name="odd", dtype=name)
    assert_identical(before, opt, params)
    assert torch.equal(odd, torch.zeros(3, dtype=dtype))


def test_an_integer_parameter_without_a_gradient_is_left_alone():
    """As torch's SGD and the reference do with any tensor that has no gradient."""
    params = model()
    frozen = torch.arange(3)
    opt = LARS([*params, frozen], lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.equal(frozen, torch.arange(3))


# Transactions: a failure at the last tensor leaves the first ones untouched -----------------------
def wrong_shape_gradient(opt, params):
    params[-1].grad.data = torch.ones(5)  # `.data` gets past autograd's own check


def complex_gradient(opt, params):
    params[-1].grad.data = torch.ones(2, 2, dtype=torch.complex64)


def wrong_dtype_buffer(opt, params):
    opt.state[params[-1]]["momentum_buffer"] = torch.zeros(2, 2, dtype=torch.float64)


def wrong_shape_buffer(opt, params):
    opt.state[params[-1]]["momentum_buffer"] = torch.zeros(4)


@pytest.mark.parametrize("inject", [wrong_shape_gradient, complex_gradient, wrong_dtype_buffer,
                                    wrong_shape_buffer])
@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"foreach": False}])
def test_a_step_that_fails_at_the_last_tensor_changes_nothing(inject, path):
    params = model()
    opt = stepped(params, **path)
    for p in params:
        p.grad = torch.ones_like(p)
    inject(opt, params)
    before = snapshot(opt, params)
    with pytest.raises(lars.LarsError, match="'last'"):
        opt.step()
    assert_identical(before, opt, params)


def test_bad_gradients_are_refused_as_the_jax_adapter_refuses_them():
    params = model()
    opt = stepped(params)
    for p in params:
        p.grad = torch.ones_like(p)
    complex_gradient(opt, params)
    with pytest.raises(lars.ShapeError) as refused:
        opt.step()
    assert str(refused.value) == NOT_FLOATING.format(kind="gradient", name="last", dtype="complex64")
    wrong_shape_gradient(opt, params)
    with pytest.raises(lars.ShapeError) as refused:
        opt.step()
    assert str(refused.value) == "gradient 'last' has shape (5,), but the parameter has shape (2, 2)"


def neutral(opt, **changes):
    state = opt.export_state()
    return lars.State(**{"step": state.step, "last_lr": state.last_lr,
                         "momentum_buffers": dict(state.momentum_buffers)} | changes)


BAD_IMPORTS = {  # a state whose last buffer is bad, or whose header values are
    "a string buffer": (lambda s: {"momentum_buffers": {**s.momentum_buffers,
                                                        "last": np.array([["a", "b"]] * 2)}},
                        ["'last'", "<U1"]),
    "a complex buffer": (lambda s: {"momentum_buffers": {**s.momentum_buffers,
                                                         "last": np.ones((2, 2), np.complex64)}},
                         ["'last'", "complex64"]),
    "last_lr=nan": (lambda s: {"last_lr": float("nan")}, ["last_lr=nan"]),
    "last_lr=-1": (lambda s: {"last_lr": -1.0}, ["last_lr=-1.0"]),
}


@pytest.mark.parametrize("case", list(BAD_IMPORTS))
def test_an_import_that_fails_at_the_last_buffer_changes_nothing(case, tmp_path):
    change, words = BAD_IMPORTS[case]
    params = model()
    opt = stepped(params)
    bad = neutral(opt, **change(opt.export_state()))
    before = snapshot(opt, params)
    with pytest.raises(lars.StateError) as refused:
        opt.import_state(bad)
    for word in words:
        assert word in str(refused.value)
    assert_identical(before, opt, params)
    try:  # the same through a file
        path = lars.save_state(tmp_path / "bad.npz", bad, opt.hyperparameters.to_dict())
    except lars.LarsError:
        return  # the core refuses to write it: there is nothing to load
    with pytest.raises(lars.StateError):
        opt.load(path)
    assert_identical(before, opt, params)


def test_import_state_of_something_else_is_refused():
    params = model()
    opt = stepped(params)
    before = snapshot(opt, params)
    with pytest.raises(lars.StateError, match=r"expected a lars\.State") as refused:
        opt.import_state(None)
    assert "None" in str(refused.value)
    assert_identical(before, opt, params)
