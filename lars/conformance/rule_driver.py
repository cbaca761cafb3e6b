"""The compiled rule (`lars.core.rule`) run on NumPy, as a backend would run it.

Its algebra (every flavor as one affine update) and the step's order (`lars.core.step`) are
checked against the independent reference by the conformance suite in the `core` session,
before any framework runs them: the norms are NumPy's (float32 summed in float64, as the
reference does), the kernel the expanded form `v' = a·v + b·g + c·w`,
`w' = w - (d·v' + e·g + f·w)`, term by term. It is also the smallest backend there is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lars.conformance.drivers import ReferenceDriver, ReferenceRun
from lars.core.checks import check_gradient
from lars.core.hyperparams import Hyperparams
from lars.core.policy import plan
from lars.core.rule import Coefficients, Request, Rule, at
from lars.core.state import State
from lars.core.step import Batch, Job, assemble, jobs, step
from lars.core.xp import Ops, is_static

Array = np.ndarray


def sum_of_squares(job: Job, dtype: Any) -> Any:
    """`||Σ c·t||²`, summed in float64 (as the reference's norms), in `dtype`."""
    x = sum(t if c is None else c * t for c, t in job)
    with np.errstate(over="ignore"):  # an overflow is the caller's to take again, scaled
        return np.dtype(dtype).type(np.sum(np.square(np.asarray(x, dtype=np.float64))))


def affine(x: Array, *terms: tuple[Any, Array | None]) -> Array:
    """`x + Σ c·t`, skipping static zeros (no `0·inf`)."""
    for c, t in terms:
        if t is not None and not (is_static(c) and c == 0):
            x = x + c * t
    return x


class NumpyBackend:
    """Sums of squares and the expanded affine kernel, term by term, on NumPy arrays."""

    def sums_of_squares(self, requests: Sequence[tuple[Batch, Sequence[Request]]]) -> list[list[Any]]:
        return [assemble(r, [sum_of_squares(j, b.ops.dtype) for j in jobs(r)], b.ops.vector)
                for b, r in requests]

    def update(self, batch: Batch, c: Coefficients, *, buffers: bool = True, weights: bool = True) -> None:
        w, g = batch.weights, batch.prepared
        if buffers and c.momentum is not None:
            a, bk, bl = c.buffer_terms()
            batch.buffers = [affine(at(a, i) * v, (at(bk, i), g[i]), (at(bl, i), w[i]))
                             for i, v in enumerate(batch.buffers)]
        if weights:
            d, e, f = c.weight_terms()
            v = batch.buffers if c.momentum is not None else [None] * len(w)
            batch.weights = [w[i] - affine(np.zeros_like(w[i]), (at(d, i), v[i]), (at(e, i), g[i]),
                                           (at(f, i), w[i])) for i in range(len(w))]


class RuleRun(ReferenceRun):
    """The reference's run, stepped by the compiled rule instead of `lars.core.reference`."""

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        names = [n for n in self._params if grads.get(n) is not None]
        for n in names:
            g = np.asarray(grads[n])
            check_gradient(n, g.shape, g.dtype.name, self._params[n].shape)
        old, dtype = dict(self._state.momentum_buffers), next(iter(self._params.values())).dtype
        batch = Batch(Rule(self._hp, plan(self._hp, [(n, self._params[n].shape) for n in names])),
                      Ops(dtype), [self._params[n] for n in names],
                      [np.asarray(grads[n], dtype=dtype) for n in names],
                      [old.get(n, np.zeros_like(self._params[n])) for n in names], lr,
                      last_lr=self._state.last_lr, first=tuple(n not in old for n in names))
        step([batch], NumpyBackend())
        self._params.update(zip(names, batch.weights, strict=True))
        if batch.rule.has_buffer:
            old.update(zip(names, batch.buffers, strict=True))
        assert batch.coefficients is not None
        self._ratios = {n: float(at(batch.coefficients.trust_ratio, i)) for i, n in enumerate(names)}
        self._state = State(self._state.step + 1, float(lr), old)


class RuleDriver:
    """`lars.core.rule` with a NumPy kernel, in float64 and float32."""

    name = "rule"
    dtypes = ("float64", "float32")

    def unavailable_reason(self) -> str | None:
        return None

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> RuleRun:
        return RuleRun(hp, params)

    construct = ReferenceDriver.construct
