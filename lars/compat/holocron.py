"""`LARS`: Holocron's `holocron.optim.LARS` (PyPI pylocron 0.3.0), as `lars.backends.torch.LARS`
in flavor "holocron".

    from holocron.optim import LARS     ->  from lars.compat.holocron import LARS

The signature and defaults are Holocron's. Its LARS has no trust coefficient and no eps, and
applies the ratio ||w|| / (||g|| + wd*||w||) outside the momentum buffer, at read time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch

from lars.compat._torch import Arguments, DropIn, truth

#: What Holocron stores when `scale_clip` is None.
DEFAULT_SCALE_CLIP = (0.0, 10.0)


class LARS(DropIn):
    """holocron.optim.LARS (pylocron 0.3.0): same arguments, same defaults, same updates.

    `scale_clip` is stored as `self.scale_clip`, as Holocron stores it, and, as in Holocron's
    `LARS` (only its `RaLars` reads it), has no effect on the update. Holocron refuses an int
    `lr`; this accepts it. Values the core cannot express (momentum >= 1, dampening outside
    [0, 1], a tensor lr) raise `lars.HyperparameterError` naming the argument. Unlike Holocron,
    `p.grad` is left as it was.
    """

    LIBRARY = "holocron.optim.LARS (pylocron 0.3.0)"
    FLAVOR = "holocron"
    ARGUMENTS: ClassVar[Arguments] = {"nesterov": ("nesterov", truth)}

    def __init__(self, params: Iterable[torch.nn.parameter.Parameter], lr: float = 1e-3,
                 momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, scale_clip: tuple[float, float] | None = None) -> None:
        self._build(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                 nesterov=nesterov))
        self.scale_clip = DEFAULT_SCALE_CLIP if scale_clip is None else scale_clip
