"""PyTorch: `lars.backends.torch.LARS` beside torch's fastest SGD (`fused=True`, momentum and
weight decay) and pytorch_optimizer's LARS, all eager `optimizer.step()` on CPU tensors with set
gradients.

`lars paper` is the adapter as a user gets it (default path: the fused kernel, bfloat16
through float32 chunks); `recording(k)` is the same recording one step in k into a trace
(`LARS.record`, measured by `bench.recording`). Buffers are in the parameters' dtype except
the adapter's, which keeps bfloat16 momentum in float32.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytorch_optimizer
import torch

from bench.common import Backend, Factory, Step, Target, Tensors
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


def sgd_fused(tensors: Tensors, dtype: str) -> Step:
    """torch's fastest optimizer step: the fused CPU kernel."""
    params = parameters(tensors, dtype)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True).step


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


def backend() -> Backend:
    from importlib.metadata import version

    return Backend(
        name="torch",
        versions={"torch": torch.__version__, "pytorch_optimizer": version("pytorch_optimizer"),
                  "threads": str(torch.get_num_threads())},
        variants={"torch SGD fused": sgd_fused, "pytorch_optimizer LARS": peer, "lars paper": ours},
        targets=(Target("lars paper", "torch SGD fused", 1.5),
                 Target("lars paper", "pytorch_optimizer LARS", 0.4)),
        sgd="torch SGD fused",
    )
