"""`LARS`: a `torch.optim.Optimizer` whose every decision comes from `lars.core`."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lars.backends.torch.distributed import is_sharded, layout_of, local, shard_like, whole
from lars.backends.torch.functional import (
    LOW_PRECISION,
    TensorGroup,
    clip_global_norm,
    fusable,
    lars,
    localized,
    needs_preparation,
    reduce_ratio_norms,
    restore_buffers,
    scale_and_clip,
    sharded_global_norm,
    squared_norm,
)
from lars.core import reference
from lars.core.config import Config, as_config
from lars.core.errors import HyperparameterError, StateError
from lars.core.flavors import hyperparams
from lars.core.hyperparams import Hyperparams
from lars.core.policy import plan
from lars.core.state import State, load_state, save_state

#: Hyperparameters that live in each param group (plain values: they go into state_dict).
GROUP_FIELDS = tuple(f for f in Hyperparams.field_names()
                     if f not in ("exclude_from_weight_decay", "exclude_from_adaptation"))


class LARS(torch.optim.Optimizer):
    r"""LARS (You, Gitman, Ginsburg 2017) in any of the flavors of `lars.FLAVORS`.

    Args:
      params: parameters, parameter groups (dicts that override any hyperparameter, e.g.
        ``{"params": biases, "weight_decay": 0.0}``), or ``model.named_parameters()`` (names
        are needed for name-based exclusion rules).
      lr: the learning rate (required by the flavors that have no default).
      flavor: which public implementation to reproduce (default ``"paper"``).
      foreach, fused: the implementation; by default the fused CPU kernel where it is exact,
        else the multi-tensor path; ``foreach=False`` steps one tensor at a time.
      master_weights: keep a float32 master copy of float16/bfloat16 parameters.
      **hyperparameters: any field of `lars.Hyperparams` (momentum, weight_decay,
        trust_coefficient, eps, nesterov, exclude_from_weight_decay, ...), overriding the
        flavor's defaults. Invalid values raise `lars.HyperparameterError`.
    """

    def __init__(self, params: Iterable[Any], lr: float | None = None, flavor: str = "paper", *,
                 foreach: bool | None = None, fused: bool | None = None,
                 master_weights: bool = False, **hyperparameters: Any) -> None:
        if lr is not None:
            hyperparameters["lr"] = lr
        hp = hyperparams(flavor, **hyperparameters)
        self._exclusions = {"exclude_from_weight_decay": hp.exclude_from_weight_decay,
                            "exclude_from_adaptation": hp.exclude_from_adaptation}
        self._master_weights = master_weights
        self._trust_ratios: dict[str, tuple[Tensor, int]] = {}  # name: (its batch's ratios, position)
        self._plans: dict[int, tuple[tuple[Any, ...], list[Any]]] = {}
        defaults = {f: getattr(hp, f) for f in GROUP_FIELDS} | {"foreach": foreach, "fused": fused}
        super().__init__(params, defaults)

    @classmethod
    def from_config(cls, params: Iterable[Any], config: Config | str | os.PathLike[str], *,
                    foreach: bool | None = None, fused: bool | None = None,
                    master_weights: bool = False) -> LARS:
        """LARS with the hyperparameters of a TOML file (`lars.load_config`) or a `lars.Config`.

        The file is read and checked completely before anything is made. With a `[schedule]`
        the lr starts at the schedule's first rate; step the schedule with
        `CoreScheduler.from_config(optimizer, config)`.
        """
        config = as_config(config)
        return cls(params, lr=config.hyperparams.lr, flavor=config.flavor, foreach=foreach, fused=fused,
                   master_weights=master_weights, **config.arguments())

    # Construction and validation -------------------------------------------------------------
    def group_hyperparams(self, group: Mapping[str, Any]) -> Hyperparams:
        """The validated core hyperparameters of a param group (as it is now)."""
        lr = group["lr"]
        values = {f: group[f] for f in GROUP_FIELDS} | self._exclusions
        values["lr"] = float(lr) if isinstance(lr, Tensor) else lr
        return Hyperparams(**values)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        for key in self._exclusions:
            if key in param_group:
                raise HyperparameterError(key, param_group[key], "an optimizer-wide rule: pass it to LARS(), "
                                          "not in a param group")
        if param_group.get("flavor", self.defaults["flavor"]) != self.defaults["flavor"]:
            allowed = f"the optimizer's flavor {self.defaults['flavor']!r} (one per optimizer)"
            raise HyperparameterError("flavor", param_group["flavor"], allowed)
        unknown = set(param_group) - set(GROUP_FIELDS) - {"params", "foreach", "fused", "param_names"}
        if unknown:
            from lars.core.hyperparams import check_field_names

            check_field_names({k: param_group[k] for k in unknown})
        self.group_hyperparams({**self.defaults, **param_group})  # raises before any change
        super().add_param_group(param_group)
        try:
            self._refuse_flat_parameters(self.param_groups[-1])
            self._plan(self.param_groups[-1], self.group_hyperparams(self.param_groups[-1]))
        except Exception:
            self.param_groups.pop()
            raise

    def _refuse_flat_parameters(self, group: Mapping[str, Any]) -> None:
        """FSDP1 hands an optimizer flattened pieces of tensors (its `FlatParameter`, or 1-D views
        with `use_orig_params`): no whole-tensor norm, no shape for the exclusion rules."""
        for position, (p, name) in enumerate(zip(group["params"], self._names(group), strict=True)):
            if getattr(p, "_fsdp_flattened", False):
                raise ValueError(
                    f"parameter {name or position} (shape {tuple(p.shape)}) is flattened by FSDP1 "
                    "(FullyShardedDataParallel): LARS needs the norm of each whole tensor, which a "
                    "flattened shard does not give. Use fully_shard (FSDP2, supported) or DDP.")

    def _names(self, group: Mapping[str, Any]) -> list[str | None]:
        names = group.get("param_names")
        return list(names) if names is not None else [None] * len(group["params"])

    def _plan(self, group: Mapping[str, Any], hp: Hyperparams) -> list[Any]:
        """The core's per-tensor plan, kept per group until the group's weight decay changes."""
        key = (len(group["params"]), hp.weight_decay, hp.adapt_requires_weight_decay)
        cached = self._plans.get(id(group))
        if cached is None or cached[0] != key:
            shapes = [tuple(p.shape) for p in group["params"]]
            plans = list(plan(hp, zip(self._names(group), shapes, strict=True)))
            cached = self._plans[id(group)] = (key, plans)
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
        groups = [(group, self.group_hyperparams(group)) for group in self.param_groups]
        for group, hp in groups:  # refuse fused=True before any tensor of any group is stepped
            self._check_fusable(group, hp)
        prepared = self._prepare_gradients(groups)
        self._trust_ratios.clear()
        batches: list[tuple[Hyperparams, dict[str, Any], list[Any]]] = []
        index = 0
        for number, (group, hp) in enumerate(groups):
            index = self._batch_group(group, hp, index, number, batches)
        tensor_groups = [self._tensor_group(batch, prepared) for _, _, batch in batches]
        # DTensors (FSDP2) are stepped on their local pieces, with the whole-tensor norms of all
        # groups from one sum over the shards (one all_reduce per step).
        local_groups = [localized(t) if any(is_sharded(p) for p in t.params) else t for t in tensor_groups]
        reduce_ratio_norms([(hp, lg) for (hp, _, _), t, lg in zip(batches, tensor_groups, local_groups,
                                                                   strict=True) if lg is not t])
        for (hp, group, batch), tensor_group, local_group in zip(batches, tensor_groups, local_groups,
                                                                  strict=True):
            self._step_batch(hp, group, batch, tensor_group, local_group)
        return loss

    def _prepare_gradients(self, groups: list[tuple[dict[str, Any], Hyperparams]],
                           ) -> dict[Tensor, tuple[Tensor, Tensor]]:
        """Rescaled and clipped gradients, by parameter; the clip norm is global, as in the core."""
        lists = {}
        for g, (group, hp) in enumerate(groups):
            params = [p for p in group["params"] if p.grad is not None]
            if needs_preparation(hp) and params:
                lists[g] = (params, *scale_and_clip([local(p.grad, p) for p in params], hp))
        if any(groups[g][1].grad_clip_norm is not None for g in lists):
            device = next(iter(lists.values()))[1][0].device
            layouts = [layout_of(p) for params, _, _ in lists.values() for p in params]
            if any(layout is not None for layout in layouts):  # sharded: one sum over the shards
                total = sharded_global_norm([u.to(device) for _, update, _ in lists.values() for u in update],
                                            layouts)
            else:
                total = torch.sqrt(sum((squared_norm(update).to(device) for _, update, _ in lists.values()),
                                       torch.zeros((), dtype=torch.float64, device=device)))
            for g, (params, update, source) in lists.items():
                hp = groups[g][1]
                lists[g] = (params, *clip_global_norm(update, source, hp, total.to(update[0].device)))
        return {p: (u, n) for params, update, source in lists.values()
                for p, u, n in zip(params, update, source, strict=True)}

    def _batch_group(self, group: dict[str, Any], hp: Hyperparams, index: int, number: int,
                     out: list[tuple[Hyperparams, dict[str, Any], list[Any]]]) -> int:
        """Appends the group's stepped tensors to `out`, one batch per device and dtype."""
        lr = hp.lr
        batches: dict[tuple[Any, ...], list[tuple[Tensor, Any, str]]] = defaultdict(list)
        for position, (p, tensor_plan) in enumerate(zip(group["params"], self._plan(group, hp), strict=True)):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"LARS does not support sparse gradients (parameter "
                                   f"{tensor_plan.name or position}): use a dense embedding gradient")
            weights = self._weights(p)
            name = tensor_plan.name or f"{number}.{position}"
            last_lr = self.state[p].get("last_lr") if p in self.state else None
            momentum = reference.corrected_momentum(hp, index, lr, last_lr)
            batches[(weights.device, weights.dtype)].append((p, (tensor_plan, momentum, weights), name))
            index += 1
        out += [(hp, group, batch) for batch in batches.values()]
        return index

    def _check_fusable(self, group: dict[str, Any], hp: Hyperparams) -> None:
        if not group["fused"]:
            return
        stepped = [p for p in group["params"] if p.grad is not None]
        batches: dict[tuple[Any, ...], list[Tensor]] = defaultdict(list)
        for p in stepped:
            weights = self._weights(p)
            batches[(weights.device, weights.dtype)].append(p)
        for params in batches.values():
            buffers = [self.state[p].get("momentum_buffer") if p in self.state else None for p in params]
            reason = fusable(hp, [self._weights(p) for p in params], [p.grad for p in params],  # type: ignore[misc]
                             buffers)
            if reason is not None:
                raise RuntimeError(f"fused=True is not possible here: {reason}")

    def _weights(self, p: Tensor) -> Tensor:
        """The tensor the step updates: `p`, or its float32 master copy."""
        if self._master_weights and p.dtype in LOW_PRECISION:
            master: Tensor | None = self.state[p].get("master_weight") if p in self.state else None
            return p.detach().float() if master is None else master
        return p

    def _tensor_group(self, batch: list[Any], prepared: dict[Tensor, tuple[Tensor, Tensor]]) -> TensorGroup:
        params = [p for p, _, _ in batch]
        is_prepared = bool(params) and params[0] in prepared
        return TensorGroup(
            params=[w for _, (_, _, w), _ in batch],
            grads=[prepared[p][0] for p in params] if is_prepared else [p.grad for p in params],
            norm_grads=[prepared[p][1] for p in params] if is_prepared else None,
            prepared=is_prepared,
            buffers=[self.state[p].get("momentum_buffer") for p in params],
            weight_decays=[t.weight_decay for _, (t, _, _), _ in batch],
            adapt=[t.adapt for _, (t, _, _), _ in batch],
            momenta=[m for _, (_, m, _), _ in batch],
        )

    def _step_batch(self, hp: Hyperparams, group: dict[str, Any], batch: list[Any],
                    tensor_group: TensorGroup, local_group: TensorGroup) -> None:
        ratios = lars(hp, local_group, hp.lr, foreach=group["foreach"], fused=group["fused"])
        if local_group is not tensor_group:
            restore_buffers(tensor_group, local_group)
        for i, (p, (_, _, weights), name) in enumerate(batch):
            state = self.state[p]
            if tensor_group.buffers[i] is not None:
                state["momentum_buffer"] = tensor_group.buffers[i]
            state["step"] = state.get("step", 0) + 1
            state["last_lr"] = hp.lr
            if weights is not p:
                state["master_weight"] = weights
                p.copy_(weights)
            self._trust_ratios[name] = (ratios, i)  # indexing the vector here costs ~2 us a tensor

    # Telemetry -----------------------------------------------------------------------------------
    def trust_ratios(self) -> dict[str, float]:
        """The trust ratio each parameter used in the last step, by name (reading syncs)."""
        values: dict[int, list[float]] = {}
        for ratios, _ in self._trust_ratios.values():
            if id(ratios) not in values:
                values[id(ratios)] = ratios.tolist()
        return {name: values[id(ratios)][i] for name, (ratios, i) in self._trust_ratios.items()}

    # State ---------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's `load_state_dict`, after checking hyperparameters and buffer shapes."""
        groups = state_dict.get("param_groups", [])
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, the optimizer has "
                             f"{len(self.param_groups)}")
        saved_ids = [i for g in groups for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        if len(saved_ids) != len(params):
            raise ValueError(f"state_dict has {len(saved_ids)} parameters, the optimizer has {len(params)}")
        for saved, group in zip(groups, self.param_groups, strict=True):
            self.group_hyperparams({**group, **{k: v for k, v in saved.items() if k in GROUP_FIELDS}})
        for saved_id, p in zip(saved_ids, params, strict=True):
            buffer = state_dict["state"].get(saved_id, {}).get("momentum_buffer")
            if buffer is not None and tuple(buffer.shape) != tuple(p.shape):
                raise StateError(f"momentum buffer of parameter {saved_id} has shape {tuple(buffer.shape)}, "
                                 f"the parameter has {tuple(p.shape)}")
        super().load_state_dict(state_dict)
        # torch casts loaded state to each parameter's dtype; the float32 buffers and master
        # weights of float16/bfloat16 parameters are restored from the saved float32 values.
        for saved_id, p in zip(saved_ids, params, strict=True):
            if p.dtype in LOW_PRECISION:
                for key in ("momentum_buffer", "master_weight"):
                    value = state_dict["state"].get(saved_id, {}).get(key)
                    if value is not None:
                        self.state[p][key] = value.to(dtype=torch.float32, device=p.device).clone()

    def _named_params(self) -> dict[str, Tensor]:
        named = {}
        for g, group in enumerate(self.param_groups):
            for i, (p, name) in enumerate(zip(group["params"], self._names(group), strict=True)):
                named[name or f"{g}.{i}"] = p
        return named

    def export_state(self) -> State:
        """The state in the core's neutral format (buffers as float64 NumPy arrays by name).

        Buffers of sharded parameters (`DTensor`, FSDP2) are gathered into whole tensors: every
        rank must call it, and every rank gets the same whole state.
        """
        named = self._named_params()
        states = {n: self.state[p] for n, p in named.items() if p in self.state}
        buffers = {n: whole(s["momentum_buffer"]).detach().cpu().numpy().copy()
                   for n, s in states.items() if s.get("momentum_buffer") is not None}
        step = max((int(s.get("step", 0)) for s in states.values()), default=0)
        last_lr = next((s["last_lr"] for s in states.values() if "last_lr" in s), None)
        return State(step, last_lr, buffers)

    def import_state(self, state: State) -> None:
        """Replaces the state by a neutral one; checks names and shapes before any change.

        The buffers are whole tensors; a sharded parameter's buffer keeps this rank's piece.
        """
        named = self._named_params()
        state.check_fits({n: tuple(p.shape) for n, p in named.items()})
        self.clear_state()
        for name, p in named.items():
            entry: dict[str, Any] = {"step": state.step}
            if state.last_lr is not None:
                entry["last_lr"] = state.last_lr
            if name in state.momentum_buffers:
                dtype = torch.float32 if p.dtype in LOW_PRECISION else p.dtype
                whole_buffer = torch.as_tensor(np.asarray(state.momentum_buffers[name]), dtype=dtype)
                layout = layout_of(p)
                if layout is None:  # in the parameter's memory layout, as a buffer made here is
                    entry["momentum_buffer"] = torch.empty_like(p, dtype=dtype).copy_(whole_buffer)
                else:
                    entry["momentum_buffer"] = shard_like(whole_buffer.to(p.device), layout)
            if state.step > 0:
                self.state[p] = entry

    def save(self, path: str) -> Path:
        """Writes the neutral state file (`lars.save_state`) with the first group's hyperparameters."""
        return save_state(path, self.export_state(), self.group_hyperparams(self.param_groups[0]).to_dict(),
                          framework="torch")

    def load(self, path: str) -> None:
        """Reads a neutral state file, checked against these parameters, and imports it."""
        shapes = {n: tuple(p.shape) for n, p in self._named_params().items()}
        self.import_state(load_state(path, shapes).state)
