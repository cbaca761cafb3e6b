"""float16/bfloat16 tensors through the float32 fused kernel, a cache-sized chunk at a time.

torch's fused SGD kernel takes the weight, the gradient and the buffer in one dtype, and LARS
keeps the momentum of a float16/bfloat16 parameter in float32. Whole float32 copies would be
fresh memory at every step (page faults, and several times the memory traffic the step needs):
instead each tensor is walked in chunks of `CHUNK` elements converted into float32 scratch that
stays in the cache; the kernel updates the scratch weights and the float32 buffer in place, and
the new weights are rounded back. The result is the float32 fused step of the up-cast values,
rounded to the parameter's dtype (`docs/torch.md`, mixed precision).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import Tensor

#: float32 elements per scratch array: 4 MiB each, within a last-level cache; each chunk costs
#: a few calls (tens of µs), which smaller chunks pay more often than the cache repays them.
CHUNK = 1 << 20

Kernel = Callable[[list[Tensor], list[Tensor], list[Tensor]], None]


_kept = threading.local()


def scratch(elements: int) -> Tensor:
    """A float32 CPU scratch array of `elements`, kept between steps (one per thread): a few MiB
    allocated at every step can come back from the C allocator as fresh pages, faulted in anew."""
    kept: Tensor | None = getattr(_kept, "array", None)
    if kept is None or kept.numel() < elements:
        kept = _kept.array = torch.empty(elements, dtype=torch.float32)
    return kept[:elements]


def scratch_for(params: list[Tensor], grads: list[Tensor]) -> Tensor | None:
    """Float32 scratch for a step of these tensors (none if all are float32 already)."""
    staged = [p for p, g in zip(params, grads, strict=True)
              if p.dtype != torch.float32 or g.dtype != torch.float32]
    if not staged:
        return None
    size = min(CHUNK, max(p.numel() for p in staged))
    return scratch(2 * size).view(2, size)


def staged_step(kernel: Kernel, param: Tensor, grad: Tensor, buffer: Tensor | None,
                scratch: Tensor) -> None:
    """`kernel([w], [g], [v])` on a parameter or gradient that is not float32, chunk by chunk
    (`param`, `grad`, `buffer` contiguous, `buffer` float32: `functional.fusable` checks)."""
    flat_param, flat_grad = param.view(-1), grad.view(-1)
    flat_buffer = None if buffer is None else buffer.view(-1)
    for start in range(0, flat_param.numel(), CHUNK):
        stop = min(start + CHUNK, flat_param.numel())
        w = stage(flat_param[start:stop], scratch[0])
        g = stage(flat_grad[start:stop], scratch[1])
        kernel([w], [g], [] if flat_buffer is None else [flat_buffer[start:stop]])
        if w.data_ptr() != flat_param[start:stop].data_ptr():
            flat_param[start:stop].copy_(w)


def stage(chunk: Tensor, scratch: Tensor) -> Tensor:
    """`chunk` itself if float32, else its values converted into the start of `scratch`."""
    if chunk.dtype == torch.float32:
        return chunk
    return scratch[:chunk.numel()].copy_(chunk)
