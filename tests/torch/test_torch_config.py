"""`LARS.from_config`: the optimizer a hyperparameter file describes is the one the same
keyword arguments make, and its schedule runs as the core's."""

import re

import pytest
import torch
from torch_reference import assert_matches, gradient_stream, run_reference, run_torch, tensors

import lars
from lars.backends.torch import LARS, CoreScheduler

NAMES = ["conv.weight", "fc.weight", "fc.bias"]
SHAPES = [(4, 3, 3, 3), (5, 6), (5,)]
FILE = """
flavor = "timm"
lr = 0.5
momentum = 0.9
weight_decay = 1e-3
larc_clip = true
exclude_from_weight_decay = "ndim<=1"
exclude_from_adaptation = { patterns = ["bias$"] }
"""
KWARGS = dict(flavor="timm", lr=0.5, momentum=0.9, weight_decay=1e-3, larc_clip=True,
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


def leaves(dtype=torch.float64):
    return [t.requires_grad_() for t in tensors(SHAPES, 0, dtype)]


@pytest.mark.parametrize("foreach", [True, False])
def test_from_config_is_the_optimizer_the_same_arguments_make(tmp_path, foreach):
    path = tmp_path / "lars.toml"
    path.write_text(FILE)
    grads = gradient_stream(SHAPES, 4)
    by_file, by_kwargs = leaves(), leaves()
    first = LARS.from_file(list(zip(NAMES, by_file, strict=True)), path, foreach=foreach)
    second = LARS(list(zip(NAMES, by_kwargs, strict=True)), foreach=foreach, **KWARGS)
    assert first.group_hyperparams(first.param_groups[0]) == second.group_hyperparams(second.param_groups[0])
    run_torch(first, by_file, grads)
    run_torch(second, by_kwargs, grads)
    for a, b in zip(by_file, by_kwargs, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(first.export_state().momentum_buffers.values(),
                    second.export_state().momentum_buffers.values(), strict=True):
        assert (a == b).all()


def test_the_files_schedule_drives_the_lr_as_in_the_core(tmp_path):
    path = tmp_path / "scheduled.toml"
    path.write_text(SCHEDULED)
    config = lars.load_config(path)
    params = leaves()
    initial = [p.detach().clone() for p in params]
    optimizer = LARS.from_file(list(zip(NAMES, params, strict=True)), path)
    scheduler = CoreScheduler.from_file(optimizer, path)
    grads = gradient_stream(SHAPES, 6)
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        optimizer.step()
        scheduler.step()
    expected, _, _ = run_reference(config.hyperparams, NAMES, initial, grads, lrs=config.schedule)
    assert_matches(params, NAMES, expected, torch.float64)


def test_a_bad_file_is_refused_before_an_optimizer_is_made(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("lr = 0.1\nmomentum = 1.5\n")
    expected = rf"^{re.escape(str(path))}: momentum=1.5 is invalid: expected a finite number"
    with pytest.raises(lars.ConfigError, match=expected):
        LARS.from_file(leaves(), path)
