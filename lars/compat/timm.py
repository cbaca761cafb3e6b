"""`Lars`: timm's `timm.optim.Lars` (timm 1.0.31), as `lars.backends.torch.LARS` in flavor "timm".

    from timm.optim import Lars         ->  from lars.compat.timm import Lars

The signature and defaults are timm's (lr 1.0, momentum 0, eps 1e-8, ...). `trust_coeff` is the
core's `trust_coefficient`, `trust_clip` its `larc_clip` (applied to the fallback ratio too, as
timm does), `always_adapt` the negation of `adapt_requires_weight_decay`: without it a group
with `weight_decay == 0` is plain SGD. The same keys are accepted in param groups and in a
state dict saved by timm's `Lars`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from lars.compat._torch import Arguments, DropIn, negated, same, truth


class Lars(DropIn):
    """timm.optim.Lars (timm 1.0.31): same arguments, same defaults, same updates.

    Values timm accepts and the core cannot express (momentum >= 1, dampening outside [0, 1],
    trust_coeff <= 0, a negative eps, a tensor lr) raise `lars.HyperparameterError` naming the
    argument.
    """

    LIBRARY = "timm.optim.Lars (timm 1.0.31)"
    FLAVOR = "timm"
    ARGUMENTS: ClassVar[Arguments] = {
        "nesterov": ("nesterov", truth), "trust_coeff": ("trust_coefficient", same),
        "trust_clip": ("larc_clip", truth), "always_adapt": ("adapt_requires_weight_decay", negated)}

    def __init__(self, params: Iterable[Any], lr: float = 1.0, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, trust_coeff: float = 0.001,
                 eps: float = 1e-8, trust_clip: bool = False, always_adapt: bool = False,
                 foreach: bool | None = None) -> None:
        self._build(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                 nesterov=nesterov, trust_coeff=trust_coeff, eps=eps, trust_clip=trust_clip,
                                 always_adapt=always_adapt, foreach=foreach))
