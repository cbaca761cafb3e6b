"""`LARS.from_file`: the optimizer a hyperparameter file describes is the one the same keyword
arguments make, its schedule runs as the core's, and Keras's own `from_config` still works."""

import re

import numpy as np
import pytest
from keras_reference import apply, gradient_stream, initial, keras_variables, max_error, run_reference, values

import lars
from lars.backends.keras import LARS, CoreSchedule

FILE = """
flavor = "timm"
lr = 0.5
momentum = 0.9
weight_decay = 1e-3
larc_clip = true
exclude_from_weight_decay = "ndim<=1"
exclude_from_adaptation = { patterns = ["bias$"] }
"""
KWARGS = dict(flavor="timm", momentum=0.9, weight_decay=1e-3, larc_clip=True,
              exclude_from_weight_decay="ndim<=1", exclude_from_adaptation=lars.Exclude.regex("bias$"))
SCHEDULED = """
flavor = "paper"
momentum = 0.9
[schedule]
kind = "warmup_polynomial"
base_lr = 2.0
warmup_steps = 2
decay_steps = 6
"""


def steps(optimizer, params, grads):
    variables = keras_variables(params)
    for g in grads:
        apply(optimizer, variables, g)
    return values(variables)


def test_from_file_is_the_optimizer_the_same_arguments_make(tmp_path):
    path = tmp_path / "lars.toml"
    path.write_text(FILE)
    params, grads = initial(), gradient_stream(4)
    by_file, by_kwargs = LARS.from_file(path), LARS(learning_rate=0.5, **KWARGS)
    assert by_file.hyperparameters == by_kwargs.hyperparameters
    ours, theirs = steps(by_file, params, grads), steps(by_kwargs, params, grads)
    for name in params:
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_the_files_schedule_drives_the_lr_as_in_the_core(tmp_path):
    path = tmp_path / "scheduled.toml"
    path.write_text(SCHEDULED)
    config = lars.load_config(path)
    optimizer = LARS.from_file(path)
    assert isinstance(optimizer._learning_rate, CoreSchedule)
    params, grads = initial(), gradient_stream(6)
    ours = steps(optimizer, params, grads)
    trajectory, _, _ = run_reference(config.hyperparams, params, grads, lrs=config.schedule)
    assert max_error(ours, trajectory[-1]) <= 1e-5


def test_keras_from_config_still_rebuilds_from_get_config(tmp_path):
    path = tmp_path / "lars.toml"
    path.write_text(FILE)
    optimizer = LARS.from_file(path, clipnorm=1.0)
    rebuilt = LARS.from_config(optimizer.get_config())
    assert rebuilt.hyperparameters == optimizer.hyperparameters
    assert rebuilt.clipnorm == 1.0


def test_only_keras_arguments_may_be_added_and_a_bad_file_is_refused(tmp_path):
    path = tmp_path / "lars.toml"
    path.write_text(FILE)
    with pytest.raises(TypeError, match=r"got \['momentum'\]: the hyperparameters come from the file"):
        LARS.from_file(path, momentum=0.5)
    path.write_text("lr = 0.1\nexclude_from_adaptation = 3\n")
    expected = rf"^{re.escape(str(path))}: exclude_from_adaptation=3 is invalid"
    with pytest.raises(lars.ConfigError, match=expected):
        LARS.from_file(path)
