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
from lars.core.xp import Ops

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
        first, sums = clipping[0][0], backend.sums_of_squares(clipping)
        totals = [first.ops.scalar(b.ops.total(x))
                  for (b, _), xs in zip(clipping, sums, strict=True) for x in xs]
        gamma = first.rule.clip_factor(first.ops, sum(totals[1:], totals[0]))
    norms = backend.sums_of_squares(
        [(b, b.rule.norm_requests(b.weights, b.grads, b.prepared, b.ops.scalar(gamma), b.numbers))
         for b in batches])
    for b, sums in zip(batches, norms, strict=True):
        b.coefficients = b.rule.coefficients(b.ops, sums, b.lr, gamma=b.ops.scalar(gamma), last_lr=b.last_lr,
                                             first=b.first, position=b.position, numbers=b.numbers)
        if check := getattr(backend, "check", None):
            check(b, b.coefficients)
    for b in batches:
        c = b.coefficients
        assert c is not None
        if c.pending:
            backend.update(b, c, weights=False)
            (direction,) = backend.sums_of_squares(
                [(b, b.rule.direction_requests(b.weights, b.prepared, b.buffers, c))])
            c = b.rule.finish(b.ops, c, direction, b.lr, b.numbers)
            backend.update(b, c, buffers=False)
        else:
            backend.update(b, c)
        b.coefficients = c


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
