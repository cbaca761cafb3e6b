"""The conformance driver of the MXNet adapter: tensors stepped through MXNet's own Updater."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import mxnet as mx
import numpy as np

from lars.backends.mxnet import OneLARS, export_state, import_state
from lars.core.hyperparams import Hyperparams
from lars.core.state import State

Array = np.ndarray

# MXNet 1.x NDArrays have no 0-d shape unless NumPy shape semantics are on.
mx.util.set_np_shape(True)


class MxnetRun:
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array], **options: object) -> None:
        self._names = list(params)
        self._weights = [mx.nd.array(params[n], dtype=params[n].dtype) for n in self._names]
        self.optimizer = OneLARS(hyperparameters=hp, param_idx2name=dict(enumerate(self._names)),
                                 **options)  # type: ignore[arg-type]
        self._updater = mx.optimizer.get_updater(self.optimizer)

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        given = {i: g for i, n in enumerate(self._names) if (g := grads.get(n)) is not None}
        self.optimizer.set_learning_rate(lr)
        self._updater(list(given), [mx.nd.array(g, dtype=g.dtype) for g in given.values()],
                      [self._weights[i] for i in given])

    def params(self) -> dict[str, Array]:
        return {n: w.asnumpy() for n, w in zip(self._names, self._weights, strict=True)}

    def state(self) -> State:
        return export_state(self._updater, dict(enumerate(self._names)))

    def load(self, state: State) -> None:
        import_state(state, self._updater, dict(enumerate(self._names)), dict(enumerate(self._weights)))

    def trust_ratios(self) -> dict[str, float]:
        return self.optimizer.trust_ratios()

    def hyperparameters(self) -> Hyperparams:
        return self.optimizer.hyperparameters

    def set_lr(self, lr: Any) -> None:
        self.optimizer.set_learning_rate(lr)


class MxnetDriver:
    """`lars.backends.mxnet.OneLARS` through `mx.optimizer.get_updater` (as gluon.Trainer)."""

    dtypes = ("float64", "float32")
    #: What the adapter refuses, by field: MXNet hands an optimizer a few tensors at a time.
    refuses: Mapping[str, str] = MappingProxyType(
        {"grad_clip_norm": "a global norm needs every gradient of the step at once"})

    def __init__(self, **options: object) -> None:
        self.options = options
        #: MXNet's Updater hands an optimizer `aggregate_num` tensors per call: a step refused at
        #: one call has stepped the calls before it (docs/reliability.md).
        self.calls_per_step = 1 if int(options.get("aggregate_num", 32)) >= 32 else None  # type: ignore[call-overload]
        suffix = ",".join(f"{k}={v}" for k, v in options.items())
        self.name = "mxnet" + (f"[{suffix}]" if suffix else "")

    def unavailable_reason(self) -> str | None:
        return None

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> MxnetRun:
        return MxnetRun(hp, params, **self.options)

    def construct(self, params: Mapping[str, Array], fields: Mapping[str, Any]) -> None:
        given = {"flavor": "paper", "lr": 0.1, **fields}
        OneLARS(given.pop("lr"), param_idx2name=dict(enumerate(params)), **given, **self.options)  # type: ignore[arg-type]


def per_tensor() -> MxnetDriver:
    return MxnetDriver(aggregate_num=1)
