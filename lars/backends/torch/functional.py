"""The LARS step in torch ops: `lars()` with per-tensor, multi-tensor and fused-kernel paths.

Modelled on `torch/optim/sgd.py`. The math is the core's (`lars.core.reference`), written
with torch ops and without host synchronisation on the per-tensor and multi-tensor paths:
every decision on a norm is a `torch.where`, so a step can be captured in a CUDA graph or
compiled. The fused path (CPU only) reads the trust ratios on the host, where that costs
nothing, and hands each tensor to torch's fused SGD kernel with per-tensor coefficients
chosen so that the kernel computes the LARS update in one pass over the memory:

    kernel:  v = M*v + (1-D)*(g + WD*w);   w -= LR*v
    LARS:    v = m*v + (1-d)*s*(g + wd*w); w -= lr_out*v     (s = lr*r, r or 1 by style)
    so       M = m, WD = wd, D = 1 - (1-d)*s, LR = 1, lr or lr*r.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lars.backends.torch import distributed, low_precision
from lars.backends.torch.distributed import Layout, as_sharded, is_sharded, layout_of, local
from lars.core.hyperparams import Hyperparams

LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass
class TensorGroup:
    """One step's tensors of one parameter group (and one device and dtype).

    `grads` are the gradients as handed over, or, if `prepared`, already through `maximize`,
    `grad_rescale` and clipping (`prepare_gradients`), with `norm_grads` what the norms see.
    `layouts` (set by `localized`) says that the tensors are this rank's pieces of sharded
    tensors; `ratio_norms` are their whole-tensor norms if already summed over the shards for a
    whole step (`reduce_ratio_norms`).
    """

    params: list[Tensor]
    grads: list[Tensor]
    buffers: list[Tensor | None]
    weight_decays: list[float]
    adapt: list[bool]
    momenta: list[float]
    norm_grads: list[Tensor] | None = None
    prepared: bool = False
    layouts: list[Layout | None] | None = None
    ratio_norms: list[Tensor] | None = None


def needs_preparation(hp: Hyperparams) -> bool:
    """Whether gradients must be rescaled or clipped before the step."""
    return hp.grad_rescale != 1.0 or hp.grad_clip_value is not None or hp.grad_clip_norm is not None


@functools.lru_cache(maxsize=64)
def plan_tensors(weight_decays: tuple[float, ...], adapt: tuple[bool, ...], device: torch.device,
                 dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The per-tensor weight decays and adaptation flags as device tensors, made once: a copy
    from the host every step would synchronise a CUDA stream and break graph capture."""
    return (torch.tensor(weight_decays, dtype=dtype, device=device),
            torch.tensor(adapt, dtype=torch.bool, device=device))


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms and momentum of float16/bfloat16 tensors are computed in float32."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def scale_and_clip(grads: list[Tensor], hp: Hyperparams) -> tuple[list[Tensor], list[Tensor]]:
    """`maximize`, `grad_rescale` and element-wise clipping; returns (for update, for norms)."""
    factor = (-1.0 if hp.maximize else 1.0) * hp.grad_rescale
    scaled = list(grads) if factor == 1.0 else list(torch._foreach_mul(grads, factor))
    clipped = scaled
    if hp.grad_clip_value is not None:
        clipped = [g.clamp(-hp.grad_clip_value, hp.grad_clip_value) for g in clipped]
    return clipped, (clipped if hp.clip_before_norms else scaled)


def squared_norm(tensors: list[Tensor]) -> Tensor:
    """The sum of squares of all tensors, in float64, for the global-norm clip."""
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float64)).square().sum()


def sharded_global_norm(tensors: list[Tensor], layouts: list[Layout | None]) -> Tensor:
    """The global norm of whole tensors given as local pieces: one sum over the shards."""
    squares = torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float64)).square()
    return distributed.sum_over_shards(squares, layouts).sum().sqrt()


def clip_global_norm(update: list[Tensor], norm_source: list[Tensor], hp: Hyperparams, total: Tensor,
                     ) -> tuple[list[Tensor], list[Tensor]]:
    """Scales every gradient by `c / total` where the global norm `total` exceeds `c`."""
    if hp.grad_clip_norm is None:
        return update, norm_source
    coefficient = torch.where(total > hp.grad_clip_norm, hp.grad_clip_norm / total, 1.0)
    clipped = [g * coefficient.to(g.dtype) for g in update]
    return clipped, (clipped if hp.clip_before_norms else norm_source)


NORM_PIECE = 1 << 10  # elements: a float32 sum over this many is good to about one unit of rounding
NORM_WHOLE = 1 << 14  # elements: torch's own norm up to this size is within 2e-7 (measured)


def norms(tensors: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """The L2 norm of each whole tensor, as one vector.

    torch's CPU norm sums a tensor's squares in its own dtype, lane by lane: in float32 its
    relative error grows with the size, 4e-5 at 2.4M elements and 1.2e-3 at 25M, where JAX and
    TensorFlow are within 2e-8 (`docs/torch.md`). A CPU tensor larger than `NORM_WHOLE` is
    taken in pieces of `NORM_PIECE` whose squared norms are summed in float64: within about one
    unit of float32 rounding at any size, and no slower (the rows' reduction took 3.4 ms where
    torch's own norm took 5.3 ms, ResNet-50's large tensors). Smaller tensors, float64 and other
    devices keep torch's norm.
    """
    if not tensors:
        return torch.zeros(0, dtype=dtype)
    pieced = [in_pieces(t, dtype) for t in tensors]
    if not any(pieced):
        return torch.stack(torch._foreach_norm(list(tensors), 2, dtype=dtype))
    small = [t for t, p in zip(tensors, pieced, strict=True) if not p]
    small_norms = iter(torch._foreach_norm(small, 2, dtype=dtype) if small else ())
    scratch = low_precision.scratch(CONVERT_BLOCK)
    parts = [piece_norms(t, scratch) for t, p in zip(tensors, pieced, strict=True) if p]
    owner = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor([len(p) for p in parts]))
    squares = torch.zeros(len(parts), dtype=torch.float64).index_add_(
        0, owner, torch.cat(parts).double().square())
    large_norms = iter(squares.sqrt().to(dtype).unbind())
    return torch.stack([next(large_norms) if p else next(small_norms) for p in pieced])


CONVERT_BLOCK = 1 << 20  # elements of a float16/bfloat16 tensor converted at a time, a whole number of pieces


def piece_norms(tensor: Tensor, scratch: Tensor) -> Tensor:
    """The norms of `tensor`'s consecutive pieces of `NORM_PIECE` elements, in `scratch`'s dtype.

    The whole pieces are the rows of a matrix, one reduction for all. A float16/bfloat16 tensor
    is converted a block at a time into `scratch`: a converted copy of the whole tensor would be
    fresh memory, whose page faults cost more than the sums.
    """
    flat = tensor.view(-1)
    whole = flat.numel() // NORM_PIECE * NORM_PIECE
    rows, rest = flat[:whole].view(-1, NORM_PIECE), flat[whole:]
    if tensor.dtype == scratch.dtype:
        parts = [torch.linalg.vector_norm(rows, dim=1)]
    else:
        parts = [torch.linalg.vector_norm(scratch[:block.numel()].view(block.shape).copy_(block), dim=1)
                 for block in torch.split(rows, CONVERT_BLOCK // NORM_PIECE)]
    if rest.numel():
        parts.append(torch.linalg.vector_norm(rest, dtype=scratch.dtype).view(1))
    return torch.cat(parts)


def in_pieces(tensor: Tensor, dtype: torch.dtype) -> bool:
    """Whether `norms` takes this tensor's norm in pieces (float32 sums: float64 ones are accurate
    already)."""
    return (tensor.device.type == "cpu" and dtype == torch.float32 and tensor.numel() > NORM_WHOLE
            and tensor.is_contiguous())


def trust_ratio(hp: Hyperparams, w_norm: Tensor, denominator: Tensor, guard: Tensor, lr: float,
                ) -> tuple[Tensor, Tensor]:
    """`eta*||w|| / (denominator + eps)` where `||w|| > 0 and guard > 0`, else 1; LARC clip.

    Works elementwise on vectors of norms. Returns (ratio, valid).
    """
    valid = (w_norm > 0) & (guard > 0)
    ratio = torch.where(valid, hp.trust_coefficient * w_norm / (denominator + hp.eps), 1.0)
    if hp.larc_clip:
        clipped = torch.clamp(ratio / lr, max=1.0) if lr > 0 else torch.ones_like(ratio)
        ratio = clipped if hp.larc_clip_on_fallback else torch.where(valid, clipped, ratio)
    return ratio, valid


def whole_norms(lists: Sequence[Sequence[Tensor]], dtype: torch.dtype,
                layouts: Sequence[Layout | None] | None) -> list[Tensor]:
    """`norms` of each list; of pieces of sharded tensors (`layouts`): `sqrt` of the squared norms
    of the pieces summed over the shards (in float64), one sum for all lists together."""
    if layouts is None or not lists:
        return [norms(tensors, dtype) for tensors in lists]
    squares = torch.cat([norms(tensors, dtype).double().square() for tensors in lists])
    total = distributed.sum_over_shards(squares, list(layouts) * len(lists))
    return list(total.sqrt().to(dtype).view(len(lists), len(layouts)).unbind())


def norm_sources(hp: Hyperparams, weights: list[Tensor], g_norm_source: list[Tensor], wd: Tensor,
                 ) -> list[list[Tensor]]:
    """The tensors whose norms the ratio before the momentum needs: w, g, and g + wd*w for the
    combined denominator; none for the "update" denominator, whose ratio comes after."""
    if hp.trust_denominator == "update":
        return []
    if hp.trust_denominator == "combined":
        decayed = torch._foreach_add(g_norm_source, torch._foreach_mul(weights, list(wd.unbind())))
        return [weights, g_norm_source, list(decayed)]
    return [weights, g_norm_source]


def ratios_before_momentum(hp: Hyperparams, source_norms: list[Tensor], wd: Tensor, adapt: Tensor,
                           lr: float) -> tuple[Tensor, Tensor]:
    """The ratio of every tensor and whether weight decay stays (False on a dropped fallback),
    from the norms of `norm_sources`."""
    if hp.trust_denominator == "update":
        return torch.ones_like(wd), torch.ones_like(adapt)
    w_norm, g_norm = source_norms[0], source_norms[1]
    if hp.trust_denominator == "split":
        denominator = g_norm + wd * w_norm
    elif hp.trust_denominator == "combined":
        denominator = source_norms[2]
    else:  # "grad"
        denominator = g_norm
    guard = g_norm if hp.zero_norm_rule == "weight_and_grad" else denominator
    ratio, valid = trust_ratio(hp, w_norm, denominator, guard, lr)
    ratio = torch.where(adapt, ratio, 1.0)
    keep_wd = torch.ones_like(adapt) if hp.weight_decay_on_fallback else ~(adapt & ~valid)
    return ratio, keep_wd


def step_inputs(group: TensorGroup) -> tuple[torch.dtype, list[Tensor], list[Tensor], list[Tensor],
                                             Tensor, Tensor]:
    """The dtype of the math and, in it, the weights, the gradients for the update and for the
    norms, and the weight decays and adaptation flags as tensors."""
    dtype = compute_dtype(group.params[0].dtype)
    weights = [p.to(dtype) for p in group.params] if dtype != group.params[0].dtype else group.params
    g_update = [g.to(dtype) for g in group.grads]
    g_norm_source = g_update if group.norm_grads is None else [g.to(dtype) for g in group.norm_grads]
    wd, adapt = plan_tensors(tuple(group.weight_decays), tuple(group.adapt), weights[0].device, dtype)
    return dtype, weights, g_update, g_norm_source, wd, adapt


def source_norms(hp: Hyperparams, group: TensorGroup, weights: list[Tensor], g_norm_source: list[Tensor],
                 wd: Tensor, dtype: torch.dtype) -> list[Tensor]:
    """The whole-tensor norms of `norm_sources`: given, or computed (and summed over shards)."""
    if group.ratio_norms is not None:
        return group.ratio_norms
    return whole_norms(norm_sources(hp, weights, g_norm_source, wd), dtype, group.layouts)


def momentum_directions(hp: Hyperparams, increments: list[Tensor], group: TensorGroup,
                        ) -> list[Tensor]:
    """`v = m*v + (1-d)*inc` (a copy or zero start); returns the directions that update `w`."""
    if hp.momentum == 0:
        return increments
    keep = 1.0 - hp.dampening
    running = [i for i, buf in enumerate(group.buffers) if buf is not None]
    for i, inc in enumerate(increments):
        if group.buffers[i] is None:
            group.buffers[i] = inc.clone() if hp.buffer_start == "copy" else inc * keep
    buffers = [b for b in group.buffers if b is not None]  # every one exists now
    if running:
        bufs = [buffers[i] for i in running]
        torch._foreach_mul_(bufs, [group.momenta[i] for i in running])
        torch._foreach_add_(bufs, [increments[i] for i in running], alpha=keep)
    if hp.nesterov:
        return list(torch._foreach_add(increments, torch._foreach_mul(buffers, group.momenta)))
    return buffers


def multi_tensor_lars(hp: Hyperparams, group: TensorGroup, lr: float) -> Tensor:
    """One step of `group` with `torch._foreach_*` ops; returns the trust ratios."""
    dtype, weights, g_update, g_norm_source, wd, adapt = step_inputs(group)
    low = dtype != group.params[0].dtype
    if hp.maximize and not group.prepared:
        g_update = list(torch._foreach_neg(g_update))
    ratio, keep_wd = ratios_before_momentum(
        hp, source_norms(hp, group, weights, g_norm_source, wd, dtype), wd, adapt, lr)
    effective_wd = list(torch.where(keep_wd, wd, 0.0).unbind())
    decayed = torch._foreach_add(g_update, torch._foreach_mul(weights, effective_wd))
    if hp.momentum_style == "heavy_ball":
        increments = list(torch._foreach_mul(decayed, list((lr * ratio).unbind())))
    elif hp.momentum_style == "sgd":
        increments = list(torch._foreach_mul(decayed, list(ratio.unbind())))
    else:
        increments = list(decayed)
    directions = momentum_directions(hp, increments, group)
    if hp.trust_denominator == "update":
        w_norm, d_norm = whole_norms([weights, directions], dtype, group.layouts)
        ratio, _ = trust_ratio(hp, w_norm, d_norm, d_norm, lr)
        ratio = torch.where(adapt, ratio, 1.0)
    if hp.momentum_style == "heavy_ball":
        torch._foreach_sub_(weights, directions)
    elif hp.momentum_style == "sgd":
        torch._foreach_add_(weights, directions, alpha=-lr)
    else:
        torch._foreach_sub_(weights, torch._foreach_mul(directions, list((lr * ratio).unbind())))
    if low:
        torch._foreach_copy_(group.params, weights)
    return ratio


def single_tensor_lars(hp: Hyperparams, group: TensorGroup, lr: float) -> Tensor:
    """One step of `group`, one tensor at a time with plain torch ops."""
    ratios = []
    for i in range(len(group.params)):
        norm_grads = None if group.norm_grads is None else [group.norm_grads[i]]
        one = TensorGroup([group.params[i]], [group.grads[i]], [group.buffers[i]],
                          [group.weight_decays[i]], [group.adapt[i]], [group.momenta[i]],
                          norm_grads, group.prepared,
                          None if group.layouts is None else [group.layouts[i]],
                          None if group.ratio_norms is None else [n[i:i + 1] for n in group.ratio_norms])
        ratios.append(multi_tensor_lars(hp, one, lr))
        group.buffers[i] = one.buffers[0]
    return torch.cat(ratios) if ratios else torch.zeros(0)


def fusable(hp: Hyperparams, params: Sequence[Tensor], grads: Sequence[Tensor],
            buffers: Sequence[Tensor | None] = ()) -> str | None:
    """None if the fused kernel can compute this step exactly, else why not."""
    if any(p.device.type != "cpu" for p in params):
        return "the fused path runs on CPU tensors (CUDA uses the sync-free foreach path)"
    if any(t.dtype not in (torch.float32, *LOW_PRECISION) for t in [*params, *grads]):
        # The kernel carries the scale s as 1 - D with an absolute error of ~1e-16, i.e. an
        # error of ~1e-16 * ||g||/||w|| of w per step: far below float32's tolerance, but
        # measured at 2e-11 in float64 on the case with tiny weights and large gradients.
        return "the fused path takes float32, float16 and bfloat16 tensors"
    if any(b is not None and b.dtype != torch.float32 for b in buffers):
        return "the fused path keeps its momentum buffers in float32"
    staged = [(w, g) for w, g in zip(params, grads, strict=True)
              if w.dtype != torch.float32 or g.dtype != torch.float32]
    if staged and hp.trust_denominator == "combined":
        return "the combined denominator of float16/bfloat16 tensors needs a float32 copy of g + wd*w"
    if any(not t.is_contiguous() for pair in staged for t in pair):
        return "float16/bfloat16 tensors go through the fused kernel in contiguous chunks"
    if hp.nesterov and hp.momentum_style != "ratio_outside":
        return "nesterov needs the scaled increment in the direction, which the kernel cannot take"
    if hp.trust_denominator == "update":
        return "a ratio from the momentum output is known only after the momentum update"
    # The kernel walks the parameter, gradient and buffer memory in step: a transposed or
    # channels-last parameter needs its gradient and buffer in the same layout.
    if any(t is not None and t.stride() != w.stride()
           for w, g, v in itertools.zip_longest(params, grads, buffers) for t in (g, v)):
        return "the fused kernel needs the gradient and the momentum buffer in the parameter's memory layout"
    return None


def fused_lars(hp: Hyperparams, group: TensorGroup, lr: float) -> Tensor:
    """One step of `group` on CPU: ratios on the host, then one fused-kernel pass per tensor
    (float16/bfloat16 tensors through float32 scratch, `low_precision`)."""
    if hp.momentum != 0 and 0.0 in group.momenta:  # a corrected momentum of 0 (lr 0): rare
        return multi_tensor_lars(hp, group, lr)
    dtype = torch.float32
    g_norm_source = group.grads if group.norm_grads is None else group.norm_grads
    wd, adapt = plan_tensors(tuple(group.weight_decays), tuple(group.adapt), group.params[0].device, dtype)
    ratio, keep_wd = ratios_before_momentum(
        hp, source_norms(hp, group, group.params, g_norm_source, wd, dtype), wd, adapt, lr)
    ratios, keeps = ratio.tolist(), keep_wd.tolist()
    momentum, keep = hp.momentum, 1.0 - hp.dampening
    scratch = low_precision.scratch_for(group.params, group.grads)
    for i, (w, g) in enumerate(zip(group.params, group.grads, strict=True)):
        r = ratios[i]
        scale, step_lr = {"heavy_ball": (lr * r, 1.0), "sgd": (r, lr)}.get(hp.momentum_style, (1.0, lr * r))
        first = group.buffers[i] is None
        if momentum != 0 and first:
            group.buffers[i] = torch.zeros_like(w, dtype=dtype)
        start_keep = 1.0 if (first and hp.buffer_start == "copy") else keep
        kernel = functools.partial(
            torch._fused_sgd_, weight_decay=group.weight_decays[i] if keeps[i] else 0.0,
            momentum=group.momenta[i], lr=step_lr if momentum != 0 else lr * r,
            dampening=1.0 - start_keep * scale, nesterov=hp.nesterov,
            maximize=hp.maximize and not group.prepared, is_first_step=False)
        buffer = None if momentum == 0 else group.buffers[i]
        if scratch is None or w.dtype == g.dtype == dtype:
            kernel([w], [g], [] if buffer is None else [buffer])
        else:
            low_precision.staged_step(kernel, w, g, buffer, scratch)
    return ratio


def localized(group: TensorGroup) -> TensorGroup:
    """`group` on this rank's pieces of its `DTensor`s (the same memory), with their layouts.

    A buffer made in the step is a local piece: `restore_buffers` makes it a `DTensor`.
    """
    like = group.params
    return TensorGroup(
        params=[local(p) for p in like],
        grads=[local(g, p) for g, p in zip(group.grads, like, strict=True)],
        buffers=[None if b is None else local(b) for b in group.buffers],
        weight_decays=group.weight_decays, adapt=group.adapt, momenta=group.momenta,
        norm_grads=None if group.norm_grads is None else
        [local(g, p) for g, p in zip(group.norm_grads, like, strict=True)],
        prepared=group.prepared, layouts=[layout_of(p) for p in like])


def restore_buffers(group: TensorGroup, local_group: TensorGroup) -> None:
    """Puts the buffers that `local_group`'s step made into `group`, as `DTensor`s."""
    layouts = local_group.layouts or [None] * len(group.buffers)
    for i, (before, after) in enumerate(zip(group.buffers, local_group.buffers, strict=True)):
        if before is None and after is not None:
            group.buffers[i] = as_sharded(after, layouts[i])


def reduce_ratio_norms(steps: Sequence[tuple[Hyperparams, TensorGroup]]) -> None:
    """Sets the `ratio_norms` of every localized group of a step, from the squared norms of the
    local pieces of all of them summed over the shards together: one `all_reduce` per step with
    FSDP2 (in float64; each group gets its norms back in its own dtype)."""
    pieces, squares, layouts = [], [], []
    for hp, group in steps:
        if group.layouts is None or not group.params:
            continue
        dtype, weights, _, g_norm_source, wd, _ = step_inputs(group)
        sources = norm_sources(hp, weights, g_norm_source, wd)
        pieces.append((group, dtype, len(sources)))
        squares += [norms(tensors, dtype).double().square() for tensors in sources]
        layouts += group.layouts * len(sources)
    if not squares:
        return
    device = squares[0].device
    total = distributed.sum_over_shards(torch.cat([s.to(device) for s in squares]), layouts).sqrt()
    start = 0
    for group, dtype, count in pieces:
        n = len(group.params)
        vector = total[start:start + count * n].to(dtype=dtype, device=group.params[0].device)
        group.ratio_norms = list(vector.view(count, n).unbind()) if count else []
        start += count * n


def sharded_lars(hp: Hyperparams, group: TensorGroup, lr: float, *, foreach: bool | None,
                 fused: bool | None) -> Tensor:
    """`lars` of a group of `DTensor`s: the step on the local pieces, norms summed over shards."""
    local_group = localized(group)
    reduce_ratio_norms([(hp, local_group)])
    ratio = lars(hp, local_group, lr, foreach=foreach, fused=fused)
    restore_buffers(group, local_group)
    return ratio


def lars(hp: Hyperparams, group: TensorGroup, lr: float, *, foreach: bool | None = None,
         fused: bool | None = None) -> Tensor:
    """One LARS step of `group` at learning rate `lr`; returns the trust ratios (a vector).

    `fused=None, foreach=None` picks the fastest exact path: the fused kernel where `fusable`
    allows it (CPU, not compiling), else the multi-tensor path. `foreach=False` is the
    per-tensor path. `fused=True` raises if the step cannot be fused. `DTensor`s (FSDP2) are
    stepped on their local pieces, with whole-tensor norms (`distributed`).
    """
    if not group.params:
        return torch.zeros(0)
    if group.layouts is None and any(is_sharded(p) for p in group.params):
        return sharded_lars(hp, group, lr, foreach=foreach, fused=fused)
    if fused:
        reason = fusable(hp, group.params, group.grads, group.buffers)
        if reason is not None:
            raise RuntimeError(f"fused=True is not possible here: {reason}")
        return fused_lars(hp, group, lr)
    if fused is None and foreach is None and not torch.compiler.is_compiling() \
            and fusable(hp, group.params, group.grads, group.buffers) is None:
        return fused_lars(hp, group, lr)
    if foreach is False:
        return single_tensor_lars(hp, group, lr)
    return multi_tensor_lars(hp, group, lr)
