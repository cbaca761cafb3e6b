"""The TOML hyperparameter file: every field reads as the core's value, every mistake is refused
with the file, the key and the allowed values, and the shipped MLPerf file is MLPerf's."""

import re
from importlib import resources

import pytest

import lars
from lars.core import schedules
from lars.core.config import Config, as_config, config_from_dict, default_config, load_config, loads_config
from lars.core.errors import ConfigError, HyperparameterError
from lars.core.hyperparams import Hyperparams
from lars.core.policy import Exclude


def write(tmp_path, text, name="lars.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# Every field ---------------------------------------------------------------------------------
#: field -> (what the file says, the value the core must hold); none of them a default.
EVERY_FIELD = {
    "lr": ("0.25", 0.25),
    "momentum": ("0.8", 0.8),
    "dampening": ("0.1", 0.1),
    "nesterov": ("true", True),
    "weight_decay": ("3e-4", 3e-4),
    "trust_coefficient": ("0.02", 0.02),
    "eps": ("1e-9", 1e-9),
    "larc_clip": ("true", True),
    "maximize": ("true", True),
    "grad_rescale": ("0.5", 0.5),
    "grad_clip_value": ("0.03", 0.03),
    "grad_clip_norm": ("2", 2),
    "trust_denominator": ('"grad"', "grad"),  # (decoupled weight decay refuses 'combined')
    "momentum_style": ('"sgd"', "sgd"),
    "buffer_start": ('"copy"', "copy"),
    "zero_norm_rule": ('"weight_and_denominator"', "weight_and_denominator"),
    "weight_decay_on_fallback": ("false", False),
    "adapt_requires_weight_decay": ("true", True),
    "larc_clip_on_fallback": ("true", True),
    "trust_ratio_max": ("0.5", 0.5),
    "decoupled_weight_decay": ("true", True),
    "clip_before_norms": ("true", True),
    "momentum_correction": ("true", True),
    "momentum_correction_tensors": ("3", 3),
    "exclude_from_weight_decay": ("{ ndims = [0, 1], patterns = ['bias$'], names = ['head.w'] }",
                                  Exclude(frozenset({0, 1}), ("bias$",), frozenset({"head.w"}))),
    "exclude_from_adaptation": ('"ndim==1"', Exclude.ndim_in(1)),
    "eps_when_zero": ("1e-7", 1e-7),
    "adaptation_exclusion_follows_weight_decay": ("true", True),
}


def test_the_table_covers_every_field():
    assert set(EVERY_FIELD) | {"flavor"} == set(Hyperparams.field_names())


@pytest.mark.parametrize("field", list(EVERY_FIELD))
def test_every_field_reads_as_the_core_value(tmp_path, field):
    text, expected = EVERY_FIELD[field]
    others = "" if field == "lr" else "lr = 0.1\n"
    nesterov_needs = "dampening = 0.0\n" if field == "nesterov" else ""
    config = load_config(write(tmp_path, f'flavor = "paper"\n{others}{nesterov_needs}{field} = {text}\n'))
    assert getattr(config.hyperparams, field) == expected
    kwargs = {"lr": 0.1, field: expected}
    assert config.hyperparams == lars.hyperparams("paper", **kwargs)


def test_a_file_with_every_field_round_trips():
    values = {f: v for f, (_, v) in EVERY_FIELD.items()}
    values["dampening"] = 0.0  # nesterov needs it
    hp = Hyperparams(flavor="timm", **values)
    config = Config(hp)
    assert loads_config(config.to_toml()).hyperparams == hp


@pytest.mark.parametrize("schedule", [
    schedules.Constant(0.3),
    schedules.WarmupPolynomial(base_lr=2.0, warmup_steps=5, decay_steps=20, end_lr=1e-3, power=1.5, offset=1),
    schedules.WarmupCosine(base_lr=0.4, warmup_steps=3, total_steps=30, end_lr=0.01),
])
def test_schedules_round_trip(schedule):
    config = Config(lars.hyperparams("optax", lr=schedule(0)), schedule)
    again = loads_config(config.to_toml())
    assert again.schedule == schedule
    assert again.hyperparams == config.hyperparams
    assert again.lr_schedule()(7) == schedule(7)


def test_a_schedule_table_sets_the_first_lr_and_no_lr_key_is_needed():
    config = loads_config('flavor = "paper"\n[schedule]\nkind = "warmup_cosine"\nbase_lr = 1.0\n'
                          "warmup_steps = 4\ntotal_steps = 10\n")
    assert config.schedule == schedules.WarmupCosine(base_lr=1.0, warmup_steps=4, total_steps=10)
    assert config.hyperparams.lr == 0.0  # schedule(0): the warm-up starts at 0


@pytest.mark.parametrize("text, rule", [
    ('"ndim<=1"', Exclude.ndim_at_most(1)),
    ('"ndim == 0"', Exclude.ndim_in(0)),
    ('"bias$"', Exclude.regex("bias$")),
    ('["bn", "bias"]', Exclude.regex("bn", "bias")),
    ("false", Exclude()),
    ("[]", Exclude()),
    ("{}", Exclude()),
    ("{ names = ['a', 'b'] }", Exclude.mask(["a", "b"])),
])
def test_exclusion_forms(text, rule):
    config = loads_config(f"lr = 0.1\nexclude_from_weight_decay = {text}\n")
    assert config.hyperparams.exclude_from_weight_decay == rule


def test_flavor_defaults_and_flavor_rules_apply_as_in_lars_hyperparams():
    assert loads_config('flavor = "mxnet"').hyperparams == lars.hyperparams("mxnet")
    # mlperf's eps 0 -> 1e-7 and tf_models' adaptation rule following weight decay
    assert loads_config('flavor = "mlperf"\nlr = 1.0\neps = 0.0').hyperparams.eps == 1e-7
    tf = loads_config('flavor = "tf_models"\nexclude_from_weight_decay = ["bias"]').hyperparams
    assert tf.adaptation_exclusion == Exclude.regex("bias")


def test_none_is_written_as_the_string_none():
    config = loads_config('flavor = "mxnet"\nmomentum_correction_tensors = "none"\ngrad_clip_value = "none"')
    assert config.hyperparams.momentum_correction_tensors is None
    assert config.hyperparams.grad_clip_value is None


def test_a_dict_and_a_config_are_accepted_where_a_file_is():
    config = config_from_dict({"flavor": "optax", "lr": 0.2})
    assert config.hyperparams == lars.hyperparams("optax", lr=0.2)
    assert as_config(config) is config
    with pytest.raises(TypeError, match="a lars Config or the path of a TOML file"):
        as_config(3)


# The shipped MLPerf ResNet-50 file -------------------------------------------------------------
def test_the_default_file_is_mlperfs_resnet50_lars():
    # The MLPerf v1.0 TF2 reference README's flags for a global batch of 2048 and ImageNet's
    # 1281167 training images; the schedule's step counts follow its PolynomialDecayWithWarmup.
    batch, epochs, warmup_epochs = 2048, 41, 5
    steps_per_epoch = 1281167 // batch
    warmup_steps = warmup_epochs * steps_per_epoch
    decay_steps = epochs * steps_per_epoch - warmup_steps + 1
    config = default_config()
    assert config.schedule == schedules.WarmupPolynomial(
        base_lr=8.5, warmup_steps=warmup_steps, decay_steps=decay_steps, end_lr=1e-4, power=2.0)
    assert config.hyperparams == lars.hyperparams("mlperf", lr=0.0, momentum=0.9, weight_decay=2e-4, eps=0.0)
    assert config.hyperparams.eps == 1e-7  # MLPerf TF2's `epsilon or 1e-7`
    assert config.lr_schedule()(warmup_steps) == 8.5
    assert config.lr_schedule()(warmup_steps + decay_steps) == pytest.approx(1e-4)


def test_the_default_file_is_package_data_and_loads_by_path():
    path = resources.files("lars").joinpath("configs").joinpath("mlperf_resnet50.toml")
    assert path.is_file()
    with resources.as_file(path) as real:
        assert load_config(real).hyperparams == default_config().hyperparams


# Errors: the file, the key, the allowed values -------------------------------------------------
@pytest.mark.parametrize("text, key, value, allowed", [
    # unknown keys, with the closest known one
    ("lr = 0.1\nmomentun = 0.9", "momentun", 0.9, "did you mean 'momentum'?"),
    ("[schedule]\nkind = 'constant'\nlrr = 0.1", "schedule.lrr", 0.1, "did you mean 'lr'?"),
    ("lr = 0.1\nexclude_from_adaptation = { ndim = [1] }", "exclude_from_adaptation.ndim", [1],
     "did you mean 'ndims'?"),
    # wrong types
    ('lr = 0.1\nmomentum = "0.9"', "momentum", "0.9", "a finite number in [0, 1)"),
    ("lr = 0.1\nnesterov = 1", "nesterov", 1, "True or False"),
    ("[schedule]\nkind = 'warmup_polynomial'\nbase_lr = 1.0\nwarmup_steps = 2.5\ndecay_steps = 9",
     "schedule.warmup_steps", 2.5, "an int >= 0"),
    ("lr = 0.1\nexclude_from_weight_decay = { ndims = ['1'] }", "exclude_from_weight_decay.ndims", ["1"],
     "a list of ints >= 0"),
    ("lr = 0.1\nexclude_from_weight_decay = true", "exclude_from_weight_decay", True, "'ndim<=N'"),
    ("lr = 0.1\nschedule = 3", "schedule", 3, "a [schedule] table"),
    # invalid values
    ("lr = 0.1\nmomentum = 1.0", "momentum", 1.0, "a finite number in [0, 1)"),
    ("lr = -1", "lr", -1, "a finite number in [0, inf)"),
    ('flavor = "mlperff"\nlr = 1', "flavor", "mlperff", "did you mean 'mlperf'?"),
    ('lr = 0.1\ntrust_denominator = "splitt"', "trust_denominator", "splitt", "did you mean 'split'?"),
    ("lr = 0.1\ngrad_clip_norm = 0", "grad_clip_norm", 0, '"none" (no clipping) or a finite number > 0'),
    ("lr = 0.1\nnesterov = true\nmomentum = 0.0", "nesterov", True, "nesterov needs momentum > 0"),
    ("lr = 0.1\nexclude_from_adaptation = { ndims = [-1] }", "exclude_from_adaptation", {"ndims": [-1]},
     "an int >= 0"),
    ('lr = 0.1\nexclude_from_adaptation = ["("]', "exclude_from_adaptation", ["("],
     "not a regular expression"),
    ("[schedule]\nkind = 'cosine'", "schedule.kind", "cosine", "'warmup_cosine'"),
    ("[schedule]\nkind = 'warmup_cosine'\nbase_lr = 1.0", "schedule.warmup_steps", None,
     "needs warmup_steps, total_steps"),
    ("lr = 0.1\n[schedule]\nkind = 'constant'\nlr = 0.2", "lr", 0.1, "no top-level lr when a [schedule]"),
    ('flavor = "paper"', "lr", None, "flavor 'paper' has no default"),
])
def test_every_mistake_names_the_file_the_key_and_what_is_allowed(tmp_path, text, key, value, allowed):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert isinstance(err, HyperparameterError) and isinstance(err, ValueError)
    assert err.source == str(path) and err.field == key
    message = str(err)
    assert message.startswith(f"{path}: {key}=")
    assert allowed in message, message
    if "invalid: exclusion" not in message:
        assert message.startswith(f"{path}: {key}={value!r} is invalid: expected ")


def test_a_file_that_is_not_toml_or_not_there(tmp_path):
    broken = write(tmp_path, "lr = [0.1")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(broken))}: is not valid TOML \("):
        load_config(broken)
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(missing))}: cannot be read"):
        load_config(missing)
    with pytest.raises(ConfigError, match=r"^<string>: is not valid TOML"):
        loads_config("= 1")


def test_a_rule_with_a_callable_cannot_be_written_to_a_file():
    hp = lars.hyperparams("paper", lr=0.1, exclude_from_adaptation=lambda name, shape: False)
    with pytest.raises(ConfigError, match=r"exclude_from_adaptation=.* a rule without a callable"):
        Config(hp).to_toml()
