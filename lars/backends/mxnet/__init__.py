"""The MXNet 1.9.1 adapter: `OneLARS`, an MXNet optimizer registered as "onelars" on import.

An update call (up to `aggregate_num` tensors of one dtype, from MXNet's `Updater`) is one
`lars.core.step.step`: the sums of squares come to the host once, the core computes the
coefficients there with NumPy, and one kernel updates buffers and weights (`kernels`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import nd

from lars.backends.mxnet import _compat
from lars.backends.mxnet.kernels import HostOps, Kernels, Lazy
from lars.core.checks import check_floating, check_gradient, checked_state
from lars.core.config import Config, as_config
from lars.core.errors import HyperparameterError, StateError
from lars.core.flavors import resolve
from lars.core.hyperparams import Hyperparams
from lars.core.policy import Exclude, TensorPlan, as_exclude, plan
from lars.core.rule import Rule, at, refuse_partial_steps
from lars.core.schedules import Schedule
from lars.core.state import State, load_state, save_state
from lars.core.step import Batch, step
from lars.core.trace import QUANTITIES, Recorder

#: Gluon's argument names -> the core's fields.
GLUON_NAMES = {"learning_rate": "lr", "wd": "weight_decay", "rescale_grad": "grad_rescale",
               "clip_gradient": "grad_clip_value", "eta": "trust_coefficient"}
AGGREGATION = 32  # tensors per update call by default, not MXNet's 4: each call waits for its norms
MAX_AGGREGATION = 60  # MXNet's multi-tensor kernels abort the process above


class CoreLRScheduler(mx.lr_scheduler.LRScheduler):
    """A core schedule as an MXNet scheduler: MXNet counts `num_update` from 1, the core from 0."""

    def __init__(self, schedule: Schedule) -> None:
        super().__init__(base_lr=schedule(0))
        self.schedule = schedule

    def __call__(self, num_update: int) -> float:
        return self.schedule(num_update - 1)


@dataclass
class Books:
    """A device's record (Gluon's Trainer runs an Updater per context over one optimizer): each
    tensor's steps and last lr, and how many tensors its current step has updated."""

    steps: dict[int, int] = field(default_factory=dict)
    last_lrs: dict[int, float] = field(default_factory=dict)
    position: int = 0


@mx.optimizer.register
class OneLARS(_compat.Optimizer):
    """LARS in a flavor of `lars.FLAVORS` (default "paper"), or as `hyperparameters` (a
    `lars.Hyperparams`, as it is). `learning_rate`, `wd`, `rescale_grad`, `clip_gradient`, `eta`
    (the trust coefficient) and the rest are MXNet's (None: unchanged); `overrides`: other
    `Hyperparams` fields (None is a value, as in `lars.hyperparams`). `aggregate_num`: tensors per
    update call, 1 to 60 (MXNET_OPTIMIZER_AGGREGATION_SIZE, else 32); `kernels`: MXNet's fused
    per-tensor ("single") or multi-tensor ("multi") kernels."""

    def __init__(self, learning_rate: float | None = None, flavor: str | None = None, wd: float | None = None,
                 rescale_grad: float | None = None, clip_gradient: float | None = None,
                 lr_scheduler: Any = None, multi_precision: bool = False, param_idx2name: Any = None,
                 param_dict: Any = None, aggregate_num: int | None = None, kernels: str = "single",
                 hyperparameters: Hyperparams | None = None, **overrides: Any) -> None:
        if lr_scheduler is not None and learning_rate is None and hyperparameters is None:
            learning_rate = lr_scheduler.base_lr
        named = overrides | dict(learning_rate=learning_rate, wd=wd, rescale_grad=rescale_grad,
                                 clip_gradient=clip_gradient)  # Gluon's names win over the core's
        core = {k: v for k, v in overrides.items() if k not in GLUON_NAMES}
        core |= {GLUON_NAMES[k]: v for k, v in named.items() if k in GLUON_NAMES and v is not None}
        hp = resolve(flavor, hyperparameters, **core)
        if nones := {k: as_exclude(None, k) if isinstance(getattr(hp, k, 0), Exclude) else None
                     for k, v in core.items() if v is None}:
            hp = hp.replace(**nones)
        refuse_partial_steps(hp, "an MXNet update call sees some of the step's gradients; clip them "
                                 "with gluon.utils.clip_global_norm first")
        super().__init__(rescale_grad=hp.grad_rescale, param_idx2name=param_idx2name, wd=hp.weight_decay,
                         clip_gradient=hp.grad_clip_value, learning_rate=hp.lr, lr_scheduler=lr_scheduler,
                         multi_precision=multi_precision, param_dict=param_dict)
        if aggregate_num is None:
            aggregate_num = int(os.getenv("MXNET_OPTIMIZER_AGGREGATION_SIZE", str(AGGREGATION)))
        if type(aggregate_num) is not int or not 1 <= aggregate_num <= MAX_AGGREGATION:
            raise HyperparameterError("aggregate_num", aggregate_num, "an integer from 1 to 60 (MXNet's "
                                      "multi-tensor kernels abort the process above 60 tensors)")
        if kernels not in ("single", "multi"):
            raise HyperparameterError("kernels", kernels, "'single' or 'multi'")
        self._hp, self.aggregate_num, self.kernels = hp, aggregate_num, kernels
        self._backend = Kernels(kernels == "multi")
        self.books: dict[int, Books] = {}  # by device id, as MXNet's update counts
        self.ratios: dict[int, float] = {}
        self._plans: dict[Any, TensorPlan] = {}

    tracing: Tracing | None = None  # `record`'s, left out of `Trainer.save_states`' pickle

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in super().__getstate__().items() if k != "tracing"}

    @classmethod
    def from_file(cls, config: Config | str | os.PathLike[str], **options: Any) -> OneLARS:
        """As a TOML file (`lars.load_config`) or a `lars.Config` says, its `[schedule]` a
        `CoreLRScheduler`; `options`: MXNet's, of `allowed` only."""
        config, allowed = as_config(config), ("param_idx2name", "param_dict", "multi_precision",
                                              "aggregate_num", "kernels")
        if unknown := sorted(set(options) - set(allowed)):
            raise TypeError(f"OneLARS.from_file() got {unknown}: the hyperparameters come from the "
                            f"file; only {', '.join(allowed)} may be added")
        scheduler = None if config.schedule is None else CoreLRScheduler(config.schedule)
        return cls(hyperparameters=config.hyperparams, lr_scheduler=scheduler, **options)

    @property
    def hyperparameters(self) -> Hyperparams:
        """The hyperparameters in force (`gluon.Trainer` sets `rescale_grad` before every step)."""
        if self._hp.grad_rescale != self.rescale_grad:
            self._hp = self._hp.replace(grad_rescale=self.rescale_grad)
        return self._hp

    def set_learning_rate(self, lr: float) -> None:
        """MXNet's, validated as every hyperparameter first."""
        self._hp = self.hyperparameters.with_lr(lr)
        super().set_learning_rate(lr)

    def set_lr(self, lr: float) -> None:
        """`set_learning_rate`, under the name every adapter has."""
        self.set_learning_rate(lr)

    def set_wd_mult(self, args_wd_mult: dict[str, float]) -> None:
        self.wd_mult = dict(args_wd_mult)  # MXNet's zeroes some by name: exclusion is the core's

    def create_state(self, index: int, weight: Any) -> Any:
        if Rule(self._hp, ()).has_buffer:
            return nd.zeros(weight.shape, weight.context, dtype=weight.dtype, stype=weight.stype)
        return None

    def update(self, index: Any, weight: Any, grad: Any, state: Any) -> None:
        self.update_multi_precision(index, weight, grad, state)

    def update_multi_precision(self, index: Any, weight: Any, grad: Any, state: Any) -> None:
        one = not isinstance(index, (list, tuple))
        indices, weights, grads, states = ([x] if one else list(x) for x in (index, weight, grad, state))
        if any(g.stype != "default" for g in grads):
            raise RuntimeError("OneLARS does not support sparse gradients: use dense ones")
        for i, w, g, s in zip(indices, weights, grads, states, strict=True):  # before anything changes
            name = self.name_of(i) or str(i)
            check_floating("parameter", name, np.dtype(w.dtype).name)
            check_gradient(name, g.shape, np.dtype(g.dtype).name, w.shape, np.dtype(w.dtype).name)
            for x in s if isinstance(s, tuple) else (s,):
                if x is not None and x.shape != w.shape:
                    raise StateError(f"the optimizer state of parameter {self.name_of(i) or i!r} has shape "
                                     f"{x.shape}, but the parameter has shape {w.shape}: states saved for "
                                     "another network?")
        counts = self.counts()
        begins = self.count(indices)  # first: the scheduler reads the count
        try:
            lrs, wds = self.lrs_and_wds(indices)
            for lr in set(lrs):  # a scheduler's or an lr_mult's, validated before anything changes
                self._hp.with_lr(lr)
            plans = [self._plan(*x) for x in zip(indices, weights, wds, strict=True)]
            rule = Rule(self.hyperparameters, plans)
        except Exception:
            self.restore_counts(counts)  # a refused update is not counted: the next call asks again
            raise
        book = self.books.setdefault(weights[0].context.device_id, Books())
        if begins:
            book.position = 0
        ops = HostOps(np.float64 if weights[0].dtype == np.float64 else np.float32)
        moms = [s[1] if isinstance(s, tuple) else s for s in states]
        masters = [_view(s[0]) for s in states] if isinstance(states[0], tuple) else None  # of float16
        last = [book.last_lrs.get(i) for i in indices]
        t, trace = self.num_update - self.begin_num_update - 1, self.tracing  # the step, from 0
        if trace is not None and (not trace.wants(t) or trace.device not in (None, weights[0].context)):
            trace = None  # recorded: one step in `every`, the first device's update calls
        batch = Batch(rule, ops, [_view(w) for w in weights], [Lazy(_view(g)) for g in grads],
                      [None if m is None else Lazy(_view(m), -1.0) for m in moms], ops.vector(lrs),
                      None if set(last) == {None} else ops.vector([x or 0.0 for x in last]),
                      tuple(book.steps.get(i, 0) == 0 for i in indices), book.position,
                      record=trace is not None)
        batch.extra = {"masters": masters, "targets": masters or batch.weights}
        book.position += len(indices)
        step([batch], self._backend)
        if trace is not None:
            trace.device = weights[0].context
            trace.take(t, self.learning_rate, batch.recorded, indices)
        for k, (i, lr) in enumerate(zip(indices, lrs, strict=True)):
            self.ratios[i] = float(at(batch.coefficients.trust_ratio, k))  # type: ignore[union-attr]
            book.last_lrs[i], book.steps[i] = lr, book.steps.get(i, 0) + 1

    def name_of(self, index: int) -> str | None:
        name = self.param_dict[index].name if index in self.param_dict else self.idx2name.get(index)
        return None if name is None else str(name)

    def _plan(self, index: int, weight: Any, wd: float) -> TensorPlan:
        if (key := (index, weight.shape, wd)) not in self._plans:
            (self._plans[key],) = plan(self._hp.replace(weight_decay=wd), [(self.name_of(index), key[1])])
        return self._plans[key]

    def trust_ratios(self) -> dict[str, float]:
        """The trust ratio of each parameter (by name, else index) in its last update."""
        return {self.name_of(i) or str(i): r for i, r in self.ratios.items()}


class Tracing(Recorder):
    """`record`'s `Recorder`: a step's tensors reach OneLARS in several update calls (`aggregate_num`
    each, per device); it takes the first device's, by index (`columns`), and adds the step once
    every tensor has come, or the next step begins, or it closes (NaN: a tensor that did not)."""

    columns: Mapping[int, int]
    device: Any = None
    open: tuple[int, float, dict[str, np.ndarray]] | None = None  # step, lr, values

    def take(self, step: int, lr: float, values: Mapping[str, Any], indices: Sequence[int]) -> None:
        if self.open and self.open[0] != step:
            self.close_step()
        self.open = self.open or (step, lr, {q: np.full(len(self.names), np.nan) for q in QUANTITIES})
        for q in QUANTITIES:
            self.open[2][q][[self.columns[i] for i in indices]] = values[q]
        if not np.isnan(self.open[2]["weight_norm"]).any():
            self.close_step()

    def close_step(self) -> None:
        if self.open:
            self.add(*self.open)
            self.open = None

    def close(self) -> None:
        self.close_step()
        super().close()


def _view(x: Any) -> Any:
    return x.reshape((1,)) if x.ndim == 0 else x  # the fused kernels refuse 0-d arrays


def export_state(source: Any, names: Mapping[int, str] | None = None) -> State:
    """The core's neutral state (positive buffers, by name) of a `gluon.Trainer` (its first
    context's), or of an MXNet `Updater` over OneLARS (`names`: index -> name)."""
    updater, known, _ = _compat.updaters(source, names)[0]
    optimizer, states = _compat.held(updater)
    book, buffers = optimizer.books.get(min(optimizer.books, default=0), Books()), {}  # all devices alike
    for i, s in states.items():
        if (mom := s[1] if isinstance(s, tuple) else s) is not None and book.steps.get(i, 0) > 0:
            buffers[known[i]] = -mom.asnumpy()
    return State(max(book.steps.values(), default=0), next(iter(book.last_lrs.values()), None), buffers)


def import_state(state: State, target: Any, names: Mapping[int, str] | None = None,
                 weights: Mapping[int, Any] | None = None) -> None:
    """Loads the core's neutral state into a `gluon.Trainer` (every context), or an MXNet `Updater`
    over OneLARS (`names`, `weights`: index -> name, weight NDArray). The state is checked
    completely (names, shapes, step, last lr, buffer dtypes) and every context's new state made
    before anything changes; then the Updaters get the buffers and the optimizer the step counts
    and last lr, so the next update continues the saved run."""
    targets, buffers = _compat.updaters(target, names, weights), {}
    for _, known, arrays in targets:
        buffers = checked_state(state, {known[i]: tuple(w.shape) for i, w in arrays.items()})
    made = []
    for updater, known, arrays in targets:
        optimizer, _ = _compat.held(updater)
        fresh = {i: optimizer.create_state_multi_precision(i, w) for i, w in arrays.items()}
        for i, s in fresh.items():
            if (mom := s[1] if isinstance(s, tuple) else s) is not None and known[i] in buffers:
                mom[:] = nd.array(-buffers[known[i]], ctx=mom.context, dtype=mom.dtype)
        made.append(fresh)
    for (updater, known, arrays), fresh in zip(targets, made, strict=True):
        optimizer, _ = _compat.held(updater)
        _compat.set_states(updater, fresh)
        device = next(iter(arrays.values())).context.device_id
        optimizer.books[device] = Books(  # stepped: a tensor with a buffer, or any if none has one
            {i: state.step if not buffers or known[i] in buffers else 0 for i in arrays},
            {} if state.last_lr is None else dict.fromkeys(arrays, state.last_lr))
        optimizer.set_counts(device, optimizer.begin_num_update + state.step, list(arrays))


def save(path: str | os.PathLike[str], trainer: Any) -> Path:
    """Writes a `gluon.Trainer`'s OneLARS state as a neutral state file, with its hyperparameters."""
    hp = trainer.optimizer.hyperparameters
    return save_state(path, export_state(trainer), hp.to_dict(), framework="mxnet")


def load(path: str | os.PathLike[str], trainer: Any) -> None:
    """Reads a neutral state file, checked against the Trainer's parameters, into every context."""
    _, names, weights = _compat.updaters(trainer)[0]
    import_state(load_state(path, {names[i]: tuple(w.shape) for i, w in weights.items()}).state, trainer)


def clear_state(trainer: Any) -> None:
    """Forgets every buffer and step count of a `gluon.Trainer`'s OneLARS: the next step is a first."""
    import_state(State(), trainer)


def record(trainer: Any, path: str | os.PathLike[str], every: int = 1, flush: int = 100) -> Recorder:
    """Records one step in `every` of a `gluon.Trainer`'s OneLARS into the trace file `path`
    (`lars.core.trace`; per parameter, by name), flushed every `flush` recorded steps and on
    `close`. Returns the `Recorder`, a context manager: `add_loss(t, loss)` adds step t's loss
    (t counts the Trainer's steps from 0)."""
    if not isinstance(optimizer := trainer.optimizer, OneLARS):
        raise TypeError(f"record() records lars's OneLARS, not {type(optimizer).__name__}")
    _, names, weights = _compat.updaters(trainer)[0]
    ks = sorted(weights)
    optimizer.tracing = Tracing(path, [names[i] for i in ks], [weights[i].shape for i in ks], every=every,
                                framework="mxnet", dtype=np.dtype(weights[ks[0]].dtype).name, flush=flush,
                                hyperparams=optimizer.hyperparameters.to_dict(),
                                host=lambda x: x.asnumpy() if isinstance(x, nd.NDArray) else np.asarray(x))
    optimizer.tracing.columns = {i: k for k, i in enumerate(ks)}
    return optimizer.tracing
