r"""The LARS rule, compiled once: which norms a step needs, and the coefficients of one update.

Every flavor, and every mixture of the axes of `Hyperparams`, is one affine update per tensor:

    u  = κ·ĝ + λ·w
    v' = a·v + b·u                               the momentum buffer (none without momentum)
    w' = w - s·D,    D = v'          plain
                     D = b·u + a·v'  look-ahead (nesterov)
                     D = u           no buffer

with `ĝ` the gradient as handed over, or clipped element-wise by `prepare` (the one step that
is not affine), and, per tensor, `κ` the gradient's scale (maximize, rescale, the global-norm
clip), `λ` the weight decay that reaches the update, `a` the momentum (MXNet's correction
included), `b` the increment's scale and `s` the step. Expanded, with `c = b·λ`:

    v' = a·v + (b·κ)·ĝ + c·w
    w' = w - (d·v' + e·ĝ + f·w),   (d, e, f) = (s, 0, 0) | (s·a, s·b·κ, s·c) | (0, s·κ, s·λ)

The flavors become numbers (`k = 1 - dampening`, or 1 on the first step of a copy start):

    heavy-ball      b = k·lr·r    s = 1        (no buffer: s = lr·r)
    SGD-style       b = k·r       s = lr       (no buffer: s = lr·r)
    ratio outside   b = k         s = lr·r

A backend takes the norms the `Rule` asks for (`norm_requests`: sums of squares of
tensors, or of combinations of them), hands their vector to `coefficients`, and runs its
kernel on the result. The ratio from the momentum output (`trust_denominator="update"`) needs a
second phase: the kernel updates the buffer only, the norms of `direction_requests` follow, and
`finish` gives the step. The math is written once against an `Ops` namespace
(`lars.core.xp`), so it runs on NumPy, on torch tensors, inside `jax.jit` and in a
`tf.function`. The reference (`lars.core.reference`) is an independent, per-tensor
implementation of the same rule: conformance compares the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from lars.core.errors import HyperparameterError
from lars.core.hyperparams import Hyperparams
from lars.core.policy import TensorPlan
from lars.core.xp import Ops, is_static

#: Hyperparameters that may be arrays of a step (e.g. injected by `optax.inject_hyperparams`).
NUMBERS = ("momentum", "dampening", "weight_decay", "trust_coefficient", "eps")
#: The values that decide the structure (`Hyperparams`, plans) when such a number is an array of
#: a step with no concrete value: non-zero where zero changes the structure (a momentum buffer,
#: adaptation that requires weight decay), zero where zero is the one value every mixture allows
#: (dampening with nesterov).
STAND_INS = dict(zip(NUMBERS, (0.5, 0.0, 1.0, 1.0, 0.0), strict=True))


def product(*factors: Any) -> Any:
    """The product, with static ones dropped and a static zero kept static (a term absent)."""
    out: Any = 1.0
    for x in factors:
        if is_static(x) and x == 0:
            return 0.0
        if not (is_static(x) and x == 1):
            out = x if is_static(out) and out == 1 else out * x
    return out


def at(x: Any, i: int) -> Any:
    """Entry `i` of a coefficient: a static number, a per-tensor sequence or a 0-d/1-d array."""
    if x is None or is_static(x):
        return x
    if isinstance(x, (list, tuple)) or getattr(x, "ndim", 1) == 1:
        return x[i]
    return x


@dataclass(frozen=True)
class Request:
    """Sums of squares a step needs: `||Σ_k c_k·T_k||²` of each tensor in `only` (zero for the
    others, up to `size`), for terms `(c_k, T_k)`; `c_k` is None (one), a number, or one value
    per tensor. `scaled`: the coefficients hold a power of two that brings a sum out of float32's
    range back into it (`lars.core.step.take_norms`), so they must multiply the tensors before
    the squares are taken, not the sum after."""

    terms: tuple[tuple[Any, Sequence[Any]], ...]
    only: tuple[int, ...]
    size: int
    scaled: bool = False


@dataclass(frozen=True)
class Coefficients:
    """One step's coefficients: numbers (the same for every tensor) or vectors (one per tensor).

    `momentum` is None without a buffer; `step` and `trust_ratio` are None between the two
    phases of a ratio from the momentum output (`pending`).
    """

    grad_scale: Any
    decay: Any
    momentum: Any
    increment: Any
    step: Any
    trust_ratio: Any
    lookahead: bool
    #: Decoupled weight decay: `lr·λ`, the weights' own decay `w -= lr·λ·w` (0: none), and `λ`.
    shrink: Any = 0.0
    decoupled_decay: Any = 0.0

    @property
    def pending(self) -> bool:
        return self.step is None

    @property
    def decays_weights(self) -> bool:
        """Whether the weights decay by a term of their own (decoupled weight decay), which a
        kernel with only an SGD-shaped weight decay cannot express beside a buffer."""
        return not (is_static(self.shrink) and self.shrink == 0)

    def buffer_terms(self) -> tuple[Any, Any, Any]:
        """`(a, b·κ, b·λ)`: `v' = a·v + (b·κ)·ĝ + (b·λ)·w`."""
        return self.momentum, product(self.increment, self.grad_scale), product(self.increment, self.decay)

    def weight_terms(self) -> tuple[Any, Any, Any]:
        """`(d, e, f)`: `w' = w - (d·v' + e·ĝ + f·w)` (a decoupled weight decay is all of `f`:
        the gradient's increment then holds no `λ·w`)."""
        s, shrink = self.step, self.shrink
        if self.momentum is None:
            return 0.0, product(s, self.grad_scale), _plus(product(s, self.decay), shrink)
        if self.lookahead:
            _, bk, bl = self.buffer_terms()
            return product(s, self.momentum), product(s, bk), _plus(product(s, bl), shrink)
        return s, 0.0, shrink


class Rule:
    """`Hyperparams` compiled for a sequence of tensors (their `TensorPlan`s), in order."""

    def __init__(self, hp: Hyperparams, plans: Sequence[TensorPlan]) -> None:
        self.hp = hp
        self.size = len(plans)
        self.adapt = tuple(p.adapt for p in plans)
        self.decays = tuple(p.weight_decay for p in plans)
        self.adapted = tuple(i for i, a in enumerate(self.adapt) if a)
        #: Static structure, for a backend's choice of kernel.
        self.has_buffer = hp.momentum != 0
        self.lookahead = hp.nesterov
        self.two_phase = hp.trust_denominator == "update"
        self.constant_momentum = not hp.momentum_correction
        #: The element-wise preparation, for kernels that take it as arguments (MXNet's).
        self.gradient_sign_scale = (-1.0 if hp.maximize else 1.0) * hp.grad_rescale
        self.gradient_clip = hp.grad_clip_value
        self.norm_names: tuple[str, ...] = ()
        if self.adapted and not self.two_phase:
            needs_g = hp.trust_denominator != "combined" or hp.zero_norm_rule == "weight_and_grad"
            self.norm_names = ("w", *(("g",) if needs_g else ()),
                               *(("u",) if hp.trust_denominator == "combined" else ()))

    # Gradients ---------------------------------------------------------------------------------
    def prepare(self, ops: Ops, grads: Sequence[Any]) -> list[Any]:
        """`ĝ`: the gradients clipped element-wise (of `±grad_rescale·g`, in `ops`' dtype: a
        bfloat16 gradient is not rounded again before the step), or the same ones."""
        c = self.gradient_clip
        if c is None:
            return list(grads)
        sigma = self.gradient_sign_scale
        return [ops.clip(g if sigma == 1 else g * sigma, -c, c) for g in map(ops.widen, grads)]

    def clip_requests(self, prepared: Sequence[Any]) -> list[Request]:
        """What the global-norm clip needs (none without it): `||κ₀·ĝ||²` of every tensor."""
        if self.hp.grad_clip_norm is None:
            return []
        scale = None if self.gradient_clip is not None else self.gradient_sign_scale
        return [Request(((scale, prepared),), tuple(range(self.size)), self.size)]

    def clip_factor(self, ops: Ops, norm: Any) -> Any:
        """`gamma = c/||G||` where the global norm `||G||` exceeds `c`, else 1."""
        c = self.hp.grad_clip_norm
        if c is None:
            return 1.0
        return ops.where(norm > c, c / ops.where(norm > c, norm, 1.0), 1.0)

    def grad_scale(self, gamma: Any = 1.0) -> Any:
        """`κ`, the gradient's scale in `u = κ·ĝ + λ·w`."""
        return product(1.0 if self.gradient_clip is not None else self.gradient_sign_scale, gamma)

    # Norms -------------------------------------------------------------------------------------
    def norm_requests(self, weights: Sequence[Any], grads: Sequence[Any], prepared: Sequence[Any],
                      gamma: Any = 1.0, numbers: Mapping[str, Any] | None = None) -> list[Request]:
        """The sums of squares of the ratio before the momentum, in the order of `norm_names`:
        `||w||²`, `||g_n||²` and `||g_n + wd·w||²`, with `g_n` the gradient the norms see."""
        hp, only = self.hp, self.adapted
        before = self.gradient_clip is not None and hp.clip_before_norms
        source = prepared if before else grads
        scale = product(1.0 if before else self.gradient_sign_scale, gamma if hp.clip_before_norms else 1.0)
        made = {"w": _terms((None, weights)), "g": _terms((scale, source)),
                "u": _terms((scale, source), (self._decays(None, numbers), weights))}
        return [Request(made[name], only, self.size) for name in self.norm_names]

    def direction_requests(self, weights: Sequence[Any], prepared: Sequence[Any], buffers: Sequence[Any],
                           coefficients: Coefficients) -> list[Request]:
        """The second phase's sums of squares: `||w||²` and `||D||²` (see the module)."""
        c, only = coefficients, self.adapted
        if c.momentum is None:
            direction = _terms((c.grad_scale, prepared), (c.decay, weights))
        elif c.lookahead:
            a, bk, bl = c.buffer_terms()
            direction = _terms((a, buffers), (bk, prepared), (bl, weights))
        else:
            direction = _terms((None, buffers))
        return [Request(_terms((None, weights)), only, self.size), Request(direction, only, self.size)]

    def record_requests(self, weights: Sequence[Any], grads: Sequence[Any]) -> list[Request]:
        """What a recorded step adds (`lars.core.trace`): `||w||²` and `||κ₀·g||²` of every tensor,
        the gradient as the rule takes it (maximize and `grad_rescale`, MXNet's `rescale_grad`,
        applied; before any clipping)."""
        every = tuple(range(self.size))
        return [Request(_terms((None, weights)), every, self.size),
                Request(_terms((self.gradient_sign_scale, grads)), every, self.size)]

    def update_request(self, ops: Ops, weights: Sequence[Any], prepared: Sequence[Any],
                       buffers: Sequence[Any], c: Coefficients) -> tuple[Request, Any]:
        """`||Δw||²` after the update, and the divisor of its root: from `w' = w - (d·v' + e·ĝ + f·w)`,
        `Δw = -(d·v' + e·ĝ + f·w') / (1 - f)`, so the weights before the step are not needed."""
        d, e, f = c.weight_terms()
        terms = _terms((d, buffers), (e, prepared), (f, weights)) if c.momentum is not None else \
            _terms((e, prepared), (f, weights))
        divisor = 1.0 if is_static(f) and f == 0 else \
            1.0 - (ops.vector(f) if isinstance(f, (list, tuple)) else f)
        return Request(terms, tuple(range(self.size)), self.size), divisor

    # Coefficients ------------------------------------------------------------------------------
    def coefficients(self, ops: Ops, norms: Sequence[Any], lr: Any, *, gamma: Any = 1.0,
                     last_lr: Any = None, first: Any = False, position: int | Sequence[int] = 0,
                     numbers: Mapping[str, Any] | None = None) -> Coefficients:
        """The step's coefficients from the norms of `norm_requests` (in `ops`' dtype).

        Args:
          lr: this step's learning rate (a number, or an array of the step).
          gamma: the global-norm clip factor (`clip_factor`).
          last_lr, first: the previous step's lr (None if there was none) and whether this is
            the first step (a bool, one per tensor, or an array): MXNet's momentum correction
            and a copy start read them.
          position: the first tensor's place in the step, or each tensor's (MXNet's correction
            reaches the first `momentum_correction_tensors` tensors of a step).
          numbers: arrays standing in for some of `NUMBERS` (traced hyperparameters).
        """
        hp = self.hp
        lr, first = ops.scalar(lr), _uniform(first)
        number = self._numbers(ops, numbers)
        decay = self._decays(ops, numbers)
        ratio: Any = 1.0
        if self.norm_names:
            named = dict(zip(self.norm_names, norms, strict=True))
            w_norm, g_norm = named["w"], named.get("g")
            if hp.decoupled_weight_decay and not is_static(decay):  # ||w|| after w *= 1 - lr·λ
                factor = 1.0 - lr * decay
                w_norm = w_norm * ops.where(factor < 0, -factor, factor)
            if hp.trust_denominator == "split":
                denominator = g_norm + decay * w_norm
            else:
                denominator = named["u"] if hp.trust_denominator == "combined" else g_norm
            guard = g_norm if hp.zero_norm_rule == "weight_and_grad" else denominator
            ratio, valid = self._ratio(ops, w_norm, denominator, guard, lr, number)
            ratio = ops.where(self._adapt(ops, numbers, decay), ratio, 1.0)
            if not hp.weight_decay_on_fallback and not is_static(decay):  # dropped on a fallback
                kept = valid | (ops.vector([0.0 if a else 1.0 for a in self.adapt]) > 0)
                decay = ops.where(kept, decay, 0.0)
        decoupled: Any = 0.0
        if hp.decoupled_weight_decay:
            decay, decoupled = 0.0, decay
        keep = 1.0 - number["dampening"]
        if hp.buffer_start == "copy":
            keep = _where_first(ops, first, 1.0, keep)
        momentum = self._momentum(ops, number["momentum"], lr, last_lr, first, position)
        if momentum is None:
            increment, step = 1.0, product(lr, ratio)
        elif hp.momentum_style == "heavy_ball":
            increment, step = product(keep, lr, ratio), 1.0
        elif hp.momentum_style == "sgd":
            increment, step = product(keep, ratio), lr
        else:
            increment, step = keep, product(lr, ratio)
        if self.two_phase:
            step, ratio = None, None
        elif is_static(ratio):
            ratio = ops.vector([1.0] * self.size)
        return Coefficients(self.grad_scale(gamma), decay, momentum, increment, step, ratio, self.lookahead,
                            shrink=product(lr, decoupled), decoupled_decay=decoupled)

    def finish(self, ops: Ops, coefficients: Coefficients, norms: Sequence[Any], lr: Any,
               numbers: Mapping[str, Any] | None = None) -> Coefficients:
        """The step of a ratio from the momentum output, from the norms of `direction_requests`."""
        lr = ops.scalar(lr)
        w_norm, d_norm = norms
        ratio, _ = self._ratio(ops, w_norm, d_norm, d_norm, lr, self._numbers(ops, numbers))
        ratio = ops.where(self._adapt(ops, numbers, self._decays(ops, numbers)), ratio, 1.0)
        return replace(coefficients, step=lr * ratio, trust_ratio=ratio)

    # One idea each -----------------------------------------------------------------------------
    def _ratio(self, ops: Ops, w_norm: Any, denominator: Any, guard: Any, lr: Any,
               number: Mapping[str, Any]) -> tuple[Any, Any]:
        """`eta·||w|| / (denominator + eps)` where `||w|| > 0` and `guard > 0` (everywhere with
        no zero-norm rule), else 1; capped at `trust_ratio_max`; then the LARC clip `min(r/lr, 1)`
        (1 at `lr <= 0`), on the fallback too if the flavor says so."""
        hp = self.hp
        if hp.zero_norm_rule == "none":  # a zero denominator (and eps) gives what the division gives
            valid = ops.vector([1.0] * self.size) > 0
            ratio = number["trust_coefficient"] * w_norm / (denominator + number["eps"])
        else:
            valid = (w_norm > 0) & (guard > 0)
            safe = ops.where(valid, denominator + number["eps"], 1.0)
            ratio = ops.where(valid, number["trust_coefficient"] * w_norm / safe, 1.0)
        if hp.trust_ratio_max is not None:
            ratio = ops.where(valid, ops.minimum(ratio, hp.trust_ratio_max), ratio)
        if hp.larc_clip:
            if is_static(lr):
                clipped = ops.minimum(ratio / lr, 1.0) if lr > 0 else ops.where(valid, 1.0, 1.0)
            else:
                clipped = ops.where(lr > 0, ops.minimum(ratio / ops.where(lr > 0, lr, 1.0), 1.0), 1.0)
            ratio = clipped if hp.larc_clip_on_fallback else ops.where(valid, clipped, ratio)
        return ratio, valid

    def _numbers(self, ops: Ops, numbers: Mapping[str, Any] | None) -> dict[str, Any]:
        given = numbers or {}
        return {k: ops.scalar(given[k]) if k in given else getattr(self.hp, k) for k in NUMBERS}

    def _decays(self, ops: Ops | None, numbers: Mapping[str, Any] | None) -> Any:
        """`λ` before any fallback: each tensor's weight decay (a traced one where given);
        static zero when no tensor has any."""
        if numbers and "weight_decay" in numbers:
            wd = numbers["weight_decay"] if ops is None else ops.scalar(numbers["weight_decay"])
            flags = [1.0 if d else 0.0 for d in self.decays]
            return [wd * f for f in flags] if ops is None else ops.vector(flags) * wd
        if not any(self.decays):
            return 0.0
        return self.decays if ops is None else ops.vector(self.decays)

    def _adapt(self, ops: Ops, numbers: Mapping[str, Any] | None, decay: Any) -> Any:
        """The adapted tensors' mask. A traced weight decay decides `adapt_requires_weight_decay`
        only now (the plan was made with a stand-in)."""
        adapt = ops.vector([1.0 if a else 0.0 for a in self.adapt]) > 0
        if numbers and "weight_decay" in numbers and self.hp.adapt_requires_weight_decay:
            adapt = adapt & (decay != 0)
        return adapt

    def _momentum(self, ops: Ops, m: Any, lr: Any, last_lr: Any, first: Any,
                  position: int | Sequence[int]) -> Any:
        """`a`: the momentum, or MXNet's `m·lr/lr_prev` for the first tensors of a step."""
        hp = self.hp
        if not self.has_buffer:
            return None
        if not hp.momentum_correction or last_lr is None or first is True:
            return m
        limit = hp.momentum_correction_tensors
        places = range(position, position + self.size) if isinstance(position, int) else position
        reached = [limit is None or p < limit for p in places]
        if not any(reached):
            return m
        if is_static(last_lr) and is_static(first):
            corrected = m if last_lr == 0 else m * (lr / last_lr)
        else:
            last_lr = ops.scalar(last_lr)
            valid = (last_lr != 0) & _where_first(ops, first, False, True)
            corrected = m * ops.where(valid, lr / ops.where(valid, last_lr, 1.0), 1.0)
        return corrected if all(reached) else ops.where(ops.vector(reached) > 0, corrected, m)


def _terms(*pairs: tuple[Any, Sequence[Any]]) -> tuple[tuple[Any, Sequence[Any]], ...]:
    """A request's terms, those with a static zero coefficient left out, a static one as None."""
    return tuple((None if is_static(c) and c == 1 else c, t) for c, t in pairs
                 if not (is_static(c) and c == 0))


def _plus(x: Any, y: Any) -> Any:
    """`x + y`, a static zero left out (a term absent stays absent)."""
    if is_static(y) and y == 0:
        return x
    return y if is_static(x) and x == 0 else x + y


def _uniform(first: Any) -> Any:
    """A per-tensor sequence of one value as that value."""
    if isinstance(first, (list, tuple)) and (all(first) or not any(first)):
        return bool(first) and bool(first[0])
    return first


def _where_first(ops: Ops, first: Any, then: Any, otherwise: Any) -> Any:
    if isinstance(first, bool):
        return then if first else otherwise
    if isinstance(first, (list, tuple)):
        first = ops.vector([1.0 if f else 0.0 for f in first]) > 0
    return ops.where(first, then, otherwise)


def refuse_partial_steps(hp: Hyperparams, why: str) -> None:
    """Raises `HyperparameterError` if `hp` needs every gradient of a step at once (the global
    norm of `grad_clip_norm`) and the caller sees only some of them (`why`)."""
    if hp.grad_clip_norm is not None:
        raise HyperparameterError("grad_clip_norm", hp.grad_clip_norm, f"None: {why}")
