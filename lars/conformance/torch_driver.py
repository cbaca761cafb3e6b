"""The conformance driver of the PyTorch adapter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lars.backends.torch import LARS
from lars.core.hyperparams import Hyperparams
from lars.core.state import State

Array = np.ndarray


class TorchRun:
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array], **options: object) -> None:
        self._params = {n: torch.nn.Parameter(torch.from_numpy(np.array(p, copy=True)))
                        for n, p in params.items()}
        self.optimizer = LARS(list(self._params.items()), hyperparameters=hp, **options)  # type: ignore[arg-type]

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        for name, p in self._params.items():
            g = None if (x := grads.get(name)) is None else torch.from_numpy(np.array(x, copy=True))
            if g is not None and p.grad is not None and (g.shape != p.shape or g.dtype != p.dtype):
                p.grad.data = g  # past autograd's own check, as `.data` gets: the adapter's is tested
            else:
                p.grad = g
        self.optimizer.set_lr(lr)
        self.optimizer.step()

    def params(self) -> dict[str, Array]:
        return {n: p.detach().numpy().copy() for n, p in self._params.items()}

    def state(self) -> State:
        return self.optimizer.export_state()

    def load(self, state: State) -> None:
        self.optimizer.import_state(state)

    def trust_ratios(self) -> dict[str, float]:
        return self.optimizer.trust_ratios()

    def hyperparameters(self) -> Hyperparams:
        return self.optimizer.hyperparameters

    def set_lr(self, lr: Any) -> None:
        self.optimizer.set_lr(lr)


class TorchDriver:
    """`lars.backends.torch.LARS` on CPU; `options` pick the path (fused, foreach)."""

    dtypes = ("float64", "float32")

    def __init__(self, **options: object) -> None:
        self.options = options
        suffix = ",".join(f"{k}={v}" for k, v in options.items())
        self.name = "torch" + (f"[{suffix}]" if suffix else "")

    def unavailable_reason(self) -> str | None:
        return None

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> TorchRun:
        return TorchRun(hp, params, **self.options)

    def construct(self, params: Mapping[str, Array], fields: Mapping[str, Any]) -> None:
        named = [(n, torch.nn.Parameter(torch.from_numpy(np.array(p, copy=True)))) for n, p in params.items()]
        LARS(named, **{"flavor": "paper", "lr": 0.1, **fields}, **self.options)  # type: ignore[arg-type]


def single_tensor() -> TorchDriver:
    return TorchDriver(foreach=False, fused=False)


def multi_tensor() -> TorchDriver:
    return TorchDriver(foreach=True, fused=False)
