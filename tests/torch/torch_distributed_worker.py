"""The model, data and runs of test_torch_distributed.py, and its two-process side.

`python torch_distributed_worker.py RANK OUT_DIR` (with MASTER_ADDR, MASTER_PORT, WORLD_SIZE set)
joins a gloo process group, trains the model of every scenario for `STEPS` steps on its half of
each global batch under DDP or FSDP2 (`fully_shard`) and saves what it saw to OUT_DIR/rank{RANK}.pt.
The test runs the same scenarios in one process on the whole batches and compares.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from unittest import mock

import torch
import torch.distributed as dist
from torch import nn

from lars import hyperparams
from lars.backends.torch import LARS, lars
from lars.backends.torch import distributed as lars_distributed
from lars.backends.torch.distributed import whole
from lars.backends.torch.functional import TensorGroup

STEPS = 20
GLOBAL_BATCH = 8
#: the resume scenario's fresh optimizers: from a state_dict, from torch.distributed.checkpoint's
#: optimizer state dict (how FSDP2 checkpoints), from the neutral state (export/import)
RESUME_AT = {5: "state_dict", 10: "distributed_checkpoint", 15: "neutral"}

#: name -> (how the model is wrapped, the LARS arguments). Large trust coefficients: the weights
#: change by percents per step, so that a wrong norm shows in the trajectory.
SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddp": ("ddp", {"flavor": "paper", "trust_coefficient": 0.02, "weight_decay": 1e-3}),
    "fsdp2-fused": ("fsdp2", {"flavor": "paper", "trust_coefficient": 0.02, "weight_decay": 1e-3}),
    "fsdp2-foreach-combined-clip": ("fsdp2", {"flavor": "tf_models", "foreach": True, "lr": 0.5,
                                              "trust_coefficient": 0.02, "weight_decay": 1e-3,
                                              "grad_clip_norm": 0.05}),
    "fsdp2-per-tensor-update": ("fsdp2", {"flavor": "holocron", "foreach": False, "momentum": 0.9,
                                          "trust_coefficient": 0.02, "weight_decay": 1e-3,
                                          "trust_denominator": "update"}),
    "fsdp2-resume": ("fsdp2", {"flavor": "paper", "trust_coefficient": 0.02, "weight_decay": 1e-3}),
    "fsdp2-functional": ("fsdp2", {}),  # lars() on the DTensors, not the optimizer
    "fsdp2-per-shard-norms": ("fsdp2", {"flavor": "paper", "trust_coefficient": 0.02, "weight_decay": 1e-3}),
}


class Model(nn.Module):
    """Conv, bias, norm and linear parameters; dims 0 of 5 (uneven over 2 ranks), 4 and 1 (one
    rank holds nothing of the head's weight and bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.norm = nn.GroupNorm(1, 5)
        self.fc = nn.Linear(5, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        return self.head(torch.relu(self.fc(h)))  # type: ignore[no-any-return]


def make_model() -> Model:
    torch.manual_seed(0)
    return Model()


def batch(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's part of the global batch of `step` (world 1: the whole batch)."""
    gen = torch.Generator().manual_seed(100 + step)
    x, y = torch.randn(GLOBAL_BATCH, 3, 6, 6, generator=gen), torch.randn(GLOBAL_BATCH, 1, generator=gen)
    part = GLOBAL_BATCH // world
    return x[rank * part:(rank + 1) * part], y[rank * part:(rank + 1) * part]


def make_optimizer(model: nn.Module, options: dict[str, Any]) -> LARS:
    """Two groups as in practice: weights, and biases and norm parameters without weight decay."""
    named = list(model.named_parameters())
    weights = [(n, p) for n, p in named if p.ndim > 1]
    others = [(n, p) for n, p in named if p.ndim <= 1]
    groups = [{"params": [p for _, p in weights], "param_names": [n for n, _ in weights]},
              {"params": [p for _, p in others], "param_names": [n for n, _ in others], "weight_decay": 0.0}]
    return LARS(groups, **{"lr": 0.5, **options})


@contextmanager
def counting_all_reduces(counts: list[int]) -> Iterator[None]:
    """Appends the number of `all_reduce` calls made inside the block to `counts`."""
    calls = [0]
    original = dist.all_reduce

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    with mock.patch.object(dist, "all_reduce", counted):
        yield
    counts.append(calls[0])


def train(scenario: str, model: nn.Module, rank: int, world: int, forward: nn.Module | None = None,
          ) -> tuple[dict[str, Any], LARS]:
    """`STEPS` steps; each step's trust ratios, whole parameters and `all_reduce`s in `step()`.

    `forward` is what the batches go through (DDP's wrapper), `model` what is optimized.
    """
    options = SCENARIOS[scenario][1]
    opt = make_optimizer(model, options)
    record: dict[str, Any] = {"ratios": [], "params": [], "all_reduces": []}
    for step in range(STEPS):
        if scenario == "fsdp2-resume" and step in RESUME_AT:
            opt = resumed(model, opt, options, RESUME_AT[step])
        x, y = batch(step, rank, world)
        opt.zero_grad()
        nn.functional.mse_loss((forward or model)(x), y).backward()
        with counting_all_reduces(record["all_reduces"]):
            opt.step()
        record["ratios"].append(opt.trust_ratios())
        record["params"].append({n: whole(p).detach().clone() for n, p in model.named_parameters()})
    return record, opt


def resumed(model: nn.Module, opt: LARS, options: dict[str, Any], how: str) -> LARS:
    """A fresh optimizer that continues `opt` (see `RESUME_AT`)."""
    fresh = make_optimizer(model, options)
    if how == "state_dict":
        fresh.load_state_dict(opt.state_dict())
    elif how == "distributed_checkpoint":
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

        set_optimizer_state_dict(model, fresh, get_optimizer_state_dict(model, opt))
    else:
        fresh.import_state(opt.export_state())
    return fresh


def functional_steps(model: nn.Module, rank: int, world: int) -> dict[str, Any]:
    """`STEPS` steps of the functional `lars()` on the model's parameters (DTensors or not)."""
    hp = hyperparams("paper", lr=0.5, trust_coefficient=0.02, weight_decay=1e-3)
    params = list(model.parameters())
    buffers: list[torch.Tensor | None] = [None] * len(params)
    record: dict[str, Any] = {"ratios": [], "params": [], "all_reduces": []}
    for step in range(STEPS):
        x, y = batch(step, rank, world)
        model.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        group = TensorGroup(params=params, grads=[p.grad for p in params], buffers=buffers)  # type: ignore[misc]
        with torch.no_grad(), counting_all_reduces(record["all_reduces"]):
            ratios = lars(hp, group, hp.lr)
        buffers = group.buffers
        names = [n for n, _ in model.named_parameters()]
        record["ratios"].append(dict(zip(names, ratios.tolist(), strict=True)))
        record["params"].append({n: whole(p).detach().clone() for n, p in model.named_parameters()})
    record["buffer_types"] = sorted({type(b).__name__ for b in buffers})
    return record


def run_scenario(scenario: str, rank: int, world: int) -> dict[str, Any]:
    model = make_model()
    if SCENARIOS[scenario][0] == "ddp":
        return train(scenario, model, rank, world, forward=nn.parallel.DistributedDataParallel(model))[0]
    from torch.distributed.fsdp import fully_shard

    fully_shard(model.conv)
    fully_shard(model)
    if scenario == "fsdp2-functional":
        record = functional_steps(model, rank, world)
    else:
        record, opt = train(scenario, model, rank, world)
        record["exported"] = dict(opt.export_state().momentum_buffers)
        record["buffer_types"] = sorted({type(s["momentum_buffer"]).__name__ for s in opt.state.values()})
    record["placements"] = {n: str(p.placements) for n, p in model.named_parameters()}  # type: ignore[attr-defined]
    return record


def fsdp1_refusals() -> list[str]:
    """The errors of LARS on FSDP1's flat parameters and on its `use_orig_params` views."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    messages = []
    for use_orig_params in (False, True):
        model = FullyShardedDataParallel(make_model(), use_orig_params=use_orig_params,
                                         device_id=torch.device("cpu"))
        try:
            LARS(model.named_parameters(), lr=0.1)
            messages.append("no error")
        except ValueError as error:
            messages.append(str(error))
    return messages


def main() -> None:
    rank, out_dir = int(sys.argv[1]), sys.argv[2]
    world = int(os.environ["WORLD_SIZE"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        results = {}
        for scenario in SCENARIOS:
            if scenario == "fsdp2-per-shard-norms":  # what the adapter would do without the sum
                with mock.patch.object(lars_distributed, "sum_over_shards", lambda squares, layouts: squares):
                    results[scenario] = run_scenario(scenario, rank, world)
            else:
                results[scenario] = run_scenario(scenario, rank, world)
        results["fsdp1"] = fsdp1_refusals()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
