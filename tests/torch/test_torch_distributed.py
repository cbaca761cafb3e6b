"""LARS under DDP and FSDP2 (2 processes on gloo) follows the single-process trajectory.

The two processes (torch_distributed_worker.py) train every scenario once, each on half of every
global batch; here the same scenarios run in one process on the whole batches. A trust ratio is
a ratio of whole-tensor norms, so a norm of a local shard, or a clip norm of one rank's
gradients, shows as a different trajectory: the last test runs the adapter with the sum over
the shards switched off and checks that the comparison catches it.

gloo and FSDP2 are part of every CPU build of torch >= 2.6: if they are missing, these tests
fail (an error in the workers), they are not skipped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch_distributed_worker as worker
from torch import nn

import lars

WORLD = 2
TIMEOUT_S = 180  # both workers together; they take ~15 s on an idle 2-core machine
TOLERANCE = 1e-5  # float32, relative


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every scenario's record from each of the two ranks."""
    out = tmp_path_factory.mktemp("distributed")
    source = str(Path(lars.__file__).parents[1])  # the workers import the lars under test
    path = os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": str(WORLD), "PYTHONPATH": path}
    procs = [subprocess.Popen([sys.executable, worker.__file__, str(rank), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(WORLD)]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        logs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {WORLD} workers did not finish within {TIMEOUT_S} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    for rank, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"rank {rank} failed (exit {p.returncode}):\n{log[-4000:]}"
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]


_REFERENCES: dict[str, dict[str, Any]] = {}


def single_process(scenario: str) -> dict[str, Any]:
    """The scenario's record in this process, on whole batches and plain tensors."""
    options = worker.SCENARIOS[scenario][1]
    key = repr(sorted(options.items()))
    if key not in _REFERENCES:
        torch.set_num_threads(1)
        model = worker.make_model()
        opt = worker.make_optimizer(model, options)
        record: dict[str, Any] = {"ratios": [], "params": []}
        for step in range(worker.STEPS):
            x, y = worker.batch(step, 0, 1)
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            record["ratios"].append(opt.trust_ratios())
            record["params"].append({n: p.detach().clone() for n, p in model.named_parameters()})
        record["exported"] = dict(opt.export_state().momentum_buffers)
        _REFERENCES[key] = record
    return _REFERENCES[key]


def relative(ours: torch.Tensor, expected: torch.Tensor) -> float:
    return float((ours - expected).abs().max() / expected.abs().max())


def assert_same_trajectory(run: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each step's trust ratios and whole parameters within float32's tolerance."""
    for step, (ratios, ratios_expected) in enumerate(zip(run["ratios"], expected["ratios"], strict=True)):
        assert ratios.keys() == ratios_expected.keys()
        for name, r in ratios.items():
            error = abs(r - ratios_expected[name]) / abs(ratios_expected[name])
            assert error <= TOLERANCE, (f"step {step}: trust ratio of {name} is {r}, single process "
                                        f"{ratios_expected[name]} (relative error {error:.2g})")
        for name, p in run["params"][step].items():
            error = relative(p, expected["params"][step][name])
            assert error <= TOLERANCE, f"step {step}: {name} differs by {error:.2g} (relative)"


def test_ddp_matches_single_process_and_leaves_the_optimizer_unchanged(runs):
    for rank in range(WORLD):
        assert_same_trajectory(runs[rank]["ddp"], single_process("ddp"))
        assert runs[rank]["ddp"]["all_reduces"] == [0] * worker.STEPS  # DDP averaged the gradients


@pytest.mark.parametrize("scenario", ["fsdp2-fused", "fsdp2-foreach-combined-clip", "fsdp2-per-tensor-update",
                                      "fsdp2-resume"])
def test_fsdp2_matches_single_process(runs, scenario):
    for rank in range(WORLD):
        run = runs[rank][scenario]
        assert set(run["placements"].values()) == {"(Shard(dim=0),)"}  # really sharded
        assert run["buffer_types"] == ["DTensor"]  # the state is sharded as the parameters
        assert_same_trajectory(run, single_process(scenario))


def test_functional_lars_on_dtensors_matches_single_process(runs):
    expected = worker.functional_steps(worker.make_model(), 0, 1)
    for rank in range(WORLD):
        run = runs[rank]["fsdp2-functional"]
        assert run["buffer_types"] == ["DTensor"]
        assert min(run["all_reduces"]) == 1 and max(run["all_reduces"]) <= 2, run["all_reduces"]
        assert_same_trajectory(run, expected)


def test_fsdp2_sums_all_norms_of_a_step_in_one_all_reduce(runs):
    """Both param groups' norms in one all_reduce; global clipping adds one; the "update"
    denominator's norms come after the momentum, one all_reduce per param group (its tensors
    together, on the per-tensor path too). A group with a norm out of float32's range takes
    those norms again, in one more all_reduce per phase: the zero-initialised GroupNorm bias at
    the first step, and gradients that are all zero once ReLUs die (a sum of 0 is out of range)."""
    expected = {"fsdp2-fused": 1, "fsdp2-foreach-combined-clip": 2, "fsdp2-per-tensor-update": 2,
                "ddp": 0}
    for rank in range(WORLD):
        for scenario, count in expected.items():
            counts = runs[rank][scenario]["all_reduces"]
            assert min(counts) == count and max(counts) <= count + 3, (scenario, counts)
            assert counts[0] > count or count == 0, (scenario, counts)  # the zero bias, taken again


def test_fsdp2_export_state_gives_whole_buffers(runs):
    expected = single_process("fsdp2-fused")["exported"]
    for rank in range(WORLD):
        exported = runs[rank]["fsdp2-fused"]["exported"]
        assert exported.keys() == expected.keys()
        for name, buffer in exported.items():
            assert buffer.shape == expected[name].shape
            assert relative(torch.as_tensor(buffer), torch.as_tensor(expected[name])) <= TOLERANCE, name


def test_fsdp1_flat_parameters_are_refused_with_a_clear_error(runs):
    for rank in range(WORLD):
        flat, views = runs[rank]["fsdp1"]
        assert "_flat_param" in flat and "flattened by FSDP1" in flat and "fully_shard" in flat
        assert "conv.weight" in views and "flattened by FSDP1" in views


def test_norms_of_local_shards_would_be_caught(runs):
    """Without the sum over the shards (the adapter's reduction patched out in the workers),
    the same comparison fails: the trust ratios are those of the local pieces."""
    expected = single_process("fsdp2-per-shard-norms")
    for rank in range(WORLD):
        with pytest.raises(AssertionError, match="trust ratio"):
            assert_same_trajectory(runs[rank]["fsdp2-per-shard-norms"], expected)
