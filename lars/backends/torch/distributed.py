"""Sharded parameters (`DTensor`s, as FSDP2's `fully_shard` makes them): whole-tensor norms.

A tensor cut into pieces has `||w||² = Σ_k ||w_k||²`: every rank takes the squared norms of its
pieces, and one `all_reduce` per phase of a step sums the vector of them over the ranks that
hold the other pieces (over the mesh dimensions a tensor is `Shard`ed on only: on a `Replicate`
one every rank holds the same piece). The element-wise update runs on the local pieces
(`DTensor.to_local()`, the same memory), with no communication at all.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def dtensor_module() -> Any:
    """`torch.distributed.tensor` if imported (no `DTensor` exists before): importing it here
    would add a second to every `import lars.backends.torch`."""
    return sys.modules.get("torch.distributed.tensor")


def is_sharded(t: Any) -> bool:
    """Whether `t` is a `DTensor` (sharded or replicated over a device mesh)."""
    module = dtensor_module()
    return module is not None and isinstance(t, module.DTensor)


def local(t: Any, like: Any = None) -> Any:
    """This rank's piece of `t`; a gradient laid out otherwise than its parameter `like` (e.g.
    `Partial`) is redistributed first, so that the pieces line up."""
    if not is_sharded(t):
        return t
    if is_sharded(like) and tuple(t.placements) != tuple(like.placements):
        t = t.redistribute(like.device_mesh, like.placements)
    return t.to_local()


def as_sharded(piece: Tensor, like: Any) -> Any:
    """A local piece made in the step (a new momentum buffer) as a `DTensor` laid out as `like`."""
    if not is_sharded(like):
        return piece
    return dtensor_module().DTensor.from_local(piece, like.device_mesh, like.placements, run_check=False,
                                               shape=like.shape, stride=like.stride())


def whole(t: Any) -> Tensor:
    """The whole tensor on this rank (an all-gather for a `DTensor`: every rank must call it)."""
    return t.full_tensor() if is_sharded(t) else t  # type: ignore[no-any-return]


def shard_like(full: Tensor, like: Any) -> Any:
    """This rank's piece, laid out as `like`, of a whole tensor every rank holds (no communication)."""
    if not is_sharded(like):
        return full
    return dtensor_module().distribute_tensor(full.to(like.device), like.device_mesh, like.placements,
                                              src_data_rank=None)


def sum_over_shards(squares: Tensor, likes: Sequence[Any]) -> Tensor:
    """Entry i of `squares` (a local piece's squared norm) summed over the ranks that hold the
    other pieces of tensor `likes[i]`: one `all_reduce` per distinct mesh and sharded dimensions
    (with FSDP2 one for the whole vector); plain tensors are not summed."""
    groups: dict[tuple[Any, tuple[int, ...]], list[int]] = defaultdict(list)
    for i, like in enumerate(likes):
        dims = tuple(d for d, p in enumerate(like.placements) if isinstance(p, dtensor_module().Shard)) \
            if is_sharded(like) else ()
        if dims:
            groups[(like.device_mesh, dims)].append(i)
    for (mesh, dims), indices in groups.items():
        everything = len(indices) == len(likes)
        index = None if everything else torch.tensor(indices, device=squares.device)
        part = squares if index is None else squares.index_select(0, index)
        on_mesh = part.to(mesh.device_type)  # parameters offloaded to the CPU under a CUDA mesh
        for d in dims:
            dist.all_reduce(on_mesh, group=mesh.get_group(d))
        part = on_mesh.to(squares.device)
        squares = part if index is None else squares.index_copy(0, index, part)
    return squares
