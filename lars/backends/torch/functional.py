"""The LARS step in torch: `lars()`, and the norms and kernels it runs on.

Modelled on `torch/optim/sgd.py`. The core decides the step (`lars.core.step`); here are the
sums of squares and one kernel for the affine update `v' = a·v + (bκ)·ĝ + (bλ)·w`,
`w' = w - (d·v' + e·ĝ + f·w)`, on one of three paths: torch's fused CPU SGD kernel, whose
`v' = M·v + (1-D)·(ĝ + WD·w)`, `w' = w - LR·v'` is that form with `M = a`, `1-D = bκ`,
`WD = bλ/bκ`, `LR = s` (nesterov where `bκ = 1`; without a buffer `LR = sκ`, `WD = λ/κ`), its
numbers read on the host; multi-tensor ops with the coefficients as device tensors (no host
synchronisation: CUDA graphs, `torch.compile`); or one tensor at a time.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lars.backends.torch import _compat as F
from lars.backends.torch import distributed, low_precision
from lars.core import xp
from lars.core.hyperparams import Hyperparams
from lars.core.policy import TensorPlan, plan
from lars.core.rule import Coefficients, Request, Rule, at
from lars.core.step import Batch, jobs, step
from lars.core.xp import Ops, is_static, step_dtype

LOW_PRECISION = tuple(getattr(torch, name) for name in xp.LOW_PRECISION)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a parameter of `dtype` steps in (`lars.core.xp.step_dtype`)."""
    return getattr(torch, step_dtype(str(dtype).removeprefix("torch.")))  # type: ignore[no-any-return]


class TorchOps(Ops):
    """The core's array namespace on torch tensors of one dtype and device."""

    sqrt, cos, power, clip, total, largest = (staticmethod(f) for f in (torch.sqrt, torch.cos, torch.pow,
                                                                        torch.clamp, torch.sum, torch.amax))

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device

    def vector(self, values: Any) -> Tensor:
        return _constant(tuple(values), self.dtype, self.device)

    def scalar(self, value: Any) -> Any:
        return value if is_static(value) else torch.as_tensor(value).to(self.device, self.dtype)

    def where(self, c: Any, x: Any, y: Any) -> Tensor:
        if is_static(x) and is_static(y):  # else torch's default dtype
            x = torch.full_like(c, x, dtype=self.dtype)
        return torch.where(c, x, y)

    def minimum(self, x: Any, y: Any) -> Tensor:
        return torch.clamp(x, max=y) if is_static(y) else torch.minimum(x, y)

    def widen(self, x: Tensor) -> Tensor:
        return x.to(self.dtype) if x.dtype.itemsize < self.dtype.itemsize else x

    def flagged(self, mask: Any) -> tuple[int, ...]:
        return tuple(torch.nonzero(mask).flatten().tolist())  # a sync on a device


@functools.lru_cache(maxsize=256)
def _constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Made once: a copy from the host at every step would synchronise a CUDA stream."""
    return torch.tensor(values, dtype=dtype, device=device)


@dataclass
class TensorGroup:
    """One step's tensors of one rule (a parameter group's tensors of one device and dtype);
    `buffers` updated in place; `plans` the core's (`lars.plan` of the shapes if None); the last
    lr and each tensor's place in the step for MXNet's momentum correction."""

    params: list[Tensor]
    grads: list[Tensor]
    buffers: list[Tensor | None]
    plans: list[TensorPlan] | None = None
    last_lr: float | None = None
    position: int | list[int] = 0
    ratios: Tensor | None = None  # the trust ratios of the last step

    def add(self, param: Tensor, grad: Tensor, buffer: Tensor | None, tensor: TensorPlan,
            position: int) -> None:
        self.params.append(param)
        self.grads.append(grad)
        self.buffers.append(buffer)
        self.plans.append(tensor)  # type: ignore[union-attr]
        self.position.append(position)  # type: ignore[union-attr]


#: The fused kernel gets the increment k as `1 - dampening` in float64: k loses 2^-53/k of itself.
SMALLEST_INCREMENT = 2.0**-30
NORM_PIECE = 1 << 10  # elements: a float32 sum over this many is good to about one unit of rounding
NORM_WHOLE = 1 << 14  # elements: up to this size torch's own float32 norm is as good
CONVERT_BLOCK = 1 << 20  # elements of a float16/bfloat16 tensor converted at a time


def norms(tensors: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """The L2 norm of each whole tensor, as one vector in `dtype`; large CPU float32/bfloat16 ones in
    pieces whose squares are summed in float64 (torch's CPU norm drifts with the size, `docs/torch.md`)."""
    pieced = [t.device.type == "cpu" and dtype == torch.float32 and t.numel() > NORM_WHOLE
              and t.is_contiguous() for t in tensors]
    small, large = ([t for t, p in zip(tensors, pieced, strict=True) if p == flag] for flag in (False, True))
    small_norms = torch.stack(F.foreach_norm(small, 2, dtype=dtype)) if small else torch.zeros(0, dtype=dtype)
    if not large:
        return small_norms
    pieces = [piece_norms(t, low_precision.scratch(CONVERT_BLOCK)) for t in large]
    squares = torch.cat([p for x in pieces for p in x]).double().square()  # every piece at once,
    counts = torch.tensor([sum(map(len, x)) for x in pieces])  # summed by its owner:
    owners = torch.repeat_interleave(torch.arange(len(large)), counts)
    large_norms = torch.zeros(len(large), dtype=torch.float64).index_add_(0, owners, squares).sqrt()
    where = [_constant(tuple(i for i, p in enumerate(pieced) if p == flag), torch.int64, torch.device("cpu"))
             for flag in (False, True)]
    return torch.empty(len(tensors), dtype=dtype).index_copy_(0, where[0], small_norms).index_copy_(
        0, where[1], large_norms.to(dtype))


def piece_norms(tensor: Tensor, scratch: Tensor) -> list[Tensor]:
    """The float32 norms of `tensor`'s consecutive pieces of `NORM_PIECE` (the last may be shorter;
    float16/bfloat16 converted a block at a time into `scratch`, never copied whole)."""
    flat = tensor.view(-1)
    whole = flat.numel() // NORM_PIECE * NORM_PIECE
    rows, rest = flat[:whole].view(-1, NORM_PIECE), flat[whole:]
    if tensor.dtype == scratch.dtype:
        parts = [torch.linalg.vector_norm(rows, dim=1)]
    else:
        parts = [torch.linalg.vector_norm(scratch[:b.numel()].view(b.shape).copy_(b), dim=1)
                 for b in torch.split(rows, CONVERT_BLOCK // NORM_PIECE)]
    return parts + [torch.linalg.vector_norm(rest, dtype=scratch.dtype).view(1)] * bool(rest.numel())


def sums_of_squares(request: Request, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A request's vector: the squared norm of each job (a combination made in `dtype`)."""
    (c, tensors), *rest = request.terms
    if rest or request.scaled:
        made = [sum(t.to(dtype) if k is None else k * t.to(dtype) for k, t in job) for job in jobs([request])]
        squares = norms(made, dtype).square()
    else:
        squares = norms([tensors[i] for i in request.only], dtype).square() * (1.0 if c is None else c * c)
    if len(request.only) == request.size:
        return squares
    index = _constant(request.only, torch.int64, device)
    return torch.zeros(request.size, dtype=dtype, device=device).index_copy_(0, index, squares)


def fused_arguments(c: Coefficients, n: int) -> list[tuple[float, ...]] | str:
    """Per tensor, the fused kernel's `(momentum, dampening, weight_decay, lr, nesterov)`, or why
    the kernel cannot express these coefficients (read on the host: a sync on a device)."""
    def host(x: Any) -> list[float]:
        return [float(x)] * n if is_static(x) or x.ndim == 0 else x.tolist()
    if c.momentum is not None and c.decays_weights:
        return "a decoupled weight decay beside a momentum buffer"
    if c.momentum is None:
        e, f = c.weight_terms()[1:]
        pairs = list(zip(host(e), host(f), strict=True))
        return ("a weight decay with a step of 0" if any(not e_ and f_ for e_, f_ in pairs) else
                [(0.0, 0.0, f_ / e_ if e_ else 0.0, e_, False) for e_, f_ in pairs])
    rows = list(zip(*map(host, (*c.buffer_terms(), c.step)), strict=True))
    if any(m == 0 for m, *_ in rows):
        return "a momentum of 0 in this step (the kernel would keep no buffer)"
    if any(not k and l_ for _, k, l_, _ in rows):
        return "a weight decay in the buffer without a gradient in it"
    if c.lookahead and any(k != 1 for _, k, _, _ in rows):
        return "nesterov takes the gradient into the step unscaled in the fused kernel"
    if any(0 < abs(k) < SMALLEST_INCREMENT for _, k, _, _ in rows):
        return "an increment so small that the kernel's 1 - dampening would round it off"
    return [(m, 1.0 - k, l_ / k if k else 0.0, s, c.lookahead) for m, k, l_, s in rows]


def fusable(params: Sequence[Tensor], grads: Sequence[Tensor], buffers: Sequence[Tensor | None],
            ) -> str | None:
    """None if the fused kernel can take these tensors, else why not."""
    if any(p.device.type != "cpu" for p in params):
        return "the fused path runs on CPU tensors (CUDA uses the sync-free foreach path)"
    if any(t.dtype not in (torch.float32, *LOW_PRECISION) for t in [*params, *grads]):
        # It carries b·κ as 1 - D: in float64 an error above the conformance bound (docs/torch.md).
        return "the fused path takes float32, float16 and bfloat16 tensors"
    if any(b is not None and b.dtype != torch.float32 for b in buffers):
        return "the fused path keeps its momentum buffers in float32"
    if any(not t.is_contiguous() for w, g in zip(params, grads, strict=True) for t in (w, g)
           if w.dtype != torch.float32 or g.dtype != torch.float32):
        return "float16/bfloat16 tensors go through the fused kernel in contiguous chunks"
    if any(t is not None and t.stride() != w.stride()  # the kernel walks the three memories in step
           for w, g, v in itertools.zip_longest(params, grads, buffers) for t in (g, v)):
        return "the fused kernel needs the gradient and the momentum buffer in the parameter's memory layout"
    return None


class TorchBackend:
    """Norms (summed over shards, one reduction per phase) and kernels, for `lars.core.step`."""

    def sums_of_squares(self, requests: Sequence[tuple[Batch, Sequence[Request]]]) -> list[list[Any]]:
        out = [[sums_of_squares(r, b.ops.dtype, b.weights[0].device) for r in rs] for b, rs in requests]
        likes = [b.extra["sharded"] for b, _ in requests]
        flat = [(k, j) for k, row in enumerate(out) if likes[k] for j in range(len(row))]
        if flat:
            total = distributed.sum_over_shards(torch.cat([out[k][j].double() for k, j in flat]),
                                                [x for k, _ in flat for x in likes[k]])
            parts = torch.split(total, [len(likes[k]) for k, _ in flat])
            for (k, j), part in zip(flat, parts, strict=True):
                out[k][j] = part.to(out[k][j].dtype)
        return out

    def check(self, b: Batch, c: Coefficients) -> None:
        """Whether the fused kernel takes the batch (with `fused=True` it must, or nothing changes)."""
        path, reason = b.extra["path"], b.extra["unfusable"]
        b.extra["fused"] = None
        if path in ("foreach", "single") or (path is None and torch.compiler.is_compiling()):
            return
        if reason is None:
            reason = ("a ratio from the momentum output is known only after the momentum update"
                      if c.pending else fused_arguments(c, len(b.weights)))
        if isinstance(reason, str) and path == "fused":
            raise RuntimeError(f"fused=True is not possible here: {reason}")
        b.extra["fused"] = None if isinstance(reason, str) else reason

    def update(self, b: Batch, c: Coefficients, *, buffers: bool = True, weights: bool = True) -> None:
        if c.momentum is not None:
            b.buffers = [torch.zeros_like(w, dtype=b.ops.dtype) if v is None else v
                         for w, v in zip(b.weights, b.buffers, strict=True)]
        if b.extra["fused"] is not None:
            return fused_step(b, b.extra["fused"])
        each, dtype = b.extra["path"] != "single", b.ops.dtype
        ws = [w if w.dtype == dtype else w.to(dtype) for w in b.weights]
        gs = [g if g.dtype == dtype else g.to(dtype) for g in b.prepared]
        if buffers and c.momentum is not None:
            a, bk, bl = c.buffer_terms()
            if each:
                F.foreach_mul_(b.buffers, _each(a))
            else:
                for i, v in enumerate(b.buffers):
                    v.mul_(at(a, i))
            _accumulate(b.buffers, [(bk, gs), (bl, ws)], 1.0, each)
        if weights:
            _accumulate(ws, list(zip(c.weight_terms(), (b.buffers, gs, ws), strict=True)), -1.0, each)
            if ws[0] is not b.weights[0]:
                F.foreach_copy_(b.weights, ws)


def fused_step(b: Batch, arguments: list[tuple[float, ...]]) -> None:
    """Each tensor through the fused kernel (float16/bfloat16 in float32 chunks)."""
    scratch = low_precision.scratch_for(b.weights, b.prepared)
    for w, g, v, (m, d, wd, lr, nesterov) in zip(b.weights, b.prepared, b.buffers, arguments, strict=True):
        kernel = functools.partial(F.fused_sgd, weight_decay=wd, momentum=m, lr=lr, dampening=d,
                                   nesterov=bool(nesterov), maximize=False, is_first_step=False)
        if scratch is None or w.dtype == g.dtype == torch.float32:
            kernel([w], [g], [] if v is None else [v])
        else:
            low_precision.staged_step(kernel, w, g, v, scratch)


def _each(c: Any) -> Any:
    """A coefficient as the multi-tensor ops take it: a number, a 0-d tensor, or one per tensor."""
    return c if is_static(c) or c.ndim == 0 else list(c.unbind())


def _accumulate(targets: list[Any], terms: list[tuple[Any, list[Any]]], sign: float, each: bool) -> None:
    """`targets += sign·Σ c·t`, the products made first, static zeros left out."""
    parts = [list(F.foreach_mul(ts, _each(c))) if each else [t * at(c, i) for i, t in enumerate(ts)]
             for c, ts in terms if not (is_static(c) and c == 0)]
    for part in parts:
        if each:
            F.foreach_add_(targets, part, alpha=sign)
        else:
            for t, x in zip(targets, part, strict=True):
                t.add_(x, alpha=sign)


def batch(hp: Hyperparams, group: TensorGroup, lr: Any, path: str | None) -> Batch:
    """`group` as the core's `Batch`, on this rank's pieces of `DTensor`s (FSDP2)."""
    ws = [distributed.local(p) for p in group.params]
    gs = [distributed.local(g, p) for g, p in zip(group.grads, group.params, strict=True)]
    vs = [distributed.local(v) for v in group.buffers]
    plans = group.plans or plan(hp, [(None, tuple(p.shape)) for p in group.params])
    dtype = compute_dtype(ws[0].dtype)
    sharded = any(map(distributed.is_sharded, group.params))
    return Batch(Rule(hp, plans), TorchOps(dtype, ws[0].device), ws, gs, vs, lr, last_lr=group.last_lr,
                 first=tuple(v is None for v in vs), position=group.position,
                 extra={"path": path, "group": group, "unfusable": fusable(ws, gs, vs),
                        "sharded": group.params if sharded else None})


def run(batches: Sequence[Batch]) -> None:
    """One step of the batches; each group's new buffers written back (as `DTensor`s if sharded)."""
    step(batches, TorchBackend())
    for b in batches:
        group: TensorGroup = b.extra["group"]
        group.ratios = b.coefficients.trust_ratio  # type: ignore[union-attr]
        if b.rule.has_buffer:
            group.buffers[:] = [old if old is not None else distributed.as_sharded(v, p)
                                for old, v, p in zip(group.buffers, b.buffers, group.params, strict=True)]


def lars(hp: Hyperparams, group: TensorGroup, lr: Any, *, foreach: bool | None = None,
         fused: bool | None = None) -> Tensor:
    """One LARS step of `group` at learning rate `lr`; returns the trust ratios (a vector).

    By default the fused kernel where it is exact (CPU, not compiling), else the multi-tensor
    path; `foreach=False` steps one tensor at a time; `fused=True` raises, with nothing changed,
    if the step cannot be fused. `DTensor`s (FSDP2) step on their local pieces, with
    whole-tensor norms (`distributed`).
    """
    if not group.params:
        return torch.zeros(0)
    run([batch(hp, group, lr, path_of(foreach, fused))])
    return group.ratios  # type: ignore[return-value]


def path_of(foreach: bool | None, fused: bool | None) -> str | None:
    """"fused" (required), "foreach", "single", or None (the fused kernel where it is exact)."""
    if fused or foreach is False:
        return "fused" if fused else "single"
    return "foreach" if foreach or fused is False else None
