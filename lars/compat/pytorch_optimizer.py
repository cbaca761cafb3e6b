"""`LARS`: `pytorch_optimizer.LARS` 4.1.0, as `lars.backends.torch.LARS` in flavor
"pytorch_optimizer".

    from pytorch_optimizer import LARS  ->  from lars.compat.pytorch_optimizer import LARS

The signature and defaults are pytorch_optimizer's (lr 1e-3, momentum 0.9, no eps; tensors with
ndim <= 1 get neither weight decay nor a trust ratio; the buffer starts at zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from lars.compat._torch import Arguments, DropIn, refuse_group_keys, truth, warn_ignored

#: Read once from the constructor by pytorch_optimizer: a param group's value would be ignored.
OPTIMIZER_WIDE = {"maximize": "no param-group maximize: pytorch_optimizer.LARS reads only the "
                              "constructor's (pass maximize=... to LARS)"}


class LARS(DropIn):
    """pytorch_optimizer.LARS 4.1.0: same arguments, same defaults, same updates.

    `nesterov` with `momentum == 0` has no effect there and none here. Values the library accepts
    and the core cannot express (nesterov with dampening != 0, trust_coefficient == 0, a tensor
    lr, `maximize` in a param group, which the library ignores) raise `lars.HyperparameterError`
    naming the argument. Unknown keyword arguments are ignored, as the library ignores them, with
    a warning. Unlike the library, `p.grad` is left as it was.
    """

    LIBRARY = "pytorch_optimizer.LARS 4.1.0"
    FLAVOR = "pytorch_optimizer"
    ARGUMENTS: ClassVar[Arguments] = {"nesterov": ("nesterov", truth)}
    #: its per-group step counter, which its update never reads
    BOOKKEEPING = ("step",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, weight_decay: float = 0.0,
                 momentum: float = 0.9, dampening: float = 0.0, trust_coefficient: float = 1e-3,
                 nesterov: bool = False, foreach: bool | None = None, maximize: bool = False,
                 **kwargs: Any) -> None:
        warn_ignored(self.LIBRARY, kwargs)
        # Groups without their own `nesterov` take this one, even where the constructor's
        # momentum is 0 (where it is a no-op, and the core refuses it).
        self._nesterov = truth(nesterov)
        self._build(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, dampening=dampening,
                                 trust_coefficient=trust_coefficient, nesterov=nesterov, foreach=foreach,
                                 maximize=truth(maximize)))

    @classmethod
    def translate(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        out = super().translate(values)
        # The library applies Nesterov inside `if momentum > 0`: with no momentum it is a no-op.
        if "nesterov" in out and out.get("momentum") == 0:
            out["nesterov"] = False
        return out

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        refuse_group_keys(param_group, OPTIMIZER_WIDE)
        defaults = {"nesterov": self._nesterov, "momentum": self.defaults["momentum"]}
        super().add_param_group({**defaults, **param_group})
