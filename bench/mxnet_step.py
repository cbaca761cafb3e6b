"""MXNet 1.9.1: `lars.backends.mxnet.OneLARS` beside MXNet's own LARS (aggregated, as
`gluon.Trainer` drives it) and SGD, each step one call of MXNet's `Updater` on every tensor.

`mxnet sgd` is MXNet's SGD aggregated as `Updater` runs it (`MXNET_OPTIMIZER_AGGREGATION_SIZE`,
4 by default: its multi-tensor `multi_sgd_mom_update`). `lars mxnet flavor` reproduces MXNet's
LARS (its aggregated path, with the adapter's default per-tensor fused kernels; `, multi
kernels` with MXNet's multi-tensor kernels, as MXNet's LARS uses them); `lars paper` is the
paper's LARS on the default path. float32 only: bfloat16 is reported as not supported, with
MXNet's error.
"""

from __future__ import annotations

from collections.abc import Callable

import mxnet as mx
import numpy as np

from bench.common import Backend, Step, Target, Tensors, checked
from lars.backends.mxnet import OneLARS


def runner(optimizer: mx.optimizer.Optimizer, tensors: Tensors, dtype: str) -> Step:
    return built(optimizer, tensors, dtype)[0]


def built(optimizer: mx.optimizer.Optimizer, tensors: Tensors, dtype: str,
          ) -> tuple[Step, Callable[[], list[np.ndarray]]]:
    """The step, and a reader of the weights it leaves."""
    weights = [mx.nd.array(w, dtype=dtype) for _, w, _ in tensors]
    grads = [mx.nd.array(g, dtype=dtype) for _, _, g in tensors]
    updater = mx.optimizer.get_updater(optimizer)
    indices = list(range(len(tensors)))

    def step() -> None:
        updater(indices, grads, weights)
        mx.nd.waitall()
    return step, lambda: [w.asnumpy().astype(np.float32) for w in weights]


def names(tensors: Tensors) -> dict[int, str]:
    return {i: name.replace(".", "_") for i, (name, _, _) in enumerate(tensors)}


def sgd_built(tensors: Tensors, dtype: str) -> tuple[Step, Callable[[], list[np.ndarray]]]:
    return built(mx.optimizer.SGD(learning_rate=0.1, momentum=0.9, wd=1e-4), tensors, dtype)


sgd = checked(sgd_built, lr=0.1, momentum=0.9, weight_decay=1e-4)


def peer(tensors: Tensors, dtype: str) -> Step:
    return runner(mx.optimizer.LARS(learning_rate=0.1, momentum=0.9, wd=1e-4), tensors, dtype)


def ours_mxnet(tensors: Tensors, dtype: str) -> Step:
    optimizer = OneLARS(0.1, "mxnet", momentum=0.9, wd=1e-4, param_idx2name=names(tensors))
    return runner(optimizer, tensors, dtype)


def ours_multi(tensors: Tensors, dtype: str) -> Step:
    """The mxnet flavor on MXNet's multi-tensor kernels, as MXNet's LARS (not the default)."""
    optimizer = OneLARS(0.1, "mxnet", momentum=0.9, wd=1e-4, param_idx2name=names(tensors),
                        kernels="multi")
    return runner(optimizer, tensors, dtype)


def ours_paper(tensors: Tensors, dtype: str) -> Step:
    optimizer = OneLARS(0.1, "paper", momentum=0.9, wd=1e-4, param_idx2name=names(tensors))
    return runner(optimizer, tensors, dtype)


def bfloat16_refused() -> str | None:
    """MXNet's own answer to a bfloat16 array, or None if it makes one."""
    try:
        mx.nd.zeros(1).astype("bfloat16")
    except Exception as exc:
        return f"MXNet {mx.__version__} NDArray has no bfloat16 ({type(exc).__name__}: {exc})"
    return None


def backend() -> Backend:
    refused = bfloat16_refused()
    return Backend(
        name="mxnet",
        versions={"mxnet": mx.__version__, "aggregation": str(OneLARS(flavor="mxnet").aggregate_num)},
        variants={"mxnet sgd": sgd, "mxnet LARS": peer, "lars mxnet flavor": ours_mxnet,
                  "lars mxnet flavor, multi kernels": ours_multi, "lars paper": ours_paper},
        targets=(Target("lars paper", "mxnet sgd", 1.5), Target("lars mxnet flavor", "mxnet sgd", 1.5),
                 Target("lars mxnet flavor", "mxnet LARS", 0.6), Target("lars paper", "mxnet LARS", 0.6)),
        sgd=("mxnet sgd",),
        unsupported={} if refused is None else {"bfloat16": refused},
    )
