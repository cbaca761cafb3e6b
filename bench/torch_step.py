"""PyTorch: `lars.backends.torch.LARS` beside torch's SGD (momentum and weight decay; fused, one
tensor at a time, multi-tensor) and pytorch_optimizer's LARS, all eager `optimizer.step()` on
CPU tensors with set gradients.

Each SGD is checked on a probe before it is timed (`bench.common.checked`): torch 2.13.0's fused
CPU kernel leaves float16/bfloat16 weights longer than its SIMD width unchanged (pytorch#191763),
so in bfloat16 it is reported as wrong and the anchor is the fastest SGD that is right.

`lars paper` is the adapter as a user gets it (default path: the fused kernel, bfloat16
through float32 chunks); `recording(k)` is the same recording one step in k into a trace
(`LARS.record`, measured by `bench.recording`). Buffers are in the parameters' dtype except
the adapter's, which keeps bfloat16 momentum in float32.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytorch_optimizer
import torch

from bench.common import Backend, Factory, Step, Target, Tensors, checked
from lars.backends.torch import LARS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: Where the recording variants of `bench.recording` write their traces (removed at exit).
TRACES, NUMBER = tempfile.TemporaryDirectory(prefix="lars-bench-traces-"), itertools.count()


def parameters(tensors: Tensors, dtype: str) -> list[torch.nn.Parameter]:
    params = []
    for _, w, g in tensors:
        p = torch.nn.Parameter(torch.tensor(w, dtype=DTYPES[dtype]))
        p.grad = torch.tensor(g, dtype=DTYPES[dtype])
        params.append(p)
    return params


def sgd(**path: bool) -> Factory:
    """torch's SGD on one of its paths (`fused=True`, `foreach=False`, `foreach=True`), checked."""
    def build(tensors: Tensors, dtype: str) -> tuple[Step, Callable[[], list[np.ndarray]]]:
        params = parameters(tensors, dtype)
        step = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, **path).step
        return step, lambda: [p.detach().float().numpy() for p in params]  # type: ignore[return-value]
    return checked(build, lr=0.1, momentum=0.9, weight_decay=1e-4)


def peer(tensors: Tensors, dtype: str) -> Step:
    params = parameters(tensors, dtype)
    grads = [p.grad.clone() for p in params]  # type: ignore[union-attr]
    opt = pytorch_optimizer.LARS(params, lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> None:  # it overwrites p.grad in place: restore the same gradients
        for p, g in zip(params, grads, strict=True):
            p.grad.copy_(g)  # type: ignore[union-attr]
        opt.step()
    return step


def ours(tensors: Tensors, dtype: str) -> Step:
    named = [(name, p) for (name, _, _), p in zip(tensors, parameters(tensors, dtype), strict=True)]
    return LARS(named, lr=0.1, flavor="paper", momentum=0.9, weight_decay=1e-4).step  # type: ignore[return-value]


def recording(every: int) -> Factory:
    """The adapter recording one step in `every` (flushed every 100 recorded steps)."""
    def factory(tensors: Tensors, dtype: str) -> Step:
        named = [(name, p) for (name, _, _), p in zip(tensors, parameters(tensors, dtype), strict=True)]
        opt = LARS(named, lr=0.1, flavor="paper", momentum=0.9, weight_decay=1e-4)
        opt.record(Path(TRACES.name) / f"{next(NUMBER)}.npz", every=every)
        return opt.step  # type: ignore[return-value]
    return factory


SGDS = {"torch SGD fused": sgd(fused=True), "torch SGD for-loop": sgd(foreach=False),
        "torch SGD foreach": sgd(foreach=True)}


def backend() -> Backend:
    from importlib.metadata import version

    return Backend(
        name="torch",
        versions={"torch": torch.__version__, "pytorch_optimizer": version("pytorch_optimizer"),
                  "threads": str(torch.get_num_threads())},
        variants={**SGDS, "pytorch_optimizer LARS": peer, "lars paper": ours},
        targets=(Target("lars paper", "torch SGD fused", 1.5, stand_ins=tuple(SGDS)[1:]),
                 Target("lars paper", "pytorch_optimizer LARS", 0.4)),
        sgd=tuple(SGDS),
    )
