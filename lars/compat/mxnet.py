"""`LARS`: a drop-in for `mxnet.optimizer.LARS` (MXNet 1.9.1), with its exact signature and
defaults, registered with MXNet as "onelars_mxnet" (MXNet's own "lars" is left as it is).

Migrating is one import line, `from lars.compat.mxnet import LARS`, or one string,
`gluon.Trainer(params, "onelars_mxnet", {...})`. It is our `OneLARS` (flavor "mxnet"), so
`lars.backends.mxnet.export_state` and the rest of ours work on it.

MXNet's LARS decides by name as follows, and so does this class: a tensor is named by
`param_idx2name` only, else by its index (Gluon's Trainer gives no `param_idx2name`, so under it
every tensor is decayed and adapted); the ratio is not applied to names ending in gamma, beta
or bias; weight decay is MXNet's `wd * wd_mult`, where `set_wd_mult` zeroes names of
`param_idx2name` not ending in `_weight`, then takes the symbol's `__wd_mult__` and the
multipliers given (a Gluon parameter's `wd_mult` first, as MXNet's `_get_wds` reads it).
"""

from __future__ import annotations

import os
from typing import Any

import mxnet as mx

from lars.backends.mxnet import OneLARS
from lars.core.errors import HyperparameterError
from lars.core.policy import Exclude

#: The name `mx.optimizer.create` and `gluon.Trainer` know this class by.
REGISTERED_AS = "onelars_mxnet"
#: `mx.optimizer.Optimizer.__init__`'s arguments (MXNet 1.9.1), which MXNet's LARS takes as **kwargs.
OPTIMIZER_ARGUMENTS = ("rescale_grad", "param_idx2name", "wd", "clip_gradient", "learning_rate",
                       "lr_scheduler", "sym", "begin_num_update", "multi_precision", "param_dict")
#: Our field -> MXNet's argument, so that an error names what the caller wrote.
_THEIR_NAMES = {"lr": "learning_rate", "weight_decay": "wd", "trust_coefficient": "eta",
                "grad_rescale": "rescale_grad", "grad_clip_value": "clip_gradient"}


class LARS(OneLARS):
    """`mxnet.optimizer.LARS` (MXNet 1.9.1) as our `OneLARS(flavor="mxnet")`.

    Every argument is mapped: `momentum`, `eta` (our `trust_coefficient`), `eps`,
    `momentum_correction` (reaching the tensors of MXNet's first update call of a step: as many
    as MXNET_OPTIMIZER_AGGREGATION_SIZE says, 4 by default, read here as MXNet's LARS reads it),
    and MXNet's `learning_rate`, `lr_scheduler`, `wd`, `rescale_grad`, `clip_gradient` (0, negative
    or None: no clipping, as MXNet's kernels read it), `param_idx2name`, `param_dict`, `sym` (its
    `__lr_mult__` and `__wd_mult__`), `begin_num_update` and `multi_precision`. `lazy_update` only
    changes MXNet's step on row_sparse arrays, which ours refuses (RuntimeError at the update).
    `lars.HyperparameterError` names an argument ours cannot take; an unknown keyword is
    MXNet's TypeError.
    """

    def __init__(self, momentum: float = 0.0, lazy_update: bool = True, eta: float = 0.001, eps: float = 0,
                 momentum_correction: bool = True, **kwargs: Any) -> None:
        if unknown := sorted(set(kwargs) - set(OPTIMIZER_ARGUMENTS)):
            raise TypeError(f"__init__() got an unexpected keyword argument {unknown[0]!r}")
        if not isinstance(lazy_update, bool):
            raise HyperparameterError("lazy_update", lazy_update, "True or False")
        sym, begin_num_update = kwargs.pop("sym", None), kwargs.pop("begin_num_update", 0)
        clip = kwargs.get("clip_gradient")
        if clip is not None and not isinstance(clip, bool) and isinstance(clip, (int, float)) and clip <= 0:
            kwargs["clip_gradient"] = None  # MXNet's `if self.clip_gradient`, and its kernels' `<= 0: off`
        try:
            super().__init__(
                flavor="mxnet", momentum=momentum, eta=eta, eps=eps, momentum_correction=momentum_correction,
                # MXNet's LARS corrects the momentum in its first update call of a step only.
                momentum_correction_tensors=int(os.getenv("MXNET_OPTIMIZER_AGGREGATION_SIZE", "4")),
                # Weight decay by name is MXNet's own `set_wd_mult` (below), not a rule of ours.
                exclude_from_weight_decay=Exclude(), **kwargs)
        except HyperparameterError as exc:
            field = _THEIR_NAMES.get(exc.field, exc.field)
            raise HyperparameterError(field, exc.value, exc.allowed) from None
        self.lazy_update = lazy_update
        self.begin_num_update = self.num_update = begin_num_update
        # mxnet 1.9.1 `Optimizer.__init__`: the symbol's attributes give lr_mult and wd_mult.
        self.sym_info: tuple[Any, ...] = (sym.attr_dict(), sym.list_arguments()) if sym is not None else ()
        self.set_lr_mult({})
        self.set_wd_mult({})

    def set_wd_mult(self, args_wd_mult: dict[Any, float]) -> None:
        """MXNet 1.9.1 `LARS.set_wd_mult`, line for line: no weight decay for names of
        `param_idx2name` not ending in `_weight`, then the symbol's `__wd_mult__`, then these."""
        self.wd_mult = {n: 0.0 for n in self.idx2name.values() if not n.endswith("_weight")}
        if self.sym_info:
            attr, arg_names = self.sym_info
            for name in arg_names:
                if name in attr and "__wd_mult__" in attr[name]:
                    self.wd_mult[name] = float(attr[name]["__wd_mult__"])
        self.wd_mult.update(args_wd_mult)

    def name_of(self, index: int) -> str | None:
        """The name MXNet's LARS gives tensor `index` (`param_idx2name`, else the index)."""
        return str(self.idx2name.get(index, index))


mx.optimizer.Optimizer.opt_registry.setdefault(REGISTERED_AS, LARS)  # register() would name it "lars"

__all__ = ["LARS", "REGISTERED_AS"]
