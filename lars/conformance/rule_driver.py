"""The compiled rule (`lars.core.rule`) run on NumPy, as a backend would run it.

Its algebra (every flavor as one affine update) is checked against the independent reference
by the conformance suite in the `core` session, before any framework runs it: the norms are
NumPy's (float32 summed in float64, as the reference does), the kernel the module docstring's
expanded form `v' = a·v + b·g + c·w`, `w' = w - (d·v' + e·g + f·w)`, term by term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lars.core.hyperparams import Hyperparams
from lars.core.policy import plan
from lars.core.rule import Coefficients, Request, Rule, at
from lars.core.state import State
from lars.core.xp import Ops, is_static

Array = np.ndarray


def sums_of_squares(requests: Sequence[Request], size: int, dtype: Any) -> list[Array]:
    """Each request's vector of sums of squares (zero outside `only`), in `dtype`."""
    out = []
    for request in requests:
        sums = np.zeros(size, dtype=dtype)
        for i in request.only:
            x = sum(t[i] if c is None else at(c, i) * t[i] for c, t in request.terms)
            sums[i] = np.sum(np.square(np.asarray(x, dtype=np.float64)))
        out.append(sums)
    return out


def affine(x: Array, *terms: tuple[Any, Array | None]) -> Array:
    """`x + Σ c·t`, skipping static zeros (no `0·inf`)."""
    for c, t in terms:
        if t is not None and not (is_static(c) and c == 0):
            x = x + c * t
    return x


class RuleRun:
    def __init__(self, hp: Hyperparams, params: Mapping[str, Array]) -> None:
        self._hp = hp
        self._params = {n: np.array(p, copy=True) for n, p in params.items()}
        self._dtype = next(iter(self._params.values())).dtype
        self._state = State()
        self._ratios: dict[str, float] = {}

    def step(self, grads: Mapping[str, Array | None], lr: float) -> None:
        names = [n for n in self._params if grads.get(n) is not None]
        rule = Rule(self._hp, plan(self._hp, [(n, self._params[n].shape) for n in names]))
        ops, n = Ops(self._dtype), len(names)
        weights = [self._params[k] for k in names]
        raw = [np.asarray(grads[k], dtype=self._dtype) for k in names]
        prepared = rule.prepare(ops, raw)
        gamma: Any = 1.0
        if clip := rule.clip_requests(prepared):
            gamma = rule.clip_factor(ops, sums_of_squares(clip, n, np.float64)[0].sum())
        sums = sums_of_squares(rule.norm_requests(weights, raw, prepared, gamma), n, self._dtype)
        old = dict(self._state.momentum_buffers)
        first = tuple(k not in old for k in names)
        c = rule.coefficients(ops, sums, lr, gamma=gamma, last_lr=self._state.last_lr, first=first)
        buffers = [old.get(k, np.zeros_like(w)) for k, w in zip(names, weights, strict=True)]
        if c.momentum is not None:
            a, bk, bl = c.buffer_terms()
            buffers = [affine(at(a, i) * v, (at(bk, i), prepared[i]), (at(bl, i), weights[i]))
                       for i, v in enumerate(buffers)]
        if c.pending:
            c = rule.finish(ops, c, sums_of_squares(rule.direction_requests(weights, prepared, buffers, c), n,
                                                     self._dtype), lr)
        self._apply(names, weights, prepared, buffers, c, lr)

    def _apply(self, names: list[str], weights: list[Array], prepared: list[Array], buffers: list[Array],
               c: Coefficients, lr: float) -> None:
        d, e, f = c.weight_terms()
        new_buffers = dict(self._state.momentum_buffers)
        for i, k in enumerate(names):
            buffer = buffers[i] if c.momentum is not None else None
            step = affine(np.zeros_like(weights[i]), (at(d, i), buffer), (at(e, i), prepared[i]),
                          (at(f, i), weights[i]))
            self._params[k] = (weights[i] - step).astype(self._dtype)
            if c.momentum is not None:
                new_buffers[k] = buffers[i].astype(self._dtype)
        self._ratios = {k: float(at(c.trust_ratio, i)) for i, k in enumerate(names)}
        self._state = State(self._state.step + 1, float(lr), new_buffers)

    def params(self) -> dict[str, Array]:
        return dict(self._params)

    def state(self) -> State:
        return self._state

    def load(self, state: State) -> None:
        state.check_fits({n: p.shape for n, p in self._params.items()})
        self._state = state

    def trust_ratios(self) -> dict[str, float]:
        return dict(self._ratios)


class RuleDriver:
    """`lars.core.rule` with a NumPy kernel, in float64 and float32."""

    name = "rule"
    dtypes = ("float64", "float32")

    def unavailable_reason(self) -> str | None:
        return None

    def start(self, hp: Hyperparams, params: Mapping[str, Array]) -> RuleRun:
        return RuleRun(hp, params)
