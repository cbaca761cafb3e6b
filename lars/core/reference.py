"""The reference LARS step: pure NumPy, one small function per idea.

For every tensor with a gradient, one step is (see `Hyperparams` for the notation):

1. `prepare_gradients`: `g = clip(±rescale * grad)`; the norms see the clipped gradient only
   with `clip_before_norms`.
2. `trust_ratio`: `r = eta*||w|| / (denominator + eps)`, or 1 at zero norms and for tensors
   excluded from adaptation; then the LARC clip `r = min(r/lr, 1)`.
3. `decayed_direction`: `u = g + wd*w` (`u = g` on the zero-norm branch of flavors that drop
   weight decay there).
4. `momentum_direction`: the increment `lr*r*u` / `r*u` / `u` (heavy-ball / SGD-style /
   ratio-outside) enters the buffer `v = m*v + (1-d)*increment`; nesterov reads
   `increment + m*v`.
5. `apply_direction`: `w -= direction`, `w -= lr*direction` or `w -= lr*r*direction`.

Everything is computed in each tensor's own dtype (float64 unless the caller passes float32),
with the hyperparameters cast to that dtype first, so a float32 run here rounds like a float32
framework does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lars.core.errors import ShapeError, not_floating
from lars.core.hyperparams import Hyperparams, check_lr
from lars.core.policy import TensorPlan, plan
from lars.core.state import State

Array = np.ndarray


@dataclass(frozen=True)
class StepResult:
    """What one reference step returns: new parameters, new state, per-tensor trust ratios."""

    params: dict[str, Array]
    state: State
    trust_ratios: dict[str, float]


def l2_norm(x: Array) -> Any:
    """The L2 norm `sqrt(sum(x_i^2))` of the whole flattened tensor, rounded to its own dtype.

    A dtype narrower than float64 is summed in float64 and the norm rounded once: NumPy's own
    float32 norm errs by 5e-5 (NumPy 2) to 1.5e-4 (NumPy 1.23) relative at 25M elements, more
    than the frameworks it is the reference for (JAX and TensorFlow are within 2e-8), and a
    trust ratio inherits that error. float64 keeps NumPy's norm, bit for bit.
    """
    flat = x.reshape(-1)
    if flat.dtype.itemsize >= 8:
        return np.linalg.norm(flat).astype(x.dtype)
    return np.linalg.norm(flat.astype(np.float64)).astype(x.dtype)


def prepare_gradients(
    grads: Mapping[str, Array], hp: Hyperparams
) -> tuple[dict[str, Array], dict[str, Array]]:
    """Applies `maximize`, `grad_rescale` and clipping; returns (for the update, for the norms)."""
    sign = -1.0 if hp.maximize else 1.0
    scaled = {}
    for name, g in grads.items():
        factor = g.dtype.type(sign * hp.grad_rescale)
        scaled[name] = g * factor if factor != 1 else g.copy()
    clipped = dict(scaled)
    if hp.grad_clip_value is not None:
        c = hp.grad_clip_value
        clipped = {n: np.clip(g, g.dtype.type(-c), g.dtype.type(c)) for n, g in clipped.items()}
    if hp.grad_clip_norm is not None and clipped:
        total = np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in clipped.values()))
        if total > hp.grad_clip_norm:
            scale = hp.grad_clip_norm / total
            clipped = {n: g * g.dtype.type(scale) for n, g in clipped.items()}
    return clipped, (clipped if hp.clip_before_norms else scaled)


def larc_clip(r: Any, lr: Any) -> Any:
    """LARC: `min(r / lr, 1)`, so that `lr * r` never exceeds `lr` (`lr = 0` gives 1)."""
    one = r.dtype.type(1)
    return one if lr <= 0 else min(r / lr, one)


def guarded(w_norm: Any, guard: Any, hp: Hyperparams) -> bool:
    """Whether the ratio is computed (not the fallback 1): `||w|| > 0` and `guard > 0`, or
    always without a zero-norm rule."""
    return hp.zero_norm_rule == "none" or (bool(w_norm > 0) and bool(guard > 0))


def ratio_from_norms(w_norm: Any, denominator: Any, guard: Any, hp: Hyperparams, lr: Any) -> Any:
    """`eta*||w|| / (denominator + eps)` where `guarded`, else 1; capped at `trust_ratio_max`;
    then LARC."""
    dt = w_norm.dtype.type
    valid = guarded(w_norm, guard, hp)
    with np.errstate(divide="ignore", invalid="ignore"):  # no guard: 0/0 is NaN, as it is there
        r = dt(hp.trust_coefficient) * w_norm / (denominator + dt(hp.eps)) if valid else dt(1)
    if valid and hp.trust_ratio_max is not None:
        r = min(r, dt(hp.trust_ratio_max))
    if hp.larc_clip and (valid or hp.larc_clip_on_fallback):
        r = larc_clip(r, lr)
    return r


def trust_ratio(w: Array, g_norm_source: Array, wd: Any, hp: Hyperparams, lr: Any) -> tuple[Any, bool]:
    """The trust ratio of an adapted tensor, and whether it fell back to 1 at a zero norm.

    Denominators: split `||g|| + wd*||w||`, combined `||g + wd*w||`, grad `||g||`. The zero-norm
    guard is `||g||` (`weight_and_grad`) or that denominator (`weight_and_denominator`).
    """
    w_norm, g_norm = l2_norm(w), l2_norm(g_norm_source)
    if hp.trust_denominator == "split":
        denominator = g_norm + wd * w_norm
    elif hp.trust_denominator == "combined":
        denominator = l2_norm(g_norm_source + wd * w)
    else:
        denominator = g_norm
    guard = g_norm if hp.zero_norm_rule == "weight_and_grad" else denominator
    return ratio_from_norms(w_norm, denominator, guard, hp, lr), not guarded(w_norm, guard, hp)


def decayed_direction(w: Array, g: Array, wd: Any, fell_back: bool, hp: Hyperparams) -> Array:
    """`u = g + wd*w`; flavors that drop weight decay on the zero-norm branch use `u = g`."""
    if wd == 0 or (fell_back and not hp.weight_decay_on_fallback):
        return g
    return g + wd * w


def increment(u: Array, r: Any, lr: Any, hp: Hyperparams) -> Array:
    """What enters the momentum buffer: `lr*r*u`, `r*u` or `u`."""
    if hp.momentum_style == "heavy_ball":
        return (lr * r) * u
    if hp.momentum_style == "sgd":
        return r * u
    return u


def momentum_direction(
    inc: Array, buffer: Array | None, momentum: Any, hp: Hyperparams
) -> tuple[Array, Array | None]:
    """`v = m*v + (1-d)*inc` (or `v = inc` on a copy start); returns (direction, new buffer).

    Without momentum there is no buffer and dampening is ignored (as in torch SGD).
    """
    if hp.momentum == 0:
        return inc, None
    dt = inc.dtype.type
    if buffer is None and hp.buffer_start == "copy":
        new_buffer = inc.copy()
    elif buffer is None:
        new_buffer = dt(1 - hp.dampening) * inc
    else:
        new_buffer = momentum * buffer + dt(1 - hp.dampening) * inc
    direction = inc + momentum * new_buffer if hp.nesterov else new_buffer
    return direction, new_buffer


def apply_direction(w: Array, direction: Array, r: Any, lr: Any, hp: Hyperparams) -> Array:
    if hp.momentum_style == "heavy_ball":
        return w - direction
    if hp.momentum_style == "sgd":
        return w - lr * direction
    return w - (lr * r) * direction


def corrected_momentum(hp: Hyperparams, index: int, lr: float, last_lr: float | None) -> float:
    """MXNet's `m * lr_t / lr_{t-1}` for the first `momentum_correction_tensors` tensors."""
    limit = hp.momentum_correction_tensors
    if not hp.momentum_correction or last_lr is None or last_lr == 0:
        return hp.momentum
    if limit is not None and index >= limit:
        return hp.momentum
    return hp.momentum * (lr / last_lr)


def tensor_step(
    w: Array, g: Array, g_norm_source: Array, buffer: Array | None, tensor: TensorPlan,
    hp: Hyperparams, lr: float, momentum: float,
) -> tuple[Array, Array | None, float]:
    """One tensor's step: returns (new weights, new buffer, trust ratio)."""
    dt = w.dtype.type
    lr_t, wd = dt(lr), dt(tensor.weight_decay)
    adapt_now = tensor.adapt and hp.trust_denominator != "update"
    start = w * (dt(1) - lr_t * wd) if hp.decoupled_weight_decay else w  # decoupled: decay first
    r, fell_back = trust_ratio(start, g_norm_source, wd, hp, lr_t) if adapt_now else (dt(1), False)
    if hp.decoupled_weight_decay:
        w = w if fell_back and not hp.weight_decay_on_fallback else start
        wd = dt(0)  # nothing of it in the increment
    u = decayed_direction(w, g, wd, fell_back, hp)
    direction, new_buffer = momentum_direction(increment(u, r, lr_t, hp), buffer, dt(momentum), hp)
    if tensor.adapt and hp.trust_denominator == "update":
        w_norm, d_norm = l2_norm(w), l2_norm(direction)
        r = ratio_from_norms(w_norm, d_norm, d_norm, hp, lr_t)
    return apply_direction(w, direction, r, lr_t, hp), new_buffer, float(r)


def check_shapes(params: Mapping[str, Array], grads: Mapping[str, Array], state: State) -> None:
    """Refuses, before anything is computed, gradients or buffers that do not fit the params."""
    unknown = sorted(set(grads) - set(params))
    if unknown:
        raise ShapeError(f"gradients for unknown parameters {unknown}; known: {sorted(params)}")
    for name, g in grads.items():
        for kind, x in (("parameter", params[name]), ("gradient", g)):
            dtype = np.asarray(x).dtype
            if dtype.kind != "f" and dtype.name != "bfloat16":  # ml_dtypes' bfloat16 is kind "V"
                raise not_floating(kind, name, dtype.name)
        if np.shape(g) != np.shape(params[name]):
            raise ShapeError(f"gradient {name!r} has shape {np.shape(g)}, but the parameter has shape "
                             f"{np.shape(params[name])}")
    state.check_fits({n: np.shape(w) for n, w in params.items()})


def step(
    params: Mapping[str, Array],
    grads: Mapping[str, Array | None],
    state: State,
    hp: Hyperparams,
    lr: float | None = None,
) -> StepResult:
    """One LARS step of all tensors. Pure: the inputs are not modified.

    Args:
      params: tensors by name, in a fixed order (the order matters only for MXNet's
        momentum correction, which reaches the first `momentum_correction_tensors`).
      grads: gradients by name; a missing or None gradient skips that tensor entirely. A
        gradient for an unknown name, or of another shape, raises `ShapeError`.
      state: the state before the step (`State()` at the start).
      hp: the hyperparameters.
      lr: this step's learning rate (after any schedule); `hp.lr` if None. Validated as
        `Hyperparams.lr` is (a finite number >= 0), before anything is computed.
    Returns:
      new params, new state and the trust ratio used for each stepped tensor.
    """
    lr = hp.lr if lr is None else check_lr(lr)  # the same refusal as Hyperparams(lr=...)
    stepped = {n: g for n, g in grads.items() if g is not None}
    check_shapes(params, stepped, state)
    stepped = {n: stepped[n] for n in params if n in stepped}  # parameter order
    g_update, g_norm = prepare_gradients(stepped, hp)
    plans = {p.name: p for p in plan(hp, ((n, params[n].shape) for n in stepped))}
    new_params = {n: np.array(w, copy=True) for n, w in params.items()}
    buffers = dict(state.momentum_buffers)
    ratios: dict[str, float] = {}
    for index, name in enumerate(stepped):
        momentum = corrected_momentum(hp, index, lr, state.last_lr)
        new_params[name], new_buffer, ratios[name] = tensor_step(
            params[name], g_update[name], g_norm[name], buffers.get(name), plans[name], hp, lr, momentum
        )
        if new_buffer is not None:
            buffers[name] = new_buffer
    return StepResult(new_params, State(state.step + 1, lr, buffers), ratios)
