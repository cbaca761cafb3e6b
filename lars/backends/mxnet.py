"""The MXNet 1.9.1 adapter: `OneLARS`, registered in MXNet's optimizer registry as "onelars".

    trainer = gluon.Trainer(net.collect_params(), "onelars",
                            {"learning_rate": 0.1, "flavor": "mxnet", "momentum": 0.9, "wd": 1e-4})

Gluon's names (`learning_rate`, `wd`, `rescale_grad`, `clip_gradient`, `eta`, `eps`,
`lr_scheduler`, `multi_precision`) are mapped to the core's in `GLUON_NAMES`, the one place.
The math is the core's (`lars.core.reference`). Two paths:

- aggregated (float32, and float16 with `multi_precision`): norms of a whole chunk with
  `multi_sum_sq` (large float32 arrays in pieces summed in float64, `mxnet_norms`: MXNet's own
  sum errs by 1e-3 at 2.4M elements), trust ratios as device arrays, and MXNet's fused
  `preloaded_multi_(mp_)sgd_(mom_)update` kernels, as MXNet's own LARS does. It computes the
  heavy-ball form with a zero start, no dampening and no nesterov; other flavors and float64
  (`multi_sum_sq` sums in float32) take the per-tensor path.
- per tensor: NDArray ops, any flavor and dtype.

Buffers are kept in MXNet's negative convention (`w += mom`), as MXNet's LARS keeps them;
`export_state` turns them into the core's positive convention. Importing this module imports
mxnet.
"""

from __future__ import annotations

import os
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import nd

from lars.backends.mxnet_norms import in_pieces, sums_of_squares
from lars.core import reference
from lars.core.config import Config, as_config
from lars.core.errors import HyperparameterError, StateError
from lars.core.flavors import hyperparams
from lars.core.hyperparams import Hyperparams
from lars.core.policy import TensorPlan, plan
from lars.core.schedules import Schedule
from lars.core.state import State

#: Gluon's argument names -> the core's fields.
GLUON_NAMES = {"learning_rate": "lr", "wd": "weight_decay", "rescale_grad": "grad_rescale",
               "clip_gradient": "grad_clip_value", "eta": "trust_coefficient"}


#: Fields for which None is a value ("exclude nothing", "correct every tensor"), not "the
#: flavor's default".
NONE_IS_A_VALUE = ("exclude_from_weight_decay", "exclude_from_adaptation", "momentum_correction_tensors")


def core_arguments(options: dict[str, Any]) -> dict[str, Any]:
    """Gluon-named options as core fields (both spellings accepted, Gluon's win).

    None means "the flavor's default", except for the exclusion rules, where it means "exclude
    nothing" as in `lars.hyperparams` (how MXNet's own LARS behaves under Gluon's Trainer), and
    for `momentum_correction_tensors`, where it means "every tensor" as in `lars.hyperparams`.
    """
    out = {k: v for k, v in options.items()
           if (v is not None or k in NONE_IS_A_VALUE) and k not in GLUON_NAMES}
    out |= {GLUON_NAMES[k]: v for k, v in options.items() if k in GLUON_NAMES and v is not None}
    return out


class CoreLRScheduler(mx.lr_scheduler.LRScheduler):
    """A core schedule as an MXNet scheduler. MXNet calls it with `num_update`, 1 at the first
    update; the core's schedules count from 0, so this returns `schedule(num_update - 1)`."""

    def __init__(self, schedule: Schedule) -> None:
        super().__init__(base_lr=schedule(0))
        self.schedule = schedule

    def __call__(self, num_update: int) -> float:
        return self.schedule(num_update - 1)


#: Tensors per update call by default. Each aggregated call reads its chunk's trust ratios on
#: the host once (MXNet's per-tensor fused kernels take their coefficients as numbers), which
#: waits for the chunk's norms: on the ResNet-50 set, 41 calls of 4 took about 1.0x the step of
#: MXNet's own LARS, 6 calls of 32 about 0.6x (`bench/mxnet_step.py`).
AGGREGATION = 32
MAX_AGGREGATION = 60


@mx.optimizer.register
class OneLARS(mx.optimizer.Optimizer):
    """LARS in any flavor of `lars.FLAVORS`, as an MXNet optimizer.

    Args:
      flavor: which public implementation to reproduce (default "paper").
      learning_rate, wd, rescale_grad, clip_gradient, eta, lr_scheduler, multi_precision,
        param_idx2name, param_dict: as in MXNet (`eta` is the trust coefficient).
      aggregate_num: tensors per update call, 1 to 60 (default: MXNET_OPTIMIZER_AGGREGATION_SIZE
        or 32, not MXNet's 4: each call waits once for its chunk's trust ratios, so fewer calls
        are faster); 1 selects the per-tensor path.
      kernels: on the aggregated path, "single" (default) applies MXNet's per-tensor fused
        `sgd_mom_update` kernels with coefficients read once per call; "multi" uses the
        multi-tensor `preloaded_multi_sgd_mom_update`, as MXNet's own LARS (slower on the CPU
        build of MXNet 1.9.1, measured in bench/mxnet_step.py).
      **hyperparameters: any other `lars.Hyperparams` field (momentum, eps, nesterov, ...).
    """

    def __init__(self, flavor: str = "paper", learning_rate: float | None = None, wd: float | None = None,
                 rescale_grad: float | None = None, clip_gradient: float | None = None,
                 lr_scheduler: Any = None, multi_precision: bool = False, param_idx2name: Any = None,
                 param_dict: Any = None, aggregate_num: int | None = None, kernels: str = "single",
                 **hyperparameters: Any) -> None:
        options = {"learning_rate": learning_rate, "wd": wd, "rescale_grad": rescale_grad,
                   "clip_gradient": clip_gradient, **hyperparameters}
        if lr_scheduler is not None and learning_rate is None:
            options["learning_rate"] = lr_scheduler.base_lr
        hp = hyperparams(flavor, **core_arguments(options))
        if hp.grad_clip_norm is not None:
            raise HyperparameterError("grad_clip_norm", hp.grad_clip_norm,
                                      "None with MXNet: an update call sees only some of the step's "
                                      "gradients; clip with gluon.utils.clip_global_norm first")
        super().__init__(rescale_grad=hp.grad_rescale, param_idx2name=param_idx2name, wd=hp.weight_decay,
                         clip_gradient=hp.grad_clip_value, learning_rate=hp.lr, lr_scheduler=lr_scheduler,
                         multi_precision=multi_precision, param_dict=param_dict)
        if aggregate_num is None:
            aggregate_num = int(os.getenv("MXNET_OPTIMIZER_AGGREGATION_SIZE", str(AGGREGATION)))
        if isinstance(aggregate_num, bool) or not isinstance(aggregate_num, int) \
                or not 1 <= aggregate_num <= MAX_AGGREGATION:
            raise HyperparameterError("aggregate_num", aggregate_num,
                                      f"an integer from 1 to {MAX_AGGREGATION} (MXNet's multi-tensor kernels "
                                      "abort the process above 60 tensors)")
        self.hp = hp
        self.aggregate_num = aggregate_num
        if kernels not in ("single", "multi"):
            raise HyperparameterError("kernels", kernels, "'single' or 'multi'")
        self.kernels = kernels
        # Gluon's Trainer without update_on_kvstore runs one Updater per context over this one
        # optimizer, so a step reaches every tensor once per context. MXNet keeps its update
        # counts per device for that (`_set_current_context` swaps them in); the step counts,
        # last learning rates and step positions are kept per device in the same way.
        self._all_steps: dict[int, dict[int, int]] = {0: {}}
        self._all_last_lrs: dict[int, dict[int, float]] = {0: {}}
        self._all_step_positions: dict[int, int] = {0: 0}
        self._device_id = 0
        self.steps = self._all_steps[0]
        self.last_lrs = self._all_last_lrs[0]
        self.step_position = 0  # tensors updated so far in this step (momentum correction)
        self.trust_ratio_values: dict[int, Any] = {}
        self._plans: dict[tuple[Any, ...], TensorPlan] = {}

    @classmethod
    def from_config_file(cls, config: Config | str | os.PathLike[str], **options: Any) -> OneLARS:
        """OneLARS with the hyperparameters of a TOML file (`lars.load_config`) or a `lars.Config`.

        The file is checked completely first; its `[schedule]` becomes a `CoreLRScheduler`.
        `options`: MXNet's `param_idx2name`, `param_dict`, `multi_precision`, `aggregate_num`,
        `kernels` only (the hyperparameters come from the file). Pass the result to
        `gluon.Trainer(params, optimizer)`.
        """
        config = as_config(config)
        allowed = ("param_idx2name", "param_dict", "multi_precision", "aggregate_num", "kernels")
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(f"OneLARS.from_config_file() got {unknown}: the hyperparameters come from the "
                            f"file; only {', '.join(allowed)} may be added")
        scheduler = None if config.schedule is None else CoreLRScheduler(config.schedule)
        return cls(flavor=config.flavor, learning_rate=config.hyperparams.lr, lr_scheduler=scheduler,
                   **config.arguments(), **options)

    # What MXNet asks ---------------------------------------------------------------------------
    def set_wd_mult(self, args_wd_mult: dict[str, float]) -> None:
        """User multipliers only: which tensors get no weight decay is the core's decision."""
        self.wd_mult = dict(args_wd_mult)

    def _set_current_context(self, device_id: int) -> None:
        """MXNet's `Updater` calls this before each update call: swaps in the device's books."""
        super()._set_current_context(device_id)
        self._all_step_positions[self._device_id] = self.step_position
        self._device_id = device_id
        self.steps = self._all_steps.setdefault(device_id, {})
        self.last_lrs = self._all_last_lrs.setdefault(device_id, {})
        self.step_position = self._all_step_positions.get(device_id, 0)

    def create_state(self, index: int, weight: nd.NDArray) -> nd.NDArray | None:
        if self.hp.momentum == 0:
            return None
        return nd.zeros(weight.shape, weight.context, dtype=weight.dtype, stype=weight.stype)

    def update(self, index: Any, weight: Any, grad: Any, state: Any) -> None:
        self.update_multi_precision(index, weight, grad, state)

    def update_multi_precision(self, index: Any, weight: Any, grad: Any, state: Any) -> None:
        many = isinstance(index, (list, tuple))
        indices: list[int] = list(index) if many else [index]
        weights, grads, states = ((list(weight), list(grad), list(state)) if many
                                  else ([weight], [grad], [state]))
        for g in grads:
            if g.stype != "default":
                raise RuntimeError("OneLARS does not support sparse gradients: use dense ones")
        self._check_states(indices, weights, states)
        hp = self.current_hyperparams()
        before = self._device_step()
        self._update_count(indices)
        if self._device_step() > before:  # this device's first update call of a step
            self.step_position = 0
        # the correction reaches the first tensors *updated* in the step, as MXNet's first chunk
        # does: positions, not parameter indices (Gluon skips parameters without gradient)
        first = self.step_position
        self.step_position = first + len(indices)
        lrs, wds = self._get_lrs(indices), self._get_wds(indices)
        plans = [self._plan(i, w, wd, hp) for i, w, wd in zip(indices, weights, wds, strict=True)]
        momenta = [reference.corrected_momentum(hp, first + k, lr, self.last_lrs.get(i))
                   for k, (i, lr) in enumerate(zip(indices, lrs, strict=True))]
        masters = [self.multi_precision and w.dtype == np.float16 for w in weights]
        if self._aggregatable(hp, weights, masters):
            self._aggregated(hp, indices, weights, grads, states, plans, lrs, momenta, masters)
        else:
            for k, i in enumerate(indices):
                self._one(hp, i, weights[k], grads[k], states[k], plans[k], lrs[k], momenta[k], masters[k])
        for i, lr in zip(indices, lrs, strict=True):
            self.last_lrs[i] = lr
            self.steps[i] = self.steps.get(i, 0) + 1

    def _device_step(self) -> int:
        """The current device's step: its highest update count (`num_update` is the highest over
        all devices, already advanced when another context updated first)."""
        return int(max(self._index_update_count.values(), default=self.begin_num_update))

    def _check_states(self, indices: list[int], weights: list[Any], states: list[Any]) -> None:
        """Refuses, before anything changes, states that do not fit the weights (states loaded
        with `Trainer.load_states` from another network)."""
        for i, w, state in zip(indices, weights, states, strict=True):
            for x in state if isinstance(state, (tuple, list)) else (state,):
                if x is not None and tuple(x.shape) != tuple(w.shape):
                    raise StateError(f"the optimizer state of parameter {self.name_of(i) or i!r} has shape "
                                     f"{tuple(x.shape)}, but the parameter has shape {tuple(w.shape)}: "
                                     "states saved for another network?")

    def current_hyperparams(self) -> Hyperparams:
        """The hyperparameters now: `gluon.Trainer` sets `rescale_grad` before every step."""
        if self.hp.grad_rescale != self.rescale_grad:
            self.hp = self.hp.replace(grad_rescale=self.rescale_grad)
        return self.hp

    def name_of(self, index: int) -> str | None:
        if index in self.param_dict:
            return str(self.param_dict[index].name)
        name = self.idx2name.get(index)
        return None if name is None else str(name)

    def _plan(self, index: int, weight: nd.NDArray, wd: float, hp: Hyperparams) -> TensorPlan:
        key = (index, weight.shape, wd)
        if key not in self._plans:
            self._plans[key] = plan(hp.replace(weight_decay=wd), [(self.name_of(index), weight.shape)])[0]
        return self._plans[key]

    # The two paths -----------------------------------------------------------------------------
    def _aggregatable(self, hp: Hyperparams, weights: list[Any], masters: list[bool]) -> bool:
        dtypes_ok = all(w.dtype == np.float32 or m for w, m in zip(weights, masters, strict=True))
        return (dtypes_ok and hp.momentum_style == "heavy_ball" and not hp.nesterov
                and hp.dampening == 0 and hp.trust_denominator != "update" and self.aggregate_num > 1)

    def _aggregated(self, hp: Hyperparams, indices: list[int], weights: list[Any], grads: list[Any],
                    states: list[Any], plans: list[TensorPlan], lrs: list[float], momenta: list[float],
                    masters: list[bool]) -> None:
        ctx, n = weights[0].context, len(weights)
        # multi_sum_sq and the fused kernels refuse 0-d arrays: give them (1,) views
        weights, grads = [_view(w) for w in weights], [_view(g) for g in grads]
        states = [None if s is None else (tuple(_view(x) for x in s) if isinstance(s, tuple) else _view(s))
                  for s in states]
        sign = -1.0 if hp.maximize else 1.0
        scaled = None
        if hp.trust_denominator == "combined" or (hp.clip_before_norms and hp.grad_clip_value is not None):
            scaled = [g * (sign * hp.grad_rescale) for g in grads]
            if hp.clip_before_norms and hp.grad_clip_value is not None:
                scaled = [nd.clip(g, -hp.grad_clip_value, hp.grad_clip_value) for g in scaled]
        w_norm = nd.sqrt(sums_of_squares(weights))
        if scaled is None:
            g_norm = nd.sqrt(sums_of_squares(grads)) * abs(hp.grad_rescale)
        else:
            g_norm = nd.sqrt(sums_of_squares(scaled))
        wd = nd.array([p.weight_decay for p in plans], ctx=ctx, dtype="float32")
        adapt = nd.array([p.adapt for p in plans], ctx=ctx, dtype="float32")
        if hp.trust_denominator == "combined" and scaled is not None:
            decayed = [g + p.weight_decay * w for g, w, p in zip(scaled, weights, plans, strict=True)]
            denominator = nd.sqrt(sums_of_squares(decayed))
        elif hp.trust_denominator == "split":
            denominator = g_norm + wd * w_norm
        else:
            denominator = g_norm
        guard = g_norm if hp.zero_norm_rule == "weight_and_grad" else denominator
        ratio, keep_wd = ratios(hp, w_norm, denominator, guard, adapt, lrs, ctx)
        self._remember(indices, ratio)
        step_lrs = nd.array(lrs, ctx=ctx, dtype="float32") * ratio
        step_wds = wd * keep_wd
        clip = hp.grad_clip_value if hp.grad_clip_value is not None else -1.0
        if self.kernels == "single":
            self._single_kernels(weights, grads, states, step_lrs, step_wds, momenta, sign * hp.grad_rescale,
                                 clip, masters)
            return
        for start in range(0, n, self.aggregate_num):
            stop = min(start + self.aggregate_num, n)
            for m in sorted(set(momenta[start:stop])):
                chunk = [k for k in range(start, stop) if momenta[k] == m]
                self._fused(weights, grads, states, chunk, step_lrs, step_wds, m, sign * hp.grad_rescale,
                            clip, masters)

    def _single_kernels(self, weights: list[Any], grads: list[Any], states: list[Any], lrs: Any, wds: Any,
                        momenta: list[float], rescale: float, clip: float, masters: list[bool]) -> None:
        """MXNet's per-tensor fused update kernels, with the chunk's coefficients read once."""
        lr_values, wd_values = lrs.asnumpy().tolist(), wds.asnumpy().tolist()
        for k, (w, g) in enumerate(zip(weights, grads, strict=True)):
            kwargs = {"lr": lr_values[k], "wd": wd_values[k], "rescale_grad": rescale, "clip_gradient": clip,
                      "out": w}
            state = states[k]
            if masters[k]:
                master, mom = state
                if self.hp.momentum != 0:
                    nd.mp_sgd_mom_update(w, g, mom, master, momentum=momenta[k], **kwargs)
                else:
                    nd.mp_sgd_update(w, g, master, **kwargs)
            elif self.hp.momentum != 0:
                nd.sgd_mom_update(w, g, state, momentum=momenta[k], **kwargs)
            else:
                nd.sgd_update(w, g, **kwargs)

    def _fused(self, weights: list[Any], grads: list[Any], states: list[Any], chunk: list[int], lrs: Any,
               wds: Any, momentum: float, rescale: float, clip: float, masters: list[bool]) -> None:
        index = nd.array(chunk, ctx=weights[0].context, dtype="int64")
        lrs_c, wds_c = nd.take(lrs, index), nd.take(wds, index)
        multi_precision = masters[chunk[0]]
        arrays: list[Any] = []
        for k in chunk:
            state = states[k]
            master, mom = (state[0], state[1]) if multi_precision else (None, state)
            arrays += [weights[k], grads[k]]
            if self.hp.momentum != 0:
                arrays.append(mom)
            if multi_precision:
                arrays.append(master)
        kwargs = {"rescale_grad": rescale, "clip_gradient": clip, "num_weights": len(chunk),
                  "out": [weights[k] for k in chunk]}
        if self.hp.momentum != 0:
            name = f"preloaded_multi_{'mp_' if multi_precision else ''}sgd_mom_update"
            getattr(nd, name)(*arrays, lrs_c, wds_c, momentum=momentum, **kwargs)
        else:
            name = f"preloaded_multi_{'mp_' if multi_precision else ''}sgd_update"
            getattr(nd, name)(*arrays, lrs_c, wds_c, **kwargs)

    def _one(self, hp: Hyperparams, index: int, weight: Any, grad: Any, state: Any, tensor: TensorPlan,
             lr: float, momentum: float, master: bool) -> None:
        mom = state[1] if master else state
        w = state[0] if master else weight
        g = grad.astype(w.dtype) if grad.dtype != w.dtype else grad
        g = g * ((-1.0 if hp.maximize else 1.0) * hp.grad_rescale)
        clipped = g if hp.grad_clip_value is None else clip(g, hp.grad_clip_value)
        g_n = clipped if hp.clip_before_norms else g
        one = nd.ones((1,), ctx=w.context, dtype=w.dtype)
        wd = tensor.weight_decay
        ratio, keep_wd = one, one
        if tensor.adapt and hp.trust_denominator != "update":
            w_norm, g_norm = norm(w), norm(g_n)
            denominator = {"split": lambda: g_norm + wd * w_norm, "combined": lambda: norm(g_n + wd * w),
                           "grad": lambda: g_norm}[hp.trust_denominator]()
            guard = g_norm if hp.zero_norm_rule == "weight_and_grad" else denominator
            ratio, keep_wd = ratios(hp, w_norm, denominator, guard, one, [lr], w.context)
        u = clipped + nd.broadcast_mul(keep_wd * wd, w)
        scale = {"heavy_ball": ratio * lr, "sgd": ratio}.get(hp.momentum_style)
        inc = u if scale is None else nd.broadcast_mul(scale, u)
        direction = inc
        if mom is not None:  # buffers are negative (w += mom): v = -mom
            keep = 1.0 - hp.dampening
            first = self.steps.get(index, 0) == 0
            start = inc if hp.buffer_start == "copy" else keep * inc
            v = start if first else momentum * (-mom) + keep * inc
            mom[:] = -v
            direction = inc + momentum * v if hp.nesterov else v
        if tensor.adapt and hp.trust_denominator == "update":
            d_norm = norm(direction)
            ratio, _ = ratios(hp, norm(w), d_norm, d_norm, one, [lr], w.context)
        factor = {"heavy_ball": None, "sgd": lr}.get(hp.momentum_style, "ratio")
        if factor is None:
            w[:] = w - direction
        elif factor == "ratio":
            w[:] = w - nd.broadcast_mul(ratio * lr, direction)
        else:
            w[:] = w - lr * direction
        if master:
            weight[:] = w.astype(weight.dtype)
        self._remember([index], ratio)

    def _remember(self, indices: list[int], ratio: Any) -> None:
        for k, i in enumerate(indices):
            self.trust_ratio_values[i] = ratio[k]

    # Telemetry and state -----------------------------------------------------------------------
    def trust_ratios(self) -> dict[str, float]:
        """The trust ratio of each parameter (by name, else index) in its last update."""
        return {self.name_of(i) or str(i): float(r.asscalar()) for i, r in self.trust_ratio_values.items()}


def clip(x: Any, c: float) -> Any:
    """Element-wise clip to [-c, c] in x's dtype (`nd.clip` holds its bounds in float32)."""
    bound = nd.full((1,), c, ctx=x.context, dtype=x.dtype)
    return nd.broadcast_maximum(nd.broadcast_minimum(x, bound), -bound)


def _view(x: Any) -> Any:
    return x.reshape((1,)) if x.ndim == 0 else x


def norm(x: Any) -> Any:
    """The L2 norm of the whole array, shape (1,). A large float32 CPU array is summed in pieces
    (`mxnet_norms`): as accurate as `nd.sum`'s compensated sum, several times faster and without
    a squared copy of the array."""
    if in_pieces(x):
        return nd.sqrt(sums_of_squares([x]))
    return nd.sqrt(nd.sum(nd.square(x))).reshape((1,))


def ratios(hp: Hyperparams, w_norm: Any, denominator: Any, guard: Any, adapt: Any, lrs: list[float],
           ctx: Any) -> tuple[Any, Any]:
    """The core's trust ratio on vectors of norms; returns (ratio, keep weight decay: 0 or 1)."""
    valid = (w_norm > 0) * (guard > 0)
    ones = nd.ones_like(w_norm)
    safe = nd.where(valid, denominator + hp.eps, ones)
    ratio = nd.where(valid, hp.trust_coefficient * w_norm / safe, ones)
    if hp.larc_clip:
        lr = nd.array(lrs, ctx=ctx, dtype=w_norm.dtype)
        positive = lr > 0
        clipped = nd.where(positive, nd.minimum(ratio / nd.where(positive, lr, ones), ones), ones)
        ratio = clipped if hp.larc_clip_on_fallback else nd.where(valid, clipped, ratio)
    ratio = nd.where(adapt > 0, ratio, ones)
    fell_back = (adapt > 0) * (1 - valid)
    keep = ones if hp.weight_decay_on_fallback else 1 - fell_back
    return ratio, keep


def export_state(updater_states: dict[int, Any], optimizer: OneLARS, names: dict[int, str]) -> State:
    """The core's neutral state from an MXNet `Updater`'s states (positive buffers, by name)."""
    buffers = {}
    for index, state in updater_states.items():
        mom = state[1] if isinstance(state, (tuple, list)) else state
        if mom is not None and optimizer.steps.get(index, 0) > 0:
            buffers[names[index]] = -mom.asnumpy()
    step = max(optimizer.steps.values(), default=0)
    last_lr = next(iter(optimizer.last_lrs.values()), None)
    return State(step, last_lr, buffers)


def import_state(state: State, updater: Any, optimizer: OneLARS, names: dict[int, str],
                 weights: dict[int, Any]) -> None:
    """Loads the core's neutral state into an MXNet `Updater` (and `optimizer`, its optimizer).

    `names` and `weights` map each parameter index to its name and weight NDArray. Every check
    (`State.check_fits`: names and shapes) runs before anything changes; then the updater gets
    fresh states holding the buffers (in MXNet's negative convention) and the optimizer the step
    count and last learning rate, so the next update continues the saved run.
    """
    state.check_fits({names[i]: tuple(w.shape) for i, w in weights.items()})
    fresh = {i: optimizer.create_state_multi_precision(i, w) for i, w in weights.items()}
    for i, s in fresh.items():
        buffer = state.momentum_buffers.get(names[i])
        mom = s[1] if isinstance(s, tuple) else s
        if buffer is not None and mom is not None:
            mom[:] = nd.array(-np.asarray(buffer), ctx=mom.context, dtype=mom.dtype)
    updater.states, updater.states_synced = fresh, dict.fromkeys(fresh, True)
    # a tensor has been stepped if it has a buffer (or if there are no buffers at all)
    steps = {i: state.step if not state.momentum_buffers or names[i] in state.momentum_buffers else 0
             for i in weights}
    last_lrs = {} if state.last_lr is None else dict.fromkeys(weights, state.last_lr)
    # MXNet keeps one count per device and swaps them in on every update call, and so does
    # OneLARS with its books: set every device's in place
    _set_on_every_device(optimizer._all_index_update_counts,
                         dict.fromkeys(weights, optimizer.begin_num_update + state.step))
    _set_on_every_device(optimizer._all_steps, steps)
    _set_on_every_device(optimizer._all_last_lrs, last_lrs)
    optimizer.num_update = optimizer.begin_num_update + state.step
    optimizer._all_step_positions = dict.fromkeys(optimizer._all_step_positions, 0)
    optimizer.step_position = 0


def _set_on_every_device(books: dict[int, dict[int, Any]], values: dict[int, Any]) -> None:
    """Every device's book holds `values`, in place (the optimizer's current one is among them)."""
    for book in books.values():
        book.clear()
        book.update(values)
