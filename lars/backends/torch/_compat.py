"""torch's private APIs that the adapter uses, in one place (checked on torch 2.13.0).

`tests/torch/test_torch_compat.py` fails if one of them changes: the fused kernel's formula,
the multi-tensor ops, FSDP1's flag on flattened parameters.
"""

from __future__ import annotations

from typing import Any

import torch

#: The fused CPU SGD kernel behind `torch.optim.SGD(fused=True)`: for each tensor, with
#: `u = g + weight_decay*w`, `v = momentum*v + (1 - dampening)*u` and `w -= lr*v`
#: (`w -= lr*(u + momentum*v)` with nesterov), in place, in one pass over the memory.
fused_sgd = torch._fused_sgd_

#: The multi-tensor ops of `torch.optim`'s foreach paths (lists of tensors; a list of 0-d
#: tensors as the scalars, which needs no host synchronisation).
foreach_norm = torch._foreach_norm
foreach_mul = torch._foreach_mul
foreach_mul_ = torch._foreach_mul_
foreach_add_ = torch._foreach_add_
foreach_copy_ = torch._foreach_copy_


def is_flattened_by_fsdp1(p: Any) -> bool:
    """FSDP1 (`FullyShardedDataParallel`) marks the flat pieces it hands an optimizer."""
    return bool(getattr(p, "_fsdp_flattened", False))
