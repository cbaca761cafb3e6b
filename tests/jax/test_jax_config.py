"""`from_file`: the transformation a hyperparameter file describes is the one the same
keyword arguments make, and its schedule is counted by the update count as in the core."""

import re

import jax
import numpy as np
import pytest
from jax_reference import SHAPES, assert_matches, flat, gradients, run, run_reference, tree

import lars
from lars.backends.jax import from_file
from lars.backends.jax import lars as lars_tx

FILE = """
flavor = "timm"
lr = 0.5
momentum = 0.9
weight_decay = 1e-3
larc_clip = true
exclude_from_weight_decay = "ndim<=1"
exclude_from_adaptation = { patterns = ["bias$"] }
"""
KWARGS = dict(momentum=0.9, weight_decay=1e-3, larc_clip=True, exclude_from_weight_decay="ndim<=1",
              exclude_from_adaptation=lars.Exclude.regex("bias$"))
SCHEDULED = """
flavor = "paper"
momentum = 0.9
[schedule]
kind = "warmup_polynomial"
base_lr = 2.0
warmup_steps = 2
decay_steps = 6
"""


def test_from_config_is_the_transformation_the_same_arguments_make(tmp_path):
    path = tmp_path / "lars.toml"
    path.write_text(FILE)
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 4)
    by_file, state_file = run(from_file(path), params, grads, jit=True)
    by_kwargs, state_kwargs = run(lars_tx(0.5, "timm", **KWARGS), params, grads, jit=True)
    for a, b in zip(jax.tree.leaves((by_file, state_file)), jax.tree.leaves((by_kwargs, state_kwargs)),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_files_schedule_drives_the_lr_as_in_the_core(tmp_path):
    path = tmp_path / "scheduled.toml"
    path.write_text(SCHEDULED)
    config = lars.load_config(path)
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 6)
    ours, state = run(from_file(config), params, grads, jit=True)
    expected, _, _ = run_reference(config.hyperparams, params, grads, lrs=config.schedule)
    assert_matches(ours, expected)
    assert float(state.last_lr) == config.schedule(5)
    assert flat(ours).keys() == expected.keys()


def test_a_bad_file_is_refused_before_a_transformation_is_made(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('lr = 0.1\ntrust_denominator = "combind"\n')
    expected = rf"^{re.escape(str(path))}: trust_denominator='combind' is invalid: expected one of .*" \
               r"\(did you mean 'combined'\?\)"
    with pytest.raises(lars.ConfigError, match=expected):
        from_file(path)
