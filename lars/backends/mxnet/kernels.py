"""`OneLARS`'s `lars.core.step.Backend`: MXNet's sums of squares and update kernels.

Norms: MXNet 1.9.1's CPU `multi_sum_sq` sums float32 (and float64) in float32, 1e-3 off at 2.4M
elements. So float64 goes to `nd.sum`; a large float32 CPU array to pieces, whose sums of squares
are the diagonal of small BLAS products `B @ B.T`, added in float64 (within 1e-8, 1.2x the time);
the rest to one `multi_sum_sq` call, bit for bit MXNet's. MXNet calls cost 15 to 25 us: few are made.

Kernel: MXNet's fused one where the coefficients have its form, `mom = a·mom - b·(clip(rescale·g) +
λ·w); w += mom` with `mom = -v` (a buffer, no look-ahead, `s = 1`; or no buffer), on float32
weights or masters: it prepares the raw gradient itself. Else NDArray operations, term by term
(float64 too: the fused kernels take float32 arguments).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from mxnet import nd

from lars.core.rule import Coefficients, Request, at
from lars.core.step import Batch, assemble, jobs
from lars.core.xp import Ops, is_static

NORM_PIECE = 1 << 10  # a float32 BLAS dot over this many elements is good to about one rounding
ROWS = 4  # pieces per product: 1 leaves BLAS idle (2.2x multi_sum_sq's time), 4 runs at 1.2x
BLOCK = ROWS * NORM_PIECE


def sums_of_squares(arrays: Sequence[Any]) -> Any:
    """`sum(x**2)` of each array (all of one dtype), on the host: float64 for float64 arrays, else
    float32 as `nd.multi_sum_sq` gives it (a large array's float64 total rounded once)."""
    if arrays[0].dtype == np.float64:
        return nd.concat(*[nd.sum(nd.square(x)).reshape((1,)) for x in arrays], dim=0).asnumpy()
    cuts = [x.size // BLOCK * BLOCK if x.dtype == np.float32 and x.context.device_type == "cpu" else 0
            for x in arrays]
    out = np.zeros(len(arrays))
    if rest := [k for k, x in enumerate(arrays) if cuts[k] < x.size]:  # views only where needed
        tails = [arrays[k].reshape((-1,))[cuts[k]:] if cuts[k] else arrays[k] for k in rest]
        out[rest] = nd.multi_sum_sq(*tails, num_arrays=len(tails)).asnumpy()
    if large := [k for k, cut in enumerate(cuts) if cut]:
        blocks = [block_squares(x if cut == x.size else x.reshape((-1,))[:cut])
                  for x, cut in ((arrays[k], cuts[k]) for k in large)]
        out[large] += nd.concat(*blocks, dim=0).asnumpy()
    return out.astype(np.float32)


def normal(*coefficients: Any) -> bool:
    """Whether each value is 0 or a normal float32: MXNet reads its kernels' scalar arguments as
    float32 and refuses a subnormal one."""
    values = np.abs(np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in coefficients]))
    return bool(np.all((values == 0) | (values >= np.finfo(np.float32).tiny)))


def block_squares(x: Any) -> Any:
    """The float64 sum of the squares of `x`, whole blocks, shape (1,)."""
    blocks = x.reshape((-1, ROWS, NORM_PIECE))
    squares = nd.diag(nd.batch_dot(blocks, blocks, transpose_b=True), axis1=1, axis2=2)
    return nd.sum(squares.astype("float64")).reshape((1,))


class Lazy:
    """`clip(scale·x, ±bound)` of an NDArray, as `parts()`: `(f, y)` with the value `f·y`, made
    only if a norm or the NDArray kernel needs it (the fused kernels take the raw gradient)."""

    def __init__(self, x: Any, scale: float = 1.0, bound: float | None = None) -> None:
        self.x, self.scale, self.bound, self.made = x, scale, bound, None

    def __mul__(self, factor: float) -> Lazy:
        return Lazy(self.x, self.scale * factor)

    def parts(self) -> tuple[float, Any]:
        if self.bound is not None and self.made is None:  # `nd.clip` holds its bounds in float32
            x = self.x.astype(np.float32) if self.x.dtype == np.float16 else self.x  # `HostOps.widen`
            y, c = x * self.scale, self.bound
            self.made = nd.clip(y, -c, c) if y.dtype != np.float64 else nd.maximum(nd.minimum(y, c), -c)
        return (self.scale, self.x) if self.bound is None else (1.0, self.made)


class HostOps(Ops):
    """The core's NumPy `Ops` (the coefficients are computed on the host), its clip `Lazy`."""

    def widen(self, x: Any) -> Any:
        return x  # a float16 gradient is widened where it is made (`Lazy.parts`)

    def clip(self, x: Any, low: float, high: float) -> Any:
        return Lazy(x.x, x.scale, high)  # `Rule.prepare` clips into [-c, c]


def parts(t: Any) -> tuple[float, Any]:
    return t.parts() if isinstance(t, Lazy) else (1.0, t)


def subtract(x: Any, *terms: tuple[Any, Any]) -> None:
    """`x -= Σ c·t` in place, term by term (so a term in `x` itself comes first), zeros skipped."""
    for c, t in terms:
        f, y = parts(t)
        if k := float(c) * f:
            y = y if y.dtype == x.dtype else y.astype(x.dtype)
            x -= y if k == 1 else y * k


class Kernels:
    def __init__(self, multi: bool) -> None:
        self.multi = multi  # MXNet's multi-tensor kernels, else its per-tensor ones

    def sums_of_squares(self, requests: Sequence[tuple[Batch, Sequence[Request]]]) -> list[list[Any]]:
        todo, factors, arrays = [jobs(r) for _, r in requests], [], []
        scaled = [q.scaled for _, r in requests for q in r for _ in q.only]
        for job, inside in zip((j for js in todo for j in js), scaled, strict=True):
            # a single term's factor is applied on the host, unless it must scale the tensor first
            terms = [(k, y) for c, t in job for f, y in [parts(t)] if (k := f * (1.0 if c is None else c))]
            alone = len(terms) == 1 and not inside
            factors.append(terms[0][0] ** 2 if alone else 1.0)
            arrays.append(terms[0][1] if alone else nd.add_n(*[y * float(k) for k, y in terms]))
        sums = iter(sums_of_squares(arrays) * factors if arrays else [])
        return [assemble(r, [next(sums) for _ in js], b.ops.vector)
                for (b, r), js in zip(requests, todo, strict=True)]

    def update(self, batch: Batch, c: Coefficients, *, buffers: bool = True, weights: bool = True) -> None:
        targets, masters = batch.extra["targets"], batch.extra["masters"]
        if weights and targets[0].dtype == np.float32 and c.step is not None and not c.decays_weights and (
                c.momentum is None or (buffers and not c.lookahead and is_static(c.step) and c.step == 1)
        ) and normal(c.increment if c.momentum is not None else c.step, c.decay):
            return self.fused(batch, c, masters)
        for i, w in enumerate(targets):
            g, v = batch.prepared[i], batch.buffers[i]
            if buffers and c.momentum is not None:
                a, bk, bl = (at(x, i) for x in c.buffer_terms())
                if a != 1:
                    v.x *= float(a)
                subtract(v.x, (bk, g), (bl, w))  # mom' = a·mom - bκ·ĝ - bλ·w
            if weights:
                d, e, f = (at(x, i) for x in c.weight_terms())
                subtract(w, (f, w), (d, v), (e, g))
                if masters:
                    batch.weights[i][:] = w.astype(batch.weights[i].dtype)
        return None

    def fused(self, batch: Batch, c: Coefficients, masters: list[Any] | None) -> None:
        n, buffer, ws, rule = len(batch.weights), c.momentum is not None, batch.weights, batch.rule
        name = ("mp_" if masters else "") + ("sgd_mom_update" if buffer else "sgd_update")
        arrays = [[ws[i], batch.grads[i].x, *([batch.buffers[i].x] if buffer else []),
                   *([masters[i]] if masters else [])] for i in range(n)]
        momenta = [float(at(c.momentum, i)) if buffer else None for i in range(n)]
        for group in ([[i for i in range(n) if momenta[i] == m] for m in dict.fromkeys(momenta)]
                      if self.multi else [[i] for i in range(n)]):  # a multi-tensor call takes one momentum
            rates = c.increment if buffer else c.step  # b, or s without a buffer
            lrs, wds = ([float(at(x, i)) for i in group] for x in (rates, c.decay))
            m = momenta[group[0]]
            options = {"rescale_grad": rule.gradient_sign_scale, "clip_gradient": rule.gradient_clip or -1.0,
                       **({} if m is None else {"momentum": m})}
            if self.multi:
                getattr(nd, "preloaded_multi_" + name)(
                    *[a for i in group for a in arrays[i]], nd.array(lrs, ctx=ws[0].context),
                    nd.array(wds, ctx=ws[0].context), num_weights=len(group), out=[ws[i] for i in group],
                    **options)
            else:
                getattr(nd, name)(*arrays[group[0]], lr=lrs[0], wd=wds[0], out=ws[group[0]], **options)
