"""What recording a trace costs (issue 19): the adapter against itself recording one step in k.

    python -m bench.recording --backend torch [--every 1 2 5 10] [--blocks 30] [--threads 1]

On one parameter set (ResNet-50 by default), float32, the adapter (A) and the adapter recording
one step in k (B, the backend module's `recording(k)`) are stepped in blocks of k steps (one of
B's recorded), alternately, A B B A A B ..., so that a machine whose load drifts slows both
alike. A block's ratio is B's time over A's (the recorded step amortised over the k, which
`bench.run`'s medians would hide); the median over the blocks, and its quartiles, are robust to
the bursts of a shared machine. Process CPU time beside wall time: on a shared machine, the
steady one. `--threads`: the framework's intra-op threads (torch.set_num_threads; XLA's CPU
flags for JAX), its default if not given.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import time
from collections.abc import Sequence

from bench.common import Step, random_tensors
from bench.shapes import SETS


def block_ratios(a: Step, b: Step, every: int, blocks: int) -> dict[str, list[float]]:
    """Per block of `every` steps: A's and B's ms per step (CPU time), and B/A in CPU and wall time."""
    for _ in range(every):  # B's next step is a recorded one, as at the start of every block
        a()
        b()
    out: dict[str, list[float]] = {"a": [], "b": [], "cpu": [], "wall": []}
    for i in range(blocks):
        wall, cpu = [0.0, 0.0], [0.0, 0.0]
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(every):
                (a, b)[k]()
            wall[k], cpu[k] = time.perf_counter() - start, time.process_time() - cpu_start
        out["a"].append(cpu[0] / every * 1e3)
        out["b"].append(cpu[1] / every * 1e3)
        out["cpu"].append(cpu[1] / cpu[0])
        out["wall"].append(wall[1] / wall[0])
    return out


def shown(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return f"{median:.3f} [{q1:.3f}, {q3:.3f}]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recording", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["torch", "jax"], required=True)
    parser.add_argument("--set", default="resnet50", choices=list(SETS))
    parser.add_argument("--every", type=int, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None and args.backend == "jax":  # read when jax starts
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   f"intra_op_parallelism_threads={args.threads}")
    module = importlib.import_module(f"bench.{args.backend}_step")
    if args.threads is not None and args.backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    tensors = random_tensors(SETS[args.set]())
    print(f"{args.backend}: {args.set} float32, {args.blocks} A/B blocks of k steps, threads "
          f"{args.threads or 'default'}; ratios: median [quartiles] over the blocks")
    print("      k   adapter ms   recording ms   ratio (CPU time)         ratio (wall time)")
    kept = {"donate": False} if args.backend == "jax" else {}  # as the recording variant steps
    for every in args.every:
        a, b = module.ours(tensors, "float32", **kept), module.recording(every)(tensors, "float32")
        r = block_ratios(a, b, every, args.blocks)
        print(f"  {every:>5}   {statistics.median(r['a']):10.2f}   {statistics.median(r['b']):12.2f}   "
              f"{shown(r['cpu']):<24} {shown(r['wall'])}", flush=True)
        del a, b
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
