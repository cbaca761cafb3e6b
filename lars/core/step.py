"""One LARS step of any backend, in the order the rule needs, written once.

    prepare the gradients  ->  global-norm clip factor  ->  norms  ->  coefficients  ->  kernel
                                                   (ratio from the momentum output: buffer,
                                                    then its norms, then the weights)

A backend hands over its tensors as `Batch`es (one `Rule` each: a parameter group, a dtype, a
device) and supplies two things (`Backend`): its sums of squares for the rule's `Request`s
(accurate reductions, summed over the devices that hold pieces of a tensor) and its kernel for
the affine update of `lars.core.rule`. Everything else (what to reduce, in which order, the
coefficients) is decided here and in `lars.core.rule`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lars.core.rule import Coefficients, Request, Rule, at
from lars.core.xp import Ops, is_static

#: One sum of squares to take: `||Σ c·t||²` of one tensor, from its terms `(c, t)` (c None: one).
Job = tuple[tuple[Any, Any], ...]


@dataclass
class Batch:
    """The tensors of one rule in one step, and what the step needs to know about them.

    `buffers` is a list the kernel updates (or fills: None where a tensor has no buffer yet);
    a functional backend (JAX) writes its results to `weights`/`buffers` as new lists.
    `coefficients` holds the step's coefficients afterwards (trust ratios included).
    """

    rule: Rule
    ops: Ops
    weights: list[Any]
    grads: list[Any]
    buffers: list[Any]
    lr: Any
    last_lr: Any = None
    first: Any = False
    position: int | Sequence[int] = 0
    numbers: Mapping[str, Any] | None = None
    prepared: list[Any] = field(default_factory=list)
    coefficients: Coefficients | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Whether to record this step (`lars.core.trace`): `recorded` then holds, per quantity, one
    #: value per tensor (the backend's arrays: read them on the host when it suits). A traced
    #: boolean records where it holds (`||Δw||` taken in an `Ops.cond`, 0 where it does not).
    record: Any = False
    recorded: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    def sums_of_squares(self, requests: Sequence[tuple[Batch, Sequence[Request]]]) -> list[list[Any]]:
        """Each batch's vectors for its requests (`assemble` does the bookkeeping), summed over
        the devices that hold pieces of a tensor: one reduction for all batches."""

    def update(self, batch: Batch, coefficients: Coefficients, *, buffers: bool = True,
               weights: bool = True) -> None:
        """The affine update of the batch's tensors: the buffers, the weights, or both.

        A backend may also have `check(batch, coefficients)`, called for every batch before any
        update: it raises if its kernel cannot run them, and then nothing has changed.
        """


def step(batches: Sequence[Batch], backend: Backend) -> None:
    """One step of every batch (see the module)."""
    for b in batches:
        b.prepared = b.rule.prepare(b.ops, b.grads)
    gamma: Any = 1.0
    clipping = [(b, r) for b in batches if (r := b.rule.clip_requests(b.prepared))]
    if clipping:  # over every batch of the step, in the first one's dtype
        first = clipping[0][0]
        found = [first.ops.scalar(x) for xs in take_norms(clipping, backend) for x in xs]
        gamma = first.rule.clip_factor(first.ops, global_norm(first.ops, found))
    asked = [b.rule.norm_requests(b.weights, b.grads, b.prepared, b.ops.scalar(gamma), b.numbers)
             for b in batches]
    wanted = [b.rule.record_requests(b.weights, b.grads) if b.record is not False else [] for b in batches]
    more = [[r for r in ws if covering(rs, r) is None] for rs, ws in zip(asked, wanted, strict=True)]
    norms = take_norms([(b, [*rs, *m]) for b, rs, m in zip(batches, asked, more, strict=True)], backend)
    for b, rs, ws, found in zip(batches, asked, wanted, norms, strict=True):
        b.coefficients = b.rule.coefficients(b.ops, found[:len(rs)], b.lr, gamma=b.ops.scalar(gamma),
                                             last_lr=b.last_lr, first=b.first, position=b.position,
                                             numbers=b.numbers)
        if b.record is not False:  # ||w|| and ||g||: the rule's own where it took the same
            own = iter(found[len(rs):])
            b.recorded = {q: found[k] if (k := covering(rs, r)) is not None else next(own)
                          for q, r in zip(("weight_norm", "grad_norm"), ws, strict=True)}
        if check := getattr(backend, "check", None):
            check(b, b.coefficients)
    for b in batches:
        c = b.coefficients
        assert c is not None
        if c.pending:
            backend.update(b, c, weights=False)
            (direction,) = take_norms(
                [(b, b.rule.direction_requests(b.weights, b.prepared, b.buffers, c))], backend)
            c = b.rule.finish(b.ops, c, direction, b.lr, b.numbers)
            backend.update(b, c, buffers=False)
        else:
            backend.update(b, c)
        b.coefficients = c
        if b.record is not False:
            record(b, backend)


def covering(asked: Sequence[Request], request: Request) -> int | None:
    """The place in `asked` of a request for the sums of squares of `request` (the same tensors,
    these very ones, by the same static coefficients), if any: a recorded step takes it once."""
    def same(x: tuple[Any, Any], y: tuple[Any, Any]) -> bool:
        return x[1] is y[1] and (x[0] is y[0] or (is_static(x[0]) and is_static(y[0]) and x[0] == y[0]))
    return next((k for k, r in enumerate(asked) if r.only == request.only and r.size == request.size
                 and len(r.terms) == len(request.terms) and all(map(same, r.terms, request.terms))), None)


def record(b: Batch, backend: Backend) -> None:
    """The rest of a recorded step, after the update: the ratios, weight decays and adaptation
    the step used, and `||Δw||` from the updated tensors (`Rule.update_request`)."""
    c, ops, n = b.coefficients, b.ops, b.rule.size
    assert c is not None
    request, divisor = b.rule.update_request(ops, b.weights, b.prepared, b.buffers, c)

    def taken() -> Any:
        return take_norms([(b, [request])], backend)[0][0]
    moved = taken() if b.record is True else ops.cond(b.record, taken, lambda: ops.vector([0.0] * n))
    b.recorded.update(trust_ratio=c.trust_ratio, update_norm=moved / abs(divisor),
                      weight_decay=per_tensor(ops, c.decoupled_decay if b.rule.hp.decoupled_weight_decay
                                              else c.decay, n),
                      adapted=ops.vector([1.0 if a else 0.0 for a in b.rule.adapt]))


#: A float32 sum of squares `S` is exact to a few roundings where `2^-60 <= S < inf`: below, the
#: squares of elements under 2^-63 are subnormal or zero; above, the sum overflowed while the norm
#: may not (float32 norms reach 2^128). Out of range, the sum is taken again of the tensor scaled
#: by a power of two (exact) that brings it into range, as the reference's float64 sums are:
#: `S = inf` -> 2^-66 (the true sum is at most 2^256), `S < 2^-120` (zero included: every element
#: under 2^-75) -> 2^100, `S < 2^-60` -> 2^60; the scaled sum then lies in [2^-4, 2^124].
LOW, VERY_LOW, DOWN, UP, FAR_UP = 2.0**-60, 2.0**-120, 2.0**-66, 2.0**60, 2.0**100


def take_norms(requests: Sequence[tuple[Batch, Sequence[Request]]], backend: Backend) -> list[list[Any]]:
    """Each batch's norm vectors for its requests: the square roots of the backend's sums of
    squares, those out of float32's range (`LOW`) taken again, scaled. A wide (float64) batch is
    taken once, as the reference takes its float64 norms. A host backend takes again only the
    tensors out of range; a traced one (`Ops.flagged` None) all of the batch's, in a branch
    (`Ops.cond`) that runs only when one is."""
    return [in_range(b, rs, sums, backend)
            for (b, rs), sums in zip(requests, backend.sums_of_squares(requests), strict=True)]


def in_range(b: Batch, requests: Sequence[Request], sums: Sequence[Any], backend: Backend) -> list[Any]:
    """One batch's norms from its sums of squares (see `take_norms`)."""
    ops = b.ops
    fast = [ops.sqrt(s) for s in sums]
    if ops.wide or not requests:
        return fast
    scales = [ops.where(s == float("inf"), DOWN, ops.where(s < VERY_LOW, FAR_UP, ops.where(s < LOW, UP, 1.0)))
              for s in sums]
    # Entries outside a request's `only` are zeros of `assemble`, not sums: never out of range.
    flags = [(s != 1.0) & (ops.vector([1.0 if i in r.only else 0.0 for i in range(r.size)]) > 0)
             if len(r.only) < r.size else s != 1.0 for r, s in zip(requests, scales, strict=True)]

    def again(only: Sequence[tuple[int, ...]]) -> list[Any]:
        ks = [k for k, o in enumerate(only) if o]
        taken = [scaled(ops, requests[k], scales[k], only[k]) for k in ks]
        out = list(fast)
        for k, x in zip(ks, backend.sums_of_squares([(b, taken)])[0], strict=True):
            out[k] = ops.where(flags[k], ops.sqrt(x) / scales[k], fast[k])
        return out

    found = [ops.flagged(f) for f in flags]
    if any(f is None for f in found):  # traced: one branch for the batch
        count = sum(ops.total(ops.where(f, 1.0, 0.0)) for f in flags)
        return ops.cond(count > 0, lambda: again([r.only for r in requests]), lambda: fast)  # type: ignore[no-any-return]
    hosts = [f or () for f in found]
    if not any(hosts):
        return fast
    return again([tuple(i for i in r.only if i in f) for r, f in zip(requests, hosts, strict=True)])


def scaled(ops: Ops, r: Request, scales: Any, only: tuple[int, ...]) -> Request:
    """`r` of the tensors in `only`, each scaled by its power of two before it is squared."""
    terms = tuple((scales if c is None else per_tensor(ops, c, r.size) * scales, t) for c, t in r.terms)
    return Request(terms, only, r.size, scaled=True)


def per_tensor(ops: Ops, c: Any, n: int) -> Any:
    """A coefficient (a number, one per tensor as a sequence, or an array) as a vector of `n`."""
    if is_static(c):
        return ops.vector([c] * n)
    return ops.vector(c) if isinstance(c, (list, tuple)) else c


def global_norm(ops: Ops, norms: Sequence[Any]) -> Any:
    """`sqrt(Σ n²)` over every entry of the vectors `norms`, scaled by the largest (no overflow)."""
    tops = [ops.largest(n) for n in norms]
    top = tops[0]
    for m in tops[1:]:
        top = ops.where(m > top, m, top)
    safe = ops.where(top > 0, top, 1.0)
    totals = [ops.total((n / safe) * (n / safe)) for n in norms]
    return safe * ops.sqrt(sum(totals[1:], totals[0]))


def jobs(requests: Sequence[Request]) -> list[Job]:
    """The sums of squares a list of requests needs, in order (for `assemble`)."""
    return [tuple((at(c, i), t[i]) for c, t in r.terms) for r in requests for i in r.only]


def assemble(requests: Sequence[Request], sums: Sequence[Any],
             stack: Callable[[list[Any]], Any]) -> list[Any]:
    """Each request's vector (zero outside `only`) from the sums of its `jobs`, in order;
    `stack` makes a vector of the backend's from 0-d values and Python zeros."""
    values = iter(sums)
    out = []
    for r in requests:
        row: list[Any] = [0.0] * r.size
        for i in r.only:
            row[i] = next(values)
        out.append(stack(row))
    return out
