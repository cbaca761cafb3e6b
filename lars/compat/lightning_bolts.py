"""`LARS`: Lightning Bolts' `pl_bolts.optimizers.LARS` (lightning-bolts 0.7.0), as
`lars.backends.torch.LARS` in flavor "lightning_bolts".

    from pl_bolts.optimizers import LARS    ->  from lars.compat.lightning_bolts import LARS
    from lightly.utils.lars import LARS     ->  from lars.compat.lightning_bolts import LARS

The signature and defaults are Bolts' (lr required). `lightly.utils.lars.LARS` (lightly 1.6.0)
is Bolts' code with type hints: the same update (lr has no default there, so every call that
works with lightly works here). A group with `weight_decay == 0` is plain SGD; where a norm is
zero the step is plain SGD too, without weight decay.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from torch.optim.optimizer import required

from lars.compat._torch import Arguments, DropIn, truth
from lars.core.errors import HyperparameterError


class LARS(DropIn):
    """pl_bolts.optimizers.LARS (lightning-bolts 0.7.0): same arguments, same defaults, same
    updates.

    Values Bolts accepts and the core cannot express (momentum >= 1, dampening outside [0, 1],
    trust_coefficient <= 0, a negative eps, a tensor lr) raise `lars.HyperparameterError` naming
    the argument.
    """

    LIBRARY = "pl_bolts.optimizers.LARS (lightning-bolts 0.7.0)"
    FLAVOR = "lightning_bolts"
    ARGUMENTS: ClassVar[Arguments] = {"nesterov": ("nesterov", truth)}

    def __init__(self, params: Iterable[Any], lr: Any = required, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, trust_coefficient: float = 0.001,
                 eps: float = 1e-8) -> None:
        self._lr_required = lr is required
        if self._lr_required:
            # As torch.optim: without a default, every param group must give its own lr.
            params = list(params)
            lrs = [g["lr"] for g in params if isinstance(g, dict) and "lr" in g]
            lr = lrs[0] if lrs else None
        self._build(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                 nesterov=nesterov, trust_coefficient=trust_coefficient, eps=eps))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self._lr_required and "lr" not in param_group:
            raise HyperparameterError("lr", required, "a learning rate: LARS was built without lr, so each "
                                      "param group needs its own (as in Lightning Bolts)")
        super().add_param_group(param_group)
