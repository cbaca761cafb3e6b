"""PaddlePaddle's `LarsMomentumOptimizer` as a conformance peer (its CPU kernel: `paddle_cpu`).

Paddle excludes tensors from weight decay by a substring of the parameter's name and has no
exclusion from adaptation: its CPU kernel adapts a tensor only where its weight decay is > 0
(`adapt_requires_weight_decay`), which is what the `paddle_cpu` flavor says. Its GPU kernel
adapts every tensor (`paddle`); no GPU build runs here, so that flavor is read, not run.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from lars.conformance.peers import _Peer, _Run, check_expressible
from lars.core.hyperparams import Hyperparams
from lars.core.policy import plan

Array = np.ndarray
#: Paddle's parameter names are unique in a process.
_RUNS = itertools.count()


class _PaddleRun(_Run):
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array]) -> None:
        import paddle

        self._paddle = paddle
        self._shapes = {n: np.shape(p) for n, p in params.items()}
        # Names no other name contains, so that Paddle's substring test picks exactly one tensor.
        run = next(_RUNS)
        self._names = {n: f"<lars_peer_{run}_{i}>" for i, n in enumerate(params)}
        self._params = {}
        for n, p in params.items():
            x = paddle.create_parameter(list(p.shape), str(p.dtype), name=self._names[n])
            x.set_value(p)
            self._params[n] = x
        plans = {str(t.name): t for t in plan(hp, [(n, np.shape(p)) for n, p in params.items()])}
        self._optimizer = paddle.incubate.optimizer.LarsMomentumOptimizer(
            learning_rate=hp.lr, momentum=hp.momentum, lars_coeff=hp.trust_coefficient,
            lars_weight_decay=hp.weight_decay, epsilon=hp.eps, rescale_grad=hp.grad_rescale,
            parameter_list=list(self._params.values()),
            exclude_from_weight_decay=[self._names[n] for n, t in plans.items() if t.weight_decay == 0])

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        paddle = self._paddle
        for n, p in self._params.items():
            g = grads.get(n)
            p.grad = None if g is None else paddle.to_tensor(g)
        self._optimizer.set_lr(lr)
        self._optimizer.step()

    def params(self) -> dict[str, Array]:
        return {n: np.asarray(p.numpy()).reshape(self._shapes[n]) for n, p in self._params.items()}


class PaddlePeer(_Peer):
    name, library, flavor, module = ("paddle.LarsMomentumOptimizer", "PaddlePaddle's LarsMomentumOptimizer "
                                     "3.3.1 (CPU kernel)", "paddle_cpu", "paddle")
    #: Its kernel takes these as float32 attributes whatever the parameters' dtype (its learning
    #: rate stays float64): in float64 it is compared on the values it holds (docs/specification.md).
    float32_fields = ("momentum", "weight_decay", "trust_coefficient", "eps", "grad_rescale")
    ARGUMENTS = ("momentum", "weight_decay", "trust_coefficient", "eps", "grad_rescale",
                 "exclude_from_weight_decay")

    def unavailable_reason(self) -> str | None:
        import importlib.util
        import sys

        installed = importlib.util.find_spec(self.module) is not None  # found, not imported
        if installed and "tensorflow" in sys.modules:  # measured: a segmentation fault, not an exception
            return ("PaddlePaddle 3.3.1 crashes the process when it is imported after TensorFlow: run it "
                    "where TensorFlow is not imported (`nox -s parity_paddle`, `nox -s paddle`)")
        return super().unavailable_reason()

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> _Run:
        check_expressible(hp, self.library, self.flavor, self.ARGUMENTS)
        return _PaddleRun(hp, params)
