"""What recording a trace costs (issue 19): the adapter against itself recording one step in k.

    python -m bench.recording --backend torch [--every 1 2 5 10] [--pairs 100] [--threads 1]

On one parameter set (ResNet-50 by default), float32, the adapter (A) and the adapter recording
one step in k (B, the backend module's `recording(k)`) are stepped alternately, A B B A A B ...,
so that a machine whose load drifts slows both alike; the ratio is B's total time over A's over
all pairs, which amortises the recorded steps over the others (`bench.run` times medians, which
would hide them). Process CPU time beside wall time: on a shared machine, the steady one.
`--threads`: the framework's intra-op threads (torch.set_num_threads; XLA's CPU flags for JAX),
its default if not given.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from collections.abc import Sequence

from bench.common import random_tensors
from bench.shapes import SETS


def pairs_ratio(a, b, pairs: int) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
    """Mean ms per step of A and B (CPU time), and the ratios B/A of CPU and wall time."""
    for _ in range(2):
        a()
        b()
    wall, cpu = [0.0, 0.0], [0.0, 0.0]
    for i in range(pairs):
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            start, cpu_start = time.perf_counter(), time.process_time()
            (a, b)[k]()
            wall[k] += time.perf_counter() - start
            cpu[k] += time.process_time() - cpu_start
    return cpu[0] / pairs * 1e3, cpu[1] / pairs * 1e3, cpu[1] / cpu[0], wall[1] / wall[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recording", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["torch", "jax"], required=True)
    parser.add_argument("--set", default="resnet50", choices=list(SETS))
    parser.add_argument("--every", type=int, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--pairs", type=int, default=100)
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
    print(f"{args.backend}: {args.set} float32, {args.pairs} A/B pairs, threads {args.threads or 'default'}")
    print("  every   adapter ms   recording ms   ratio (CPU time)   ratio (wall time)")
    for every in args.every:
        a, b = module.ours(tensors, "float32"), module.recording(every)(tensors, "float32")
        ms_a, ms_b, cpu, wall = pairs_ratio(a, b, args.pairs)
        print(f"  {every:>5}   {ms_a:10.2f}   {ms_b:12.2f}   {cpu:16.3f}   {wall:17.3f}", flush=True)
        del a, b
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
