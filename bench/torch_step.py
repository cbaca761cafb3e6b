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
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import count, resnet50

from lars.backends.torch import LARS

BYTES_PER_PARAM = 28


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


def time_steps(step: Callable[[], None], warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/torch_step.json"))
    args = parser.parse_args()
    shapes = resnet50()
    n_params = count(shapes)
    runs = variants(shapes)
    per_pass: dict[str, list[float]] = {name: [] for name in runs}
    bandwidth = []
    for _ in range(args.passes):
        bandwidth.append(triad_gbps())
        for name, step in runs.items():
            per_pass[name].append(time_steps(step, args.warmup, args.steps))
    gbps = statistics.median(bandwidth)
    bound_ms = BYTES_PER_PARAM * n_params / (gbps * 1e9) * 1e3
    ms = {name: statistics.median(t) * 1e3 for name, t in per_pass.items()}
    anchor_sgd, anchor_peer = ms["torch SGD foreach"], ms["pytorch_optimizer LARS"]
    print(f"ResNet-50 parameter set: {len(shapes)} tensors, {n_params:,} fp32 parameters; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"memory triad: {gbps:.1f} GB/s -> LARS bound ({BYTES_PER_PARAM} B/param): {bound_ms:.1f} ms\n")
    print(f"{'variant':<30} {'ms/step':>8} {'x SGD foreach':>14} {'x pytorch_opt':>14} {'bound/step':>11}")
    for name, value in ms.items():
        print(f"{name:<30} {value:>8.1f} {value / anchor_sgd:>14.2f} {value / anchor_peer:>14.2f} "
              f"{bound_ms / value:>11.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "parameters": n_params, "tensors": len(shapes), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": platform.platform(),
        "triad_gbps": gbps, "bound_ms": bound_ms, "ms_per_step": ms, "per_pass_ms":
        {k: [t * 1e3 for t in v] for k, v in per_pass.items()},
        "ratio_vs_sgd_foreach": {k: v / anchor_sgd for k, v in ms.items()},
        "ratio_vs_pytorch_optimizer": {k: v / anchor_peer for k, v in ms.items()},
    }, indent=2))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
