"""`LARS`: a `torch.optim.Optimizer` whose every decision comes from `lars.core`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lars.backends.torch import _compat, functional
from lars.backends.torch.distributed import is_sharded, shard_like, whole
from lars.backends.torch.functional import LOW_PRECISION, TensorGroup, compute_dtype
from lars.core.config import Config, as_config
from lars.core.errors import HyperparameterError, ShapeError, StateError, not_floating
from lars.core.flavors import resolve
from lars.core.hyperparams import Hyperparams, check_field_names
from lars.core.policy import TensorPlan, plan, plan_inputs
from lars.core.state import State, check_last_lr, check_state, load_state, save_state
from lars.core.trace import QUANTITIES, Recorder

RULES = ("exclude_from_weight_decay", "exclude_from_adaptation")
#: Hyperparameters that live in each param group (plain values: they go into state_dict).
GROUP_FIELDS = tuple(f for f in Hyperparams.field_names() if f not in RULES)
#: The keys of a param group (in `state_dict` too; torch adds `param_names` where it was given).
GROUP_KEYS = frozenset({*GROUP_FIELDS, "params", "foreach", "fused"})
#: The keys of a parameter's state.
STATE_KEYS = frozenset({"momentum_buffer", "master_weight", "step", "last_lr"})


class LARS(torch.optim.Optimizer):
    r"""LARS (You, Gitman, Ginsburg 2017) in any of the flavors of `lars.FLAVORS`.

    Args:
      params: parameters, parameter groups (dicts that override any hyperparameter, e.g.
        ``{"params": biases, "weight_decay": 0.0}``), or ``model.named_parameters()`` (names
        are needed for name-based exclusion rules).
      lr: the learning rate (required by the flavors that have no default).
      flavor: which public implementation to reproduce (default ``"paper"``).
      hyperparameters: a `lars.Hyperparams` to use as it is (then no flavor; ``lr`` and the
        keyword overrides still apply).
      foreach, fused: the implementation; by default the fused CPU kernel where it is exact,
        else the multi-tensor path; ``foreach=False`` steps one tensor at a time.
      master_weights: keep a float32 master copy of float16/bfloat16 parameters.
      **overrides: any field of `lars.Hyperparams` (momentum, weight_decay, trust_coefficient,
        eps, nesterov, exclude_from_weight_decay, ...). Invalid values raise
        `lars.HyperparameterError`.
    """

    def __init__(self, params: Iterable[Any], lr: float | None = None, flavor: str | None = None, *,
                 hyperparameters: Hyperparams | None = None, foreach: bool | None = None,
                 fused: bool | None = None, master_weights: bool = False, **overrides: Any) -> None:
        hp = resolve(flavor, hyperparameters, lr=lr, **overrides)
        if not isinstance(master_weights, bool):  # "no" is truthy: it would turn them on
            raise HyperparameterError("master_weights", master_weights, "True or False")
        check_path({"foreach": foreach, "fused": fused})
        self._rules = {k: getattr(hp, k) for k in RULES}
        self._master_weights = master_weights
        self._trust_ratios: dict[str, tuple[Tensor, int]] = {}  # name: (its batch's ratios, position)
        self._plans: dict[int, tuple[tuple[Any, ...], list[TensorPlan]]] = {}
        self._recorder: Recorder | None = None
        defaults = {f: getattr(hp, f) for f in GROUP_FIELDS} | {"foreach": foreach, "fused": fused}
        super().__init__(params, defaults)

    @classmethod
    def from_file(cls, params: Iterable[Any], config: Config | str | os.PathLike[str],
                    **options: Any) -> LARS:
        """LARS with the hyperparameters of a TOML file (`lars.load_config`) or a `lars.Config`,
        checked completely first; `options`: `foreach`, `fused`, `master_weights`. With a
        `[schedule]` the lr starts at its first rate: step it with `CoreScheduler.from_file`."""
        return cls(params, hyperparameters=as_config(config).hyperparams, **options)

    @property
    def hyperparameters(self) -> Hyperparams:
        """The `Hyperparams` in force (those of the first param group)."""
        return self.group_hyperparams(self.param_groups[0])

    def group_hyperparams(self, group: Mapping[str, Any]) -> Hyperparams:
        """The validated core hyperparameters of a param group (as it is now)."""
        lr = group["lr"]
        values = {f: group[f] for f in GROUP_FIELDS} | self._rules
        return Hyperparams(**values | {"lr": float(lr) if isinstance(lr, Tensor) else lr})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key in self._rules:
            if key in param_group:
                raise HyperparameterError(key, param_group[key], "an optimizer-wide rule: pass it to LARS(), "
                                          "not in a param group")
        check_field_names({k: v for k, v in param_group.items() if k not in (*GROUP_KEYS, "param_names")})
        self._check_group({**self.defaults, **param_group})  # raises before any change
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for position, (p, name) in enumerate(zip(group["params"], self._names(group), strict=True)):
            if _compat.is_flattened_by_fsdp1(p):
                self.param_groups.pop()
                raise ValueError(
                    f"parameter {name or position} (shape {tuple(p.shape)}) is flattened by FSDP1 "
                    "(FullyShardedDataParallel): LARS needs the norm of each whole tensor, which a "
                    "flattened shard does not give. Use fully_shard (FSDP2, supported) or DDP.")
        try:
            self._plan(group, self.group_hyperparams(group))
        except Exception:
            self.param_groups.pop()
            raise

    def _check_group(self, group: Mapping[str, Any]) -> None:
        """Refuses a param group (added or loaded) with a value the constructor refuses: its lr as
        given (a tensor too), another flavor, `foreach`/`fused` other than None, True, False."""
        if group["flavor"] != self.defaults["flavor"]:
            allowed = f"the optimizer's flavor {self.defaults['flavor']!r} (one per optimizer)"
            raise HyperparameterError("flavor", group["flavor"], allowed)
        check_path(group)
        Hyperparams(**{f: group[f] for f in GROUP_FIELDS} | self._rules)

    def _names(self, group: Mapping[str, Any]) -> list[str | None]:
        names = group.get("param_names")
        return list(names) if names is not None else [None] * len(group["params"])

    def _plan(self, group: Mapping[str, Any], hp: Hyperparams) -> list[TensorPlan]:
        """The core's per-tensor plan, kept per group until what it depends on changes."""
        key = (len(group["params"]), plan_inputs(hp))
        cached = self._plans.get(id(group))
        if cached is None or cached[0] != key:
            named = zip(self._names(group), [tuple(p.shape) for p in group["params"]], strict=True)
            cached = self._plans[id(group)] = (key, list(plan(hp, named)))
        return cached[1]

    def set_lr(self, lr: float) -> None:
        """Sets the learning rate of every group, validated like any hyperparameter."""
        for group in self.param_groups:
            self.group_hyperparams(group).with_lr(lr)
        for group in self.param_groups:
            group["lr"] = lr

    def clear_state(self) -> None:
        """Forgets every momentum buffer and step count: the next step is a first step."""
        self.state.clear()
        self._trust_ratios.clear()

    # The step -----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        batches, stepped, count = [], list[tuple[Tensor, str, TensorGroup, int, float]](), 0
        for number, group in enumerate(self.param_groups):
            hp, kinds = self.group_hyperparams(group), dict[Any, TensorGroup]()
            for position, (p, tensor) in enumerate(zip(group["params"], self._plan(group, hp), strict=True)):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"LARS does not support sparse gradients (parameter "
                                       f"{tensor.name or position}): use a dense embedding gradient")
                w, state = self._weights(p), self.state.get(p, {})
                count = max(count, state.get("step", 0))
                check_step_tensors(tensor.name or f"{number}.{position}", p, w, state.get("momentum_buffer"))
                t = kinds.setdefault((w.device, w.dtype), TensorGroup([], [], [], [], state.get("last_lr"),
                                                                       []))
                t.add(w, p.grad, state.get("momentum_buffer"), tensor, len(stepped))
                stepped.append((p, tensor.name or f"{number}.{position}", t, len(t.params) - 1, hp.lr))
            path = functional.path_of(group["foreach"], group["fused"])
            batches += [functional.batch(hp, t, hp.lr, path) for t in kinds.values()]
        rec = self._recorder = None if self._recorder is None or self._recorder.closed else self._recorder
        for b in batches if rec is not None and rec.wants(count) else ():
            b.record = True
        functional.run(batches)  # raises, with nothing changed, where fused=True cannot be
        if rec is not None and batches and batches[0].record:  # one value per name, kept on device
            slot = {name: k for k, name in enumerate(rec.names)}
            where = [slot[stepped[k][1]] for b in batches for k in b.extra["group"].position]
            rec.add(count, stepped[0][4], {q: ([b.recorded[q] for b in batches], where, len(slot))
                                            for q in QUANTITIES})
        self._trust_ratios.clear()
        for p, name, t, i, lr in stepped:
            state, weights = self.state[p], t.params[i]
            if t.buffers[i] is not None:
                state["momentum_buffer"] = t.buffers[i]
            state["step"], state["last_lr"] = state.get("step", 0) + 1, lr
            if weights is not p:
                state["master_weight"] = weights
                p.copy_(weights)
            self._trust_ratios[name] = (t.ratios, i)  # type: ignore[assignment]
        return loss

    def record(self, path: str | os.PathLike[str], every: int = 1, flush: int = 100) -> Recorder:
        """Records one step in `every` into a trace file (`lars.core.trace`) until the returned
        `Recorder` is closed (a context manager); `add_loss(step, loss)` adds the loss. Values stay
        on the device until a flush (every `flush` recorded steps); NaN for a tensor not stepped."""
        named = self._named_params()
        dtype = str(next(iter(named.values())).dtype).removeprefix("torch.")
        self._recorder = Recorder(path, list(named), [tuple(p.shape) for p in named.values()],
                                  framework="torch", dtype=dtype, hyperparams=self.hyperparameters.to_dict(),
                                  every=every, flush=flush, host=on_host)
        return self._recorder

    def _weights(self, p: Tensor) -> Tensor:
        """The tensor the step updates: `p`, or its float32 master copy."""
        if self._master_weights and p.dtype in LOW_PRECISION:
            master: Tensor | None = self.state[p].get("master_weight") if p in self.state else None
            return p.detach().float() if master is None else master
        return p

    def trust_ratios(self) -> dict[str, float]:
        """The trust ratio each parameter used in the last step, by name (reading syncs)."""
        values: dict[int, list[float]] = {}
        for ratios, _ in self._trust_ratios.values():
            values.setdefault(id(ratios), ratios.tolist())
        return {name: values[id(ratios)][i] for name, (ratios, i) in self._trust_ratios.items()}

    # State ---------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's `load_state_dict`, after checking every group and every parameter's state in
        it: if a check fails, nothing has changed."""
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= state_dict.keys():
            raise StateError(f"expected a LARS state_dict (with 'state' and 'param_groups'), got "
                             f"{type(state_dict).__name__}")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise StateError(f"state_dict has {len(groups)} param groups, the optimizer has "
                             f"{len(self.param_groups)}")
        for number, saved in enumerate(groups):
            if not isinstance(saved, Mapping):
                raise StateError(f"param group {number} of the state_dict is {saved!r}: expected a dict")
            missing = sorted(GROUP_KEYS - saved.keys())
            unknown = sorted(saved.keys() - GROUP_KEYS - {"param_names"})
            if missing or unknown:  # a missing key would fail in the next step, after this one
                raise StateError(f"param group {number} of the state_dict " + " and ".join(
                    [f"lacks {missing}"] * bool(missing) + [f"has unknown keys {unknown}"] * bool(unknown))
                    + ": expected a state_dict of LARS (another optimizer's, or another version's?)")
            self._check_group(saved)
        saved_ids = [i for g in groups for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        if len(saved_ids) != len(params):
            raise StateError(f"state_dict has {len(saved_ids)} parameters, the optimizer has {len(params)}")
        for saved_id, p in zip(saved_ids, params, strict=True):
            check_entry(state_dict["state"].get(saved_id, {}), p, f"the state of parameter {saved_id}")
        super().load_state_dict(state_dict)
        # torch casts loaded state to each parameter's dtype; the float32 buffers and master
        # weights of float16/bfloat16 parameters are restored from the saved float32 values.
        for saved_id, p in zip(saved_ids, params, strict=True):
            for key in ("momentum_buffer", "master_weight") if p.dtype in LOW_PRECISION else ():
                value = state_dict["state"].get(saved_id, {}).get(key)
                if value is not None:
                    self.state[p][key] = value.to(dtype=torch.float32, device=p.device).clone()

    def _named_params(self) -> dict[str, Tensor]:
        return {name or f"{g}.{i}": p for g, group in enumerate(self.param_groups)
                for i, (p, name) in enumerate(zip(group["params"], self._names(group), strict=True))}

    def export_state(self) -> State:
        """The state in the core's neutral format (buffers as NumPy arrays by name). Buffers of
        sharded parameters (FSDP2) are gathered: every rank must call it, each gets the whole."""
        states = {n: self.state[p] for n, p in self._named_params().items() if p in self.state}
        buffers = {n: whole(s["momentum_buffer"]).detach().cpu().numpy().copy()
                   for n, s in states.items() if s.get("momentum_buffer") is not None}
        step = max((int(s.get("step", 0)) for s in states.values()), default=0)
        last_lr = next((s["last_lr"] for s in states.values() if "last_lr" in s), None)
        return State(step, last_lr, buffers)

    def import_state(self, state: State) -> None:
        """Replaces the state by a neutral one; names and shapes checked before any change. A
        sharded parameter's buffer keeps this rank's piece."""
        named = self._named_params()
        check_state(state, {n: tuple(p.shape) for n, p in named.items()})
        entries = {}  # every tensor made before the old state is cleared
        for name, p in named.items() if state.step > 0 else ():
            entry: dict[str, Any] = {"step": state.step}
            if state.last_lr is not None:
                entry["last_lr"] = state.last_lr
            if name in state.momentum_buffers:
                dtype = compute_dtype(p.dtype)
                whole_buffer = torch.as_tensor(np.asarray(state.momentum_buffers[name]), dtype=dtype)
                # a piece laid out as the parameter, or a whole buffer in its memory layout
                entry["momentum_buffer"] = (shard_like(whole_buffer, p) if is_sharded(p)
                                            else torch.empty_like(p, dtype=dtype).copy_(whole_buffer))
            entries[p] = entry
        self.clear_state()
        self.state.update(entries)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the neutral state file (`lars.save_state`) with the hyperparameters in force."""
        return save_state(path, self.export_state(), self.hyperparameters.to_dict(), framework="torch")

    def load(self, path: str | os.PathLike[str]) -> None:
        """Reads a neutral state file, checked against these parameters, and imports it."""
        shapes = {n: tuple(p.shape) for n, p in self._named_params().items()}
        self.import_state(load_state(path, shapes).state)


def on_host(x: Any) -> np.ndarray:
    """A recorded value as float64 on the host: a number, a tensor, or a step's pieces placed by name."""
    if not isinstance(x, tuple):
        return np.asarray(x.detach().double().cpu() if isinstance(x, Tensor) else x, np.float64)
    pieces, where, size = x
    out = np.full(size, np.nan)
    out[where] = np.concatenate([on_host(p).reshape(-1) for p in pieces])
    return out


def check_path(options: Mapping[str, Any]) -> None:
    """`foreach` and `fused` (of the constructor or a group): None, True or False."""
    for key in ("foreach", "fused"):
        if options.get(key) is not None and not isinstance(options[key], bool):
            raise HyperparameterError(key, options[key], "None, True or False")


def described(value: Any) -> str:
    return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"


def check_entry(entry: Any, p: Tensor, where: str) -> None:
    """A parameter's state in a state_dict, as `step()` needs it (torch casts the tensors to the
    parameter's dtype and device afterwards)."""
    if not isinstance(entry, Mapping):
        raise StateError(f"{where} is {entry!r}: expected a dict")
    if unknown := sorted(set(entry) - STATE_KEYS):
        raise StateError(f"{where} has unknown keys {unknown}: a LARS state has {sorted(STATE_KEYS)}")
    step = entry.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise StateError(f"{where}: step={step!r} is invalid: expected an int >= 0")
    check_last_lr(entry.get("last_lr"), where)
    for key in ("momentum_buffer", "master_weight"):
        value = entry.get(key)
        if value is not None and not (isinstance(value, Tensor) and value.dtype.is_floating_point
                                      and value.shape == p.shape):
            shown = described(value) if isinstance(value, Tensor) else repr(value)
            raise StateError(f"{where}: {key} is {shown}, the parameter has {tuple(p.shape)}: expected a "
                             "floating-point tensor of the parameter's shape")


def check_step_tensors(name: str, p: Tensor, w: Tensor, buffer: Tensor | None) -> None:
    """What a step is about to write, checked first (dtypes and shapes: metadata, no sync), so that
    a bad last tensor does not leave the first ones stepped. Floating-point gradients of the
    parameter's shape; the buffer (and master weights `w`) as the step makes them."""
    grad = p.grad
    assert grad is not None
    if not p.dtype.is_floating_point:
        raise not_floating("parameter", name, str(p.dtype).removeprefix("torch."))
    if not grad.dtype.is_floating_point:
        raise not_floating("gradient", name, str(grad.dtype).removeprefix("torch."))
    if grad.shape != p.shape:  # worded as the reference's `check_shapes`
        raise ShapeError(f"gradient {name!r} has shape {tuple(grad.shape)}, but the parameter has shape "
                         f"{tuple(p.shape)}")
    compute = compute_dtype(p.dtype)
    for what, t in (("momentum buffer", buffer), ("master weight", w if w is not p else None)):
        if t is not None and (t.dtype != compute or t.shape != p.shape):
            raise StateError(f"the {what} of {name!r} is {described(t)}, expected one of dtype "
                             f"{str(compute).removeprefix('torch.')} and shape {tuple(p.shape)} "
                             "(clear_state() or load a state that fits)")
