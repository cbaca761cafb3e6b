"""Every invalid hyperparameter is refused with an error naming the field, the value and the range."""

import math

import numpy as np
import pytest

from lars.core import (
    FLAVORS,
    Exclude,
    ExclusionError,
    HyperparameterError,
    Hyperparams,
    ShapeError,
    State,
    StateError,
    hyperparams,
    plan,
    reference,
)

CLIP = "None (no clipping) or a finite number > 0"
ALL_FLAVORS = ["paper", "mlperf", "optax", "mxnet", "tf_models", "timm", "larc", "torchlars",
               "lightning_bolts", "pytorch_optimizer", "moco", "dino", "holocron", "tensorlogic", "yscv",
               "mmpretrain", "solo_learn", "tinygrad", "tinygrad_popular", "paddle", "paddle_cpu",
               "byol", "fastai"]
NO_DEFAULT_LR = ["paper", "mlperf", "optax", "lightning_bolts", "yscv", "mmpretrain", "solo_learn", "paddle",
                 "paddle_cpu", "byol", "fastai"]


def refused(field, value, allowed_parts, **kwargs):
    """Builds paper hyperparameters with `field=value` and checks the error text."""
    with pytest.raises(HyperparameterError) as info:
        hyperparams("paper", **{"lr": 0.1, field: value, **kwargs})
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field
    text = str(err)
    assert text.startswith(f"{field}={value!r} is invalid: expected ")
    for part in allowed_parts:
        assert part in text, (part, text)
    return err


@pytest.mark.parametrize("field, value, allowed", [
    ("lr", -0.1, "[0, inf)"), ("lr", math.nan, "finite"), ("lr", math.inf, "finite"),
    ("lr", "0.1", "[0, inf)"), ("lr", True, "[0, inf)"),
    ("momentum", 1.0, "[0, 1)"), ("momentum", -0.1, "[0, 1)"),
    ("dampening", 1.5, "[0, 1]"), ("dampening", -0.5, "[0, 1]"),
    ("weight_decay", -1e-4, "[0, inf)"), ("weight_decay", math.nan, "finite"),
    ("trust_coefficient", 0.0, "(0, inf)"), ("trust_coefficient", -1e-3, "(0, inf)"),
    ("eps", -1e-8, "[0, inf)"),
    ("grad_rescale", 0.0, "(0, inf)"), ("grad_rescale", -1.0, "(0, inf)"),
    ("grad_clip_value", 0.0, CLIP), ("grad_clip_value", -1.0, CLIP),
    ("grad_clip_norm", 0.0, CLIP), ("grad_clip_norm", -2.0, CLIP),
])
def test_numbers_out_of_range(field, value, allowed):
    err = refused(field, value, [allowed, "a finite number"])
    assert err.value is value


@pytest.mark.parametrize("field", ["trust_denominator", "momentum_style", "buffer_start", "zero_norm_rule"])
def test_unknown_axis_value_lists_the_allowed_ones(field):
    allowed = {
        "trust_denominator": ["split", "combined", "grad", "update"],
        "momentum_style": ["heavy_ball", "sgd", "ratio_outside"],
        "buffer_start": ["zero", "copy"],
        "zero_norm_rule": ["weight_and_grad", "weight_and_denominator"],
    }[field]
    refused(field, "bogus", ["one of"] + [repr(v) for v in allowed])


@pytest.mark.parametrize("field", ["nesterov", "larc_clip", "maximize", "weight_decay_on_fallback",
                                   "adapt_requires_weight_decay", "larc_clip_on_fallback",
                                   "clip_before_norms", "momentum_correction"])
@pytest.mark.parametrize("value", [1, "yes", None])
def test_flags_must_be_bool(field, value):
    refused(field, value, ["True or False"])


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_momentum_correction_tensors(value):
    refused("momentum_correction_tensors", value, ["int >= 1"])


@pytest.mark.parametrize("momentum, dampening", [(0.0, 0.0), (0.9, 0.1)])
def test_nesterov_needs_momentum_and_no_dampening(momentum, dampening):
    refused("nesterov", True, ["momentum > 0", "dampening == 0"], momentum=momentum, dampening=dampening)


def test_update_denominator_needs_ratio_outside():
    refused("trust_denominator", "update", ["ratio_outside"], momentum_style="sgd")
    hp = hyperparams("paper", lr=0.1, trust_denominator="update", momentum_style="ratio_outside")
    assert hp.trust_denominator == "update"


def test_unknown_field_lists_known_fields():
    with pytest.raises(HyperparameterError) as info:
        hyperparams("paper", lr=0.1, learning_rate=0.1)
    assert info.value.field == "learning_rate"
    for known in Hyperparams.field_names():
        assert known in str(info.value)


def test_unknown_flavor_lists_every_flavor():
    with pytest.raises(HyperparameterError) as info:
        hyperparams("adamw", lr=0.1)
    assert info.value.field == "flavor" and "'adamw'" in str(info.value)
    for name in ALL_FLAVORS:
        assert name in str(info.value)
    assert sorted(FLAVORS) == sorted(ALL_FLAVORS)


@pytest.mark.parametrize("flavor", NO_DEFAULT_LR)
def test_lr_required_where_the_implementation_has_no_default(flavor):
    with pytest.raises(HyperparameterError) as info:
        hyperparams(flavor)
    assert info.value.field == "lr" and flavor in str(info.value)
    assert hyperparams(flavor, lr=0.2).lr == 0.2


def test_replace_and_with_lr_validate_and_leave_the_original():
    hp = hyperparams("paper", lr=0.1)
    with pytest.raises(HyperparameterError, match=r"lr=-1\.0 is invalid"):
        hp.with_lr(-1.0)
    with pytest.raises(HyperparameterError, match=r"momentum=1\.0 is invalid"):
        hp.replace(momentum=1.0)
    with pytest.raises(HyperparameterError, match="unknown_field"):
        hp.replace(unknown_field=1)
    assert hp.lr == 0.1 and hp.momentum == 0.9
    new = hp.with_lr(0.5)
    assert new.lr == 0.5 and hp.lr == 0.1 and new.replace(lr=0.1) == hp


def test_failing_step_leaves_inputs_unchanged():
    hp = hyperparams("paper", lr=0.1)
    w, v = np.array([[3.0, 4.0]]), np.array([[0.5, -0.5]])
    params, state = {"w": w}, State(3, 0.1, {"w": v})
    with pytest.raises(ShapeError, match="unknown"):
        reference.step(params, {"w": np.ones((1, 2)), "ghost": np.ones(2)}, state, hp)
    np.testing.assert_array_equal(w, [[3.0, 4.0]])
    np.testing.assert_array_equal(state.momentum_buffers["w"], [[0.5, -0.5]])
    assert list(params) == ["w"] and state.step == 3


@pytest.mark.parametrize("grad, buffer", [
    (np.ones(2), None),              # would broadcast over the (1, 2) weight
    (np.ones((3, 1)), None),         # would broadcast to a (3, 2) weight
    (np.ones((1, 2)), np.ones(2)),   # a buffer of another shape
])
def test_shape_mismatch_is_refused_before_anything_changes(grad, buffer):
    hp = hyperparams("paper", lr=0.1)
    w = np.array([[3.0, 4.0]])
    state = State(1, 0.1, {} if buffer is None else {"w": buffer})
    with pytest.raises((ShapeError, StateError), match="shape"):
        reference.step({"w": w}, {"w": grad}, state, hp)
    np.testing.assert_array_equal(w, [[3.0, 4.0]])


# Flavor defaults: the table of section 2 of the spec (lr None = required).
DEFAULTS = {  # lr, momentum, dampening, weight_decay, trust_coefficient, eps
    "paper": (None, 0.9, 0.0, 1e-4, 1e-3, 0.0),
    "mlperf": (None, 0.9, 0.0, 1e-4, 1e-3, 1e-7),
    "optax": (None, 0.9, 0.0, 0.0, 1e-3, 0.0),
    "mxnet": (0.01, 0.0, 0.0, 0.0, 1e-3, 0.0),
    "tf_models": (0.01, 0.9, 0.0, 0.0, 1e-3, 0.0),
    "timm": (1.0, 0.0, 0.0, 0.0, 1e-3, 1e-8),
    "larc": (1e-3, 0.0, 0.0, 0.0, 0.02, 1e-8),
    "torchlars": (1e-3, 0.0, 0.0, 0.0, 1e-3, 1e-8),
    "lightning_bolts": (None, 0.0, 0.0, 0.0, 1e-3, 1e-8),
    "pytorch_optimizer": (1e-3, 0.9, 0.0, 0.0, 1e-3, 0.0),
    "moco": (0.0, 0.9, 0.0, 0.0, 1e-3, 0.0),
    "dino": (0.0, 0.9, 0.0, 0.0, 1e-3, 0.0),
    "holocron": (1e-3, 0.0, 0.0, 0.0, 1.0, 0.0),
    "tensorlogic": (1e-3, 0.9, 0.0, 0.01, 1e-3, 0.0),
    "yscv": (None, 0.0, 0.0, 0.0, 1e-3, 0.0),
    "mmpretrain": (None, 0.0, 0.0, 0.0, 1e-3, 1e-8),
    "solo_learn": (None, 0.0, 0.0, 0.0, 1e-3, 1e-8),  # torch SGD's defaults, the wrapper's eta, eps
    "tinygrad": (1e-3, 0.9, 0.0, 1e-4, 1e-3, 0.0),
    "tinygrad_popular": (1e-3, 0.9, 0.0, 1e-4, 1e-3, 0.0),
    # Paddle requires momentum; lars_weight_decay 0.0005, lars_coeff 0.001, epsilon 0
    "paddle": (None, 0.9, 0.0, 5e-4, 1e-3, 0.0),
    "paddle_cpu": (None, 0.9, 0.0, 5e-4, 1e-3, 0.0),
    "byol": (None, 0.9, 0.0, 0.0, 1e-3, 0.0),  # lars(learning_rate, weight_decay=0., momentum=0.9, eta=0.001)
    "fastai": (None, 0.9, 0.0, 0.0, 0.02, 1e-8),  # Larc(params, lr, mom=0.9, trust_coeff=0.02, eps=1e-8)
}


@pytest.mark.parametrize("flavor", ALL_FLAVORS)
def test_flavor_defaults_match_the_spec_table(flavor):
    lr, m, d, wd, eta, eps = DEFAULTS[flavor]
    hp = hyperparams(flavor) if lr is not None else hyperparams(flavor, lr=0.25)
    assert (hp.lr, hp.momentum, hp.dampening, hp.weight_decay, hp.trust_coefficient, hp.eps) == (
        0.25 if lr is None else lr, m, d, wd, eta, eps)
    assert hp.flavor == flavor and hp.nesterov is False and hp.maximize is False


@pytest.mark.parametrize("flavor", ALL_FLAVORS)
def test_explicit_arguments_override_flavor_defaults(flavor):
    hp = hyperparams(flavor, lr=0.3, momentum=0.5, dampening=0.25, weight_decay=0.02,
                     trust_coefficient=0.004, eps=1e-6)
    assert (hp.lr, hp.momentum, hp.dampening, hp.weight_decay, hp.trust_coefficient, hp.eps) == (
        0.3, 0.5, 0.25, 0.02, 0.004, 1e-6)


def test_larc_clip_default_on_and_overridable():
    assert hyperparams("larc").larc_clip is True
    assert hyperparams("larc", larc_clip=False).larc_clip is False


# Exclusion rules.

def test_bad_regex_is_an_exclusion_error():
    with pytest.raises(ExclusionError, match=r"'\('"):
        Exclude.regex("(")
    with pytest.raises(ExclusionError):
        hyperparams("tf_models", exclude_from_weight_decay=["bias", "(unclosed"])


def test_name_rule_without_names_is_an_exclusion_error():
    with pytest.raises(ExclusionError, match="needs parameter names"):
        Exclude.substrings("bias").excludes(None, (2,))
    with pytest.raises(ExclusionError):
        plan(hyperparams("mlperf", lr=0.1), [(None, (3, 3))])
    # shape-only rules need no names
    (tensor,) = plan(hyperparams("pytorch_optimizer"), [(None, (3,))])
    assert tensor.adapt is False and tensor.weight_decay == 0.0


@pytest.mark.parametrize("value", [42, 3.5, ["bias", 7], {"bias": True}])
def test_unusable_exclusion_value_is_a_hyperparameter_error(value):
    with pytest.raises(HyperparameterError) as info:
        hyperparams("paper", lr=0.1, exclude_from_weight_decay=value)
    assert info.value.field == "exclude_from_weight_decay" and "regex" in str(info.value)
