"""Accurate sums of squares of large float32 MXNet arrays, for `OneLARS`'s norms.

MXNet 1.9.1's CPU `multi_sum_sq` (what its LARS uses) and `nd.norm` add a float32 array's squares
one after another in float32: the relative error of the norm grows with the size, 2e-4 to 1e-3
at 2.4 million elements (the largest ResNet-50 tensor) and 3e-2 at 25 million (BERT's word
embeddings), where JAX and TensorFlow are within 2e-8. A trust ratio inherits that error.
(`nd.sum(nd.square(x))` is accurate, a compensated sum, but 9x slower than `multi_sum_sq` and
it makes a squared copy of the array.)

Here a float32 array of at least `BLOCK` elements is taken in pieces of `NORM_PIECE`: the
pieces' sums of squares come from small matrix products (BLAS; at most 6e-7 off each), and
are added in float64. Measured on 2.4M and 25M float32 values: within 1e-8 of the exact sum,
for about 1.2x the time of `multi_sum_sq` (27 ms against 22 ms at 25M), plus about 100 us of
MXNet calls per array. Smaller arrays, other dtypes and other devices keep `multi_sum_sq`, bit
for bit. Importing this module imports mxnet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from mxnet import nd

NORM_PIECE = 1 << 10  # elements: a float32 BLAS dot over this many is good to about one unit of rounding
#: Pieces per matrix product: the diagonal of `B @ B.T`, for a block `B` of this many pieces (its
#: rows), holds their sums of squares. One piece per product leaves BLAS mostly idle (2.2x the
#: time of `multi_sum_sq`); 4 wastes 3 of every 4 products but runs at 1.2x; 16 is slower again.
ROWS = 4
BLOCK = ROWS * NORM_PIECE  # elements: arrays of at least one block are summed in pieces


def in_pieces(x: Any) -> bool:
    """Whether `sums_of_squares` takes this array in pieces (float64 and GPU sums are accurate
    already; float16 is left to `multi_sum_sq`)."""
    return bool(x.dtype == np.float32 and x.size >= BLOCK and x.context.device_type == "cpu")


def sums_of_squares(arrays: Sequence[Any]) -> Any:
    """`sum(x**2)` of each whole array, as one float32 vector: what `nd.multi_sum_sq` returns.

    Arrays that are not `in_pieces` go to one `multi_sum_sq` call, together with the last
    `< BLOCK` elements of the others (an error of at most about 1e-6 relative on that part), so
    their sums keep today's bits. A large array's whole blocks are summed by `block_squares` in
    float64, its rest added, and the total rounded to float32 once. Each MXNet call costs 15 to
    25 us here, as much as summing 20,000 elements: the calls per array are kept few.
    """
    if not any(in_pieces(x) for x in arrays):
        return nd.multi_sum_sq(*arrays, num_arrays=len(arrays))
    tails: list[Any] = []  # what multi_sum_sq sums: small arrays, and large arrays' last partial block
    plan: list[tuple[Any, int | None]] = []  # per array: its float64 sum over whole blocks (or None),
    for x in arrays:                         # and its position in tails (or None)
        if not in_pieces(x):
            plan.append((None, len(tails)))
            tails.append(x)
            continue
        cut = x.size // BLOCK * BLOCK
        if cut == x.size:  # no rest: one view fewer (each costs a call)
            plan.append((block_squares(x), None))
            continue
        flat = x.reshape((-1,))
        plan.append((block_squares(flat[:cut]), len(tails)))
        tails.append(flat[cut:])
    tail_sums: Any = nd.multi_sum_sq(*tails, num_arrays=len(tails)).astype("float64") if tails else None
    parts = []
    for blocks, k in plan:
        tail = None if k is None else tail_sums[k:k + 1]
        parts.append(tail if blocks is None else blocks if tail is None else blocks + tail)
    return nd.concat(*parts, dim=0).astype("float32")


def block_squares(x: Any) -> Any:
    """The float64 sum of the squares of `x`, a whole number of blocks, shape (1,).

    Each `NORM_PIECE`-element piece's sum of squares is a diagonal entry of `B @ B.T`, `B` a
    block of `ROWS` pieces, computed in float32 by BLAS; the pieces' sums are added in float64.
    """
    blocks = x.reshape((-1, ROWS, NORM_PIECE))
    squares = nd.diag(nd.batch_dot(blocks, blocks, transpose_b=True), axis1=1, axis2=2)
    return nd.sum(squares.astype("float64"))
