"""Step time of `lars.backends.mxnet.OneLARS` on the ResNet-50 parameter set, beside MXNet's
own LARS (aggregated, as `gluon.Trainer` drives it) and SGD, through MXNet's `Updater`.

    python bench/mxnet_step.py [--passes 5] [--steps 20]   # in the mxnet environment
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mxnet as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measure, report
from shapes import count, resnet50

from lars.backends.mxnet import OneLARS


def runner(optimizer: mx.optimizer.Optimizer, shapes: list[tuple[str, tuple[int, ...]]],
           ) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    weights = [mx.nd.array(rng.standard_normal(s) * 0.05, dtype="float32") for _, s in shapes]
    grads = [mx.nd.array(rng.standard_normal(s) * 0.01, dtype="float32") for _, s in shapes]
    updater = mx.optimizer.get_updater(optimizer)
    indices = list(range(len(shapes)))

    def step() -> None:
        updater(indices, grads, weights)
        mx.nd.waitall()
    return step


def triad_gbps(n: int = 50_000_000) -> float:
    a, b, c = mx.nd.zeros(n), mx.nd.ones(n), mx.nd.ones(n)
    mx.nd.elemwise_add(b, c * 0.5, out=a)
    mx.nd.waitall()
    start = time.perf_counter()
    for _ in range(5):
        mx.nd.elemwise_add(b, c, out=a)
    mx.nd.waitall()
    return 3 * 4 * n / ((time.perf_counter() - start) / 5) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results/mxnet_step.json"))
    args = parser.parse_args()
    shapes = resnet50()
    names = {i: n.replace(".", "_") for i, (n, _) in enumerate(shapes)}
    runs = {
        "mxnet sgd": runner(mx.optimizer.SGD(learning_rate=0.1, momentum=0.9, wd=1e-4), shapes),
        "mxnet LARS": runner(mx.optimizer.LARS(learning_rate=0.1, momentum=0.9, wd=1e-4), shapes),
        "lars mxnet flavor": runner(OneLARS("mxnet", learning_rate=0.1, momentum=0.9, wd=1e-4,
                                            param_idx2name=names), shapes),
        "lars mxnet flavor, multi kernels": runner(OneLARS("mxnet", learning_rate=0.1, momentum=0.9, wd=1e-4,
                                                           param_idx2name=names, kernels="multi"), shapes),
        "lars paper": runner(OneLARS("paper", learning_rate=0.1, momentum=0.9, wd=1e-4), shapes),
    }
    ms, per_pass, gbps = measure(runs, args.passes, args.warmup, args.steps, triad_gbps)
    report(f"ResNet-50 parameter set: {len(shapes)} tensors, {count(shapes):,} fp32 parameters; "
           f"mxnet {mx.__version__}, Updater with aggregation {OneLARS('mxnet').aggregate_num}",
           ms, {"mxnet LARS": "mxnet LARS", "mxnet sgd": "mxnet sgd"}, count(shapes), gbps, args.out,
           {"mxnet": mx.__version__}, per_pass)


if __name__ == "__main__":
    main()
