"""fastai's `Larc` as a conformance peer (the `fastai` flavor), in the torch session.

`fastai/optimizer.py` is loaded by path with the names its `from .torch_basics import *` brings
(fastcore's and torch's): fastai's own imports pull matplotlib, pandas, spaCy and torchvision,
which its LARS does not use. Its `Optimizer` has no exclusion from adaptation; weight decay
is a hyperparameter per parameter group, which is how the exclusions from it are given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lars.conformance.peers import _FilePeer, _Run, _TorchRun, check_expressible, load_file
from lars.core.errors import HyperparameterError
from lars.core.hyperparams import Hyperparams

Array = np.ndarray


class _FastaiRun(_TorchRun):
    def set_lr(self, lr: float) -> None:  # its `param_groups` are copies: hypers are set
        self._optimizer.set_hyper("lr", lr)


class FastaiPeer(_FilePeer):
    name, library, flavor, module = "fastai.Larc", "fastai's Larc 2.8.12", "fastai", "torch"
    #: `trust_ratio_max` is its `clip` (1 or None), `decoupled_weight_decay` its `decouple_wd`
    #: (only True: with L2 regularisation its norm of the gradient includes `wd*w` and its split
    #: denominator adds `wd*||w||` again, which no flavor says).
    ARGUMENTS = ("momentum", "weight_decay", "trust_coefficient", "eps", "trust_ratio_max",
                 "exclude_from_weight_decay")

    def load(self) -> Any:
        import collections
        import collections.abc
        import functools
        import numbers
        import warnings

        import torch

        try:
            import fastcore.all
        except ImportError as exc:
            raise ImportError(f"fastai's optimizer needs fastcore ({exc})") from None
        names = {k: v for k, v in vars(fastcore.all).items() if not k.startswith("_")}
        names.update(torch=torch, Tensor=torch.Tensor, Iterable=collections.abc.Iterable,
                     Callable=collections.abc.Callable, MutableSequence=collections.abc.MutableSequence,
                     Real=numbers.Real, warn=warnings.warn, partial=functools.partial,
                     defaultdict=collections.defaultdict, F=torch.nn.functional)
        return load_file("fastai", "2.8.12", "fastai/optimizer.py",
                         {"fastai": {}, "fastai.torch_basics": names}, package="fastai").Larc

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> _Run:
        check_expressible(hp, self.library, self.flavor, self.ARGUMENTS)
        if hp.trust_ratio_max not in (None, 1.0):
            raise HyperparameterError("trust_ratio_max", hp.trust_ratio_max,
                                      f"1.0 or None ({self.library}'s clip)")
        return _FastaiRun(hp, params, self.make)

    def make(self, hp: Hyperparams, groups: Mapping[tuple[float, bool], list[Any]]) -> Any:
        optimizer = self.load()([ps for ps in groups.values()], lr=hp.lr, mom=hp.momentum,
                                clip=hp.trust_ratio_max is not None, trust_coeff=hp.trust_coefficient,
                                eps=hp.eps, wd=hp.weight_decay)
        optimizer.set_hyper("wd", [wd for wd, _ in groups])
        return optimizer
