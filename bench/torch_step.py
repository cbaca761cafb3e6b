"""Step time of `lars.backends.torch.LARS` on the ResNet-50 parameter set, beside torch's SGD
and pytorch_optimizer's LARS, measured in one process, interleaved, as ratios.

    python bench/torch_step.py [--passes 5] [--steps 20] [--out bench/results/torch_step.json]

Each variant owns its parameters, gradients (fixed random values) and buffers. A pass runs
every variant for `warmup` steps and then times `steps` steps; a variant's time is the median
over passes of its per-pass median. The same run measures the memory bandwidth (a triad over
arrays larger than the caches) and reports each step against the bound of a LARS step,
28 bytes per fp32 parameter (norms read w and g; the update reads w, g, v and writes w, v).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measure, report
from shapes import count, resnet50

from lars.backends.torch import LARS


def make_params(shapes: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    params = []
    for _, shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=generator) * 0.05)
        p.grad = torch.randn(shape, generator=generator) * 0.01
        params.append(p)
    return params


def variants(shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, Callable[[], None]]:
    import pytorch_optimizer

    def named(params: list[torch.nn.Parameter]) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for (n, _), p in zip(shapes, params, strict=True)]

    def sgd(**kw: object) -> Callable[[], None]:
        return torch.optim.SGD(make_params(shapes), lr=0.1, momentum=0.9, weight_decay=1e-4, **kw).step

    def ours(**kw: object) -> Callable[[], None]:
        return LARS(named(make_params(shapes)), lr=0.1, flavor="paper", **kw).step  # type: ignore[arg-type]

    def peer_step() -> Callable[[], None]:
        params = make_params(shapes)
        grads = [p.grad.clone() for p in params]  # type: ignore[union-attr]
        opt = pytorch_optimizer.LARS(params, lr=0.1, momentum=0.9, weight_decay=1e-4)

        def step() -> None:  # it overwrites p.grad in place: restore the same gradients
            for p, g in zip(params, grads, strict=True):
                p.grad.copy_(g)  # type: ignore[union-attr]
            opt.step()
        return step

    return {
        "torch SGD foreach": sgd(foreach=True),
        "torch SGD fused": sgd(fused=True),
        "torch SGD per-tensor": sgd(foreach=False),
        "pytorch_optimizer LARS": peer_step(),
        "lars paper (default: fused)": ours(),
        "lars paper foreach": ours(foreach=True, fused=False),
        "lars paper per-tensor": ours(foreach=False, fused=False),
    }


def triad_gbps(n: int = 50_000_000, repeats: int = 10) -> float:
    a, b, c = torch.empty(n), torch.rand(n), torch.rand(n)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.add(b, c, alpha=0.5, out=a)
        times.append(time.perf_counter() - start)
    return 3 * 4 * n / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/torch_step.json"))
    args = parser.parse_args()
    shapes = resnet50()
    ms, per_pass, gbps = measure(variants(shapes), args.passes, args.warmup, args.steps, triad_gbps)
    report(f"ResNet-50 parameter set: {len(shapes)} tensors, {count(shapes):,} fp32 parameters; "
           f"torch {torch.__version__}, {torch.get_num_threads()} threads",
           ms, {"SGD foreach": "torch SGD foreach", "pytorch_opt": "pytorch_optimizer LARS",
                "SGD fused": "torch SGD fused"},
           count(shapes), gbps, args.out, {"torch": torch.__version__, "threads": torch.get_num_threads()},
           per_pass)


if __name__ == "__main__":
    main()
