"""`OneLARS.from_file`: the optimizer a hyperparameter file describes is the one the same
keyword arguments make, and its schedule runs through MXNet's scheduler as the core's (which
counts from 0 where MXNet counts from 1)."""

import re

import numpy as np
import pytest
from mxnet_helpers import NAMES, assert_close, gradients, run_updater, tensors

import lars
from lars.backends.mxnet import CoreLRScheduler, OneLARS
from lars.core import State, reference

FILE = """
flavor = "timm"
lr = 0.5
momentum = 0.9
weight_decay = 1e-3
larc_clip = true
exclude_from_weight_decay = "ndim<=1"
exclude_from_adaptation = { patterns = ["bias$"] }
"""
KWARGS = dict(flavor="timm", learning_rate=0.5, momentum=0.9, wd=1e-3, larc_clip=True,
              exclude_from_weight_decay="ndim<=1", exclude_from_adaptation=lars.Exclude.regex("bias$"))
SCHEDULED = """
flavor = "mxnet"
momentum = 0.9
weight_decay = 1e-4
[schedule]
kind = "warmup_polynomial"
base_lr = 2.0
warmup_steps = 2
decay_steps = 6
"""
INDEX_NAMES = dict(enumerate(NAMES))


def test_from_file_is_the_optimizer_the_same_arguments_make(tmp_path):
    path = tmp_path / "lars.toml"
    path.write_text(FILE)
    init, grads = tensors(0, np.float64), gradients(4, np.float64)
    by_file = OneLARS.from_file(path, param_idx2name=INDEX_NAMES)
    by_kwargs = OneLARS(param_idx2name=INDEX_NAMES, **KWARGS)
    assert by_file.hyperparameters == by_kwargs.hyperparameters
    for a, b in zip(run_updater(by_file, init, grads), run_updater(by_kwargs, init, grads), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_files_schedule_drives_the_lr_as_in_the_core(tmp_path):
    path = tmp_path / "scheduled.toml"
    path.write_text(SCHEDULED)
    config = lars.load_config(path)
    optimizer = OneLARS.from_file(path, param_idx2name=INDEX_NAMES)
    assert isinstance(optimizer.lr_scheduler, CoreLRScheduler)
    init, grads = tensors(0, np.float32), gradients(6, np.float32)
    ours = run_updater(optimizer, init, grads)
    params, state = {n: w.astype(np.float64) for n, w in zip(NAMES, init, strict=True)}, State()
    for t, step in enumerate(grads):
        g = {n: x.astype(np.float64) for n, x in zip(NAMES, step, strict=True)}
        result = reference.step(params, g, state, config.hyperparams, lr=config.schedule(t))
        params, state = result.params, result.state
    assert_close(ours, [params[n] for n in NAMES], tolerance=1e-5)


def test_none_is_every_tensor_not_the_flavors_default(tmp_path):
    path = tmp_path / "lars.toml"
    path.write_text('flavor = "mxnet"\nmomentum_correction_tensors = "none"\n')
    assert OneLARS.from_file(path).hyperparameters.momentum_correction_tensors is None
    optimizer = OneLARS(flavor="mxnet", momentum_correction_tensors=None)
    assert optimizer.hyperparameters.momentum_correction_tensors is None
    assert OneLARS(flavor="mxnet").hyperparameters.momentum_correction_tensors == 4


def test_only_mxnet_options_may_be_added_and_a_bad_file_is_refused(tmp_path):
    path = tmp_path / "lars.toml"
    path.write_text(FILE)
    with pytest.raises(TypeError, match=r"got \['wd'\]: the hyperparameters come from the file"):
        OneLARS.from_file(path, wd=0.1)
    path.write_text("lr = 0.1\nweight_decay = -1\n")
    expected = rf"^{re.escape(str(path))}: weight_decay=-1 is invalid: expected"
    with pytest.raises(lars.ConfigError, match=expected):
        OneLARS.from_file(path)
