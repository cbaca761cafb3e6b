"""Issue 17, rows 1-8: every bad hyperparameter is refused with the core's one error,
`HyperparameterError` ("field=value is invalid: expected ..."), whichever way it comes in."""

import math

import numpy as np
import pytest

from lars import (
    ConfigError,
    Exclude,
    ExclusionError,
    HyperparameterError,
    Hyperparams,
    LarsError,
    ShapeError,
    State,
    hyperparams,
    loads_config,
    reference,
    schedules,
)

AXES = ("trust_denominator", "momentum_style", "buffer_start", "zero_norm_rule")
HUGE = 10**400  # an int no float holds


@pytest.mark.parametrize("field", AXES)
@pytest.mark.parametrize("value", [["split"], {"split": 1}, {"a"}])
def test_an_axis_given_a_list_or_dict_names_the_field(field, value):  # row 1
    with pytest.raises(HyperparameterError, match=rf"{field}=.* is invalid: expected one of"):
        hyperparams("paper", lr=0.1, **{field: value})


@pytest.mark.parametrize("field", AXES)
def test_an_axis_given_a_list_in_toml_names_the_key(field):  # row 1
    with pytest.raises(ConfigError, match=rf"<string>: {field}=\['split'\] is invalid: expected one of"):
        loads_config(f'lr = 0.1\n{field} = ["split"]\n')


@pytest.mark.parametrize("field", ["lr", "momentum", "dampening", "weight_decay", "trust_coefficient",
                                   "eps", "grad_rescale", "grad_clip_value", "grad_clip_norm",
                                   "eps_when_zero"])
def test_an_int_too_large_for_a_float_is_refused(field):  # row 2
    overrides = {"lr": 0.1, field: HUGE}
    with pytest.raises(HyperparameterError, match=rf"{field}=1000.* is invalid: expected"):
        hyperparams("paper", **overrides)


def test_an_int_too_large_for_a_float_in_a_schedule_is_refused():  # row 2
    with pytest.raises(HyperparameterError, match=r"lr=1000.* is invalid: expected a finite number"):
        schedules.Constant(HUGE)
    with pytest.raises(HyperparameterError, match=r"base_lr=1000.* is invalid"):
        schedules.WarmupCosine(HUGE, 1, 10)
    with pytest.raises(ConfigError, match=r"lr=1000.* is invalid"):
        loads_config(f"lr = {HUGE}\n".replace(str(HUGE), "1" + "0" * 400))


def test_an_unknown_flavor_is_refused_however_hyperparams_are_made():  # row 3
    good = hyperparams("paper", lr=0.1)
    attempts = [lambda: Hyperparams(flavor="nosuch"), lambda: good.replace(flavor="nosuch"),
                lambda: Hyperparams.from_dict({**good.to_dict(), "flavor": "nosuch"})]
    for attempt in attempts:
        with pytest.raises(HyperparameterError, match="flavor='nosuch' is invalid: expected one of paper"):
            attempt()


def test_from_dict_needs_a_learning_rate():  # row 4
    with pytest.raises(HyperparameterError, match="lr=None is invalid: expected a learning rate"):
        Hyperparams.from_dict({})
    assert Hyperparams.from_dict({"lr": 0.5}).lr == 0.5


@pytest.mark.parametrize("rule", [{"ndims": ["x"]}, {"ndims": 1}, {"patterns": "bias"}, {"names": "fc"},
                                  {"ndims": [True]}, {"patterns": [1]}, ["ndims"]])
def test_a_bad_exclusion_table_in_from_dict_is_refused(rule):  # row 4
    data = {**hyperparams("paper", lr=0.1).to_dict(), "exclude_from_weight_decay": rule}
    with pytest.raises(LarsError, match=r"exclude_from_weight_decay|exclusion"):
        Hyperparams.from_dict(data)


def test_a_string_is_not_read_as_a_list_of_characters():  # row 4: tuple("bias") is ('b', 'i', ...)
    with pytest.raises(ExclusionError, match="patterns='bias' is invalid: expected a list of"):
        Exclude.from_dict({"patterns": "bias"})


@pytest.mark.parametrize("flavor", ["timm", "larc", "mxnet", "moco"])
def test_lr_none_takes_the_flavor_default(flavor):  # row 5
    assert hyperparams(flavor, lr=None).lr == hyperparams(flavor).lr


def test_lr_none_without_a_default_still_asks_for_one():  # row 5
    with pytest.raises(HyperparameterError, match="flavor 'paper' has no default"):
        hyperparams("paper", lr=None)


@pytest.mark.parametrize("rule", ["ndim<=-1", "ndim==-2", "ndim<2", "ndim>=1", "ndim<=x", "ndim == 1.5"])
def test_a_malformed_shape_rule_is_refused_not_read_as_a_regex(rule):  # row 6
    expected = r"exclude_from_weight_decay=.* is invalid: expected .*ndim<=N"
    with pytest.raises(HyperparameterError, match=expected):
        hyperparams("paper", lr=0.1, exclude_from_weight_decay=rule)
    with pytest.raises(ConfigError, match="exclude_from_weight_decay="):
        loads_config(f'lr = 0.1\nexclude_from_weight_decay = "{rule}"\n')


@pytest.mark.parametrize("rule", ["ndim<=1000000000", "ndim<=65"])
def test_a_shape_rule_beyond_any_rank_is_refused_quickly(rule):  # row 7
    expected = r"exclude_from_weight_decay=.* is invalid: expected .*N <= 64"
    with pytest.raises(HyperparameterError, match=expected):
        hyperparams("paper", lr=0.1, exclude_from_weight_decay=rule)
    with pytest.raises(ConfigError, match="exclude_from_weight_decay="):
        loads_config(f'lr = 0.1\nexclude_from_weight_decay = "{rule}"\n')
    with pytest.raises(ExclusionError, match="max_ndim=1000000000 is invalid"):
        Exclude.ndim_at_most(10**9)


def test_the_largest_shape_rule_still_works():  # row 7: the bound refuses nothing real
    assert hyperparams("paper", lr=0.1, exclude_from_weight_decay="ndim<=64").exclude_from_weight_decay \
        .excludes("w", (1,) * 64)


@pytest.mark.parametrize("lr", [-1.0, math.nan, math.inf, "0.1", np.float64(-0.5), True, HUGE, [0.1]])
def test_reference_step_validates_lr_like_hyperparams(lr):  # row 8
    hp = hyperparams("paper", lr=0.1)
    params, grads = {"w": np.ones(3)}, {"w": np.full(3, 0.5)}
    with pytest.raises(HyperparameterError) as from_hp:
        hp.with_lr(lr)
    with pytest.raises(HyperparameterError) as from_step:
        reference.step(params, grads, State(), hp, lr=lr)
    assert str(from_step.value) == str(from_hp.value)
    np.testing.assert_array_equal(params["w"], np.ones(3))


def test_reference_step_lr_none_is_hp_lr_and_numpy_floats_pass():  # row 8: what stays allowed
    hp = hyperparams("paper", lr=0.1)
    params, grads = {"w": np.ones(3)}, {"w": np.full(3, 0.5)}
    a = reference.step(params, grads, State(), hp).params["w"]
    b = reference.step(params, grads, State(), hp, lr=np.float32(0.1)).params["w"]
    np.testing.assert_allclose(a, b, rtol=1e-7)


@pytest.mark.parametrize("pattern", ["a{99999999999}", "(" * 2000])
def test_a_regex_python_cannot_compile_is_an_exclusion_error(pattern):  # found by the fuzz test
    with pytest.raises(ExclusionError, match="is invalid: not a regular expression"):
        hyperparams("paper", lr=0.1, exclude_from_weight_decay=pattern)


@pytest.mark.parametrize("dtype", ["int64", "int8", "complex128", "bool"])
def test_the_reference_refuses_integer_and_complex_tensors_in_every_backends_words(dtype):  # row 20
    params = {"w": np.ones((2, 2), dtype=dtype), "v": np.ones(3)}
    grads = {"w": np.ones((2, 2)), "v": np.ones(3)}
    hp = hyperparams("paper", lr=0.1)
    with pytest.raises(ShapeError, match=rf"parameter 'w' has dtype {dtype}: LARS steps real floating-point"):
        reference.step(params, grads, State(), hp)
    with pytest.raises(TypeError, match=r"gradient 'w' has dtype"):
        reference.step({"w": np.ones((2, 2)), "v": np.ones(3)}, {**grads, "w": grads["w"].astype(dtype)},
                            State(), hp)
