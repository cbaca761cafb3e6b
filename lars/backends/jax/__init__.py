"""The JAX adapter: `lars(...)`, `lars.core.step` as an `optax.GradientTransformationExtraArgs`,
pure and jit-able (importing it imports jax and optax). Per leaf, one expression per output
(XLA fuses them into one pass), `v' = a·v + bk·ĝ + bl·w` and `update = -(d·v' + e·ĝ + f·w)`,
with the coefficients of `lars.core.rule` (no term for a static 0), in float32 for float16 and
bfloat16 params (float32 buffers), else in the param's dtype. The leaves of one compute dtype are
one `Batch`, each with its place among the leaves (MXNet's momentum correction reads it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lars.backends.jax._compat import varying
from lars.core import schedules
from lars.core.config import Config, as_config
from lars.core.errors import (
    ExclusionError,
    HyperparameterError,
    ShapeError,
    ShardingError,
    StateError,
    not_floating,
)
from lars.core.flavors import resolve
from lars.core.hyperparams import Hyperparams
from lars.core.policy import Exclude, TensorPlan, plan
from lars.core.rule import NUMBERS, STAND_INS, Coefficients, Request, Rule, at
from lars.core.state import State, check_state, load_state, save_state
from lars.core.step import Batch, assemble, jobs, step
from lars.core.trace import QUANTITIES, Recorder, TraceError
from lars.core.xp import Ops, is_static, step_dtype

Schedule = Callable[[jax.Array], jax.Array]
#: The mesh axes a tensor is split over, in `axis_name`'s order; () for a replicated tensor.
Axes = tuple[str, ...]


class LarsState(NamedTuple):
    """Updates so far, buffers (positive convention; None without momentum), last lr, trust ratios;
    with `lars(..., record=k)` the last recorded update's values (`lars.core.trace.QUANTITIES`,
    one per leaf), else None."""

    count: jax.Array
    momentum: Any
    last_lr: jax.Array
    trust_ratios: Any
    record: Any = None


class Lars(optax.GradientTransformationExtraArgs):
    """An optax transformation with every adapter's shape: `hyperparameters` (the `lars.Hyperparams`
    in force) and `save`, `load`, `trust_ratios`, `set_lr`, `clear_state`, which take the state (a
    `LarsState`, or any optax state holding one, e.g. of a chain) and the params."""

    hyperparameters: Hyperparams
    arguments: dict[str, Any]  # of `lars(...)`, for `set_lr`

    def save(self, path: str | os.PathLike[str], state: Any, params: Any) -> Path:
        """Writes the neutral state file (`lars.save_state`) with the hyperparameters in force."""
        return save_state(path, export_state(find(state), params), self.hyperparameters.to_dict(),
                          framework="jax")

    def load(self, path: str | os.PathLike[str], state: Any, params: Any) -> Any:
        """`state` with a neutral state file's values in its `LarsState` (all checked first)."""
        names, shapes = names_and_shapes(params)
        saved = load_state(path, dict(zip(names, shapes, strict=True))).state
        return replaced(state, import_state(saved, find(state), params))

    def trust_ratios(self, state: Any, params: Any) -> dict[str, float]:
        """The trust ratio of each leaf (by key path) in the last update (reading syncs)."""
        ratios = jax.tree.structure(params).flatten_up_to(find(state).trust_ratios)
        return {n: float(r) for n, r in zip(names_and_shapes(params)[0], ratios, strict=True)}

    def set_lr(self, learning_rate: float) -> Lars:
        """This transformation at another learning rate, validated (transformations are immutable)."""
        self.hyperparameters.with_lr(learning_rate)
        return lars(**{**self.arguments, "learning_rate": learning_rate})

    def recorder(self, path: str | os.PathLike[str], params: Any, every: int | None = None,
                 flush: int = 100) -> StateRecorder:
        """A `Recorder` of the updates of a transformation made with `record=k` (`every`: k or a
        multiple of it), fed outside jit by `add_state(state, loss=None)` after each update."""
        k, dtype = int(self.arguments["record"]), np.dtype(jax.tree.leaves(params)[0].dtype).name
        rec = StateRecorder(path, *names_and_shapes(params), framework="jax", dtype=dtype, flush=flush,
                            hyperparams=self.hyperparameters.to_dict(), every=every or k or 1)
        if not k or rec.every % k:
            raise TraceError(f"every={rec.every} with record={self.arguments['record']!r}: record the "
                             "updates of lars(..., record=k) every k-th update, or a multiple of k")
        return rec

    def clear_state(self, state: Any, params: Any) -> Any:
        """`state` with a fresh `LarsState`: the next update is a first step."""
        return replaced(state, self.init(params))


class StateRecorder(Recorder):
    """A `Recorder` fed by the optax state: the values stay on the device until a flush."""

    count: int | None = None

    def add_state(self, state: Any, loss: Any = None) -> None:
        """After every update (the first call reads the step count: one wait, once)."""
        s = find(state)
        self.count = int(s.count) - 1 if self.count is None else self.count + 1
        if self.wants(self.count):
            self.add(self.count, s.last_lr, s.record, loss)


def find(state: Any) -> LarsState:
    """The one `LarsState` in an optax state."""
    found = [s for s in jax.tree.leaves(state, is_leaf=is_lars_state) if isinstance(s, LarsState)]
    if len(found) != 1:
        raise StateError(f"expected one LarsState in the optimizer state, found {len(found)}")
    return found[0]


def is_lars_state(x: Any) -> bool:
    return isinstance(x, LarsState)


def replaced(state: Any, new: LarsState) -> Any:
    """`state` with `new` in place of its `LarsState`."""
    find(state)
    return jax.tree.map(lambda s: new if is_lars_state(s) else s, state, is_leaf=is_lars_state)


class JaxOps(Ops):
    """`lars.core.xp.Ops` in `jnp`, in one dtype."""

    traced = True

    def vector(self, values: Any) -> Any: return jnp.asarray(values, self.dtype)
    def scalar(self, value: Any) -> Any: return value if is_static(value) else jnp.asarray(value, self.dtype)
    def where(self, condition: Any, x: Any, y: Any) -> Any: return jnp.where(condition, x, y)
    def sqrt(self, x: Any) -> Any: return jnp.sqrt(x)
    def minimum(self, x: Any, y: Any) -> Any: return jnp.minimum(x, y)
    def cos(self, x: Any) -> Any: return jnp.cos(x)
    def power(self, x: Any, y: Any) -> Any: return jnp.power(x, y)
    def clip(self, x: Any, low: float, high: float) -> Any: return jnp.clip(x, low, high)
    def total(self, x: Any) -> Any: return jnp.sum(x)
    def largest(self, x: Any) -> Any: return jnp.max(x)
    def cond(self, c: Any, then: Any, otherwise: Any) -> Any: return jax.lax.cond(c, then, otherwise)


def affine(terms: Iterable[tuple[Any, Any]], widen: Callable[[Any], Any]) -> Any:
    """`Σ c·widen(t)`: no term for a static 0 (no `0·inf`), no product for a static 1 or None (or None)."""
    xs = [t if c is None or (is_static(c) and c == 1) else c * t for c, x in terms
          if not (is_static(c) and c == 0) for t in (widen(x),)]
    return sum(xs[1:], xs[0]) if xs else None


class Kernel:
    """The `lars.core.step.Backend` of one update: per leaf, axes and dtype in; update, buffer, ratio out."""

    def __init__(self, axes: list[Axes], dtypes: list[Any], buffers: list[Any]) -> None:
        self.axes, self.dtypes, self.buffers = axes, dtypes, buffers
        self.updates: list[Any] = [None] * len(axes)
        self.ratios: list[Any] = [None] * len(axes)

    def sums_of_squares(self, requests: Sequence[tuple[Batch, Sequence[Request]]]) -> list[list[Any]]:
        todo = [(b, r, jobs(r)) for b, r in requests]
        local = [jnp.sum(jnp.square(affine(j, apart))) for _, _, js in todo for j in js]
        owners = [b.extra["leaves"][i] for b, r, _ in todo for q in r for i in q.only]
        summed = iter(psum(local, [self.axes[i] for i in owners]))
        return [assemble(r, [next(summed) for _ in js], b.ops.vector) for b, r, js in todo]

    def update(self, batch: Batch, c: Coefficients, *, buffers: bool = True, weights: bool = True) -> None:
        w, g, v = batch.weights, batch.prepared, batch.buffers
        if buffers and c.momentum is not None:
            a, bk, bl = c.buffer_terms()
            v = batch.buffers = [affine([(at(a, k), v[k]), (at(bk, k), g[k]), (at(bl, k), w[k])], widened)
                                 for k in range(len(w))]
        if weights:
            d, e, f = c.weight_terms()
            moved = [affine([(at(d, k), v[k]), (at(e, k), g[k]), (at(f, k), w[k])], widened)
                     for k in range(len(w))]
            for k, (i, s) in enumerate(zip(batch.extra["leaves"], moved, strict=True)):
                self.updates[i] = narrow(jnp.zeros(w[k].shape) if s is None else -s, self.dtypes[i])
                self.buffers[i], self.ratios[i] = v[k], at(c.trust_ratio, k)
            if batch.record is not False:  # the core reads the new weights (XLA drops them if unused)
                batch.weights = [x if s is None else x - s for x, s in zip(w, moved, strict=True)]


def narrow(x: Any, dtype: Any) -> Any:
    """`x.astype(dtype)`; to bfloat16 rounded to nearest even on the bits, NaN kept a quiet NaN:
    XLA:CPU's own conversion is slow inside a fusion (`docs/benchmarks.md`)."""
    if dtype != jnp.bfloat16:
        return x.astype(dtype)
    b = jax.lax.bitcast_convert_type(x, jnp.uint32)
    b = jnp.where(jnp.isnan(x), b | 0x400000, b + ((b >> 16) & 1) + 0x7FFF) >> 16
    return jax.lax.bitcast_convert_type(b.astype(jnp.uint16), jnp.bfloat16)


def widened(x: Any) -> Any:
    return x.astype(compute_dtype(x))


def apart(x: Any) -> Any:
    """`widened(x)` for the norms: behind a barrier, so that XLA does not merge this conversion
    with the update's (or `apply_updates`'): merged, it is a float32 copy of every leaf at every
    step (XLA:CPU's reductions fuse an unshared conversion only), fresh memory each time."""
    return x if x.dtype == compute_dtype(x) else widened(jax.lax.optimization_barrier(x))


def compute_dtype(x: Any) -> Any:
    """The dtype a leaf steps in (`lars.core.xp.step_dtype`)."""
    return jnp.dtype(step_dtype(jnp.dtype(x.dtype).name))


def key_name(path: tuple[Any, ...]) -> str:
    """A pytree key path as a name, e.g. `('layer1', 'kernel')` -> `"layer1/kernel"`."""
    return "/".join(next((str(getattr(k, a)) for a in ("key", "name", "idx") if hasattr(k, a)), str(k))
                    for k in path)


def names_and_shapes(params: Any) -> tuple[list[str], list[tuple[int, ...]]]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return [key_name(path) for path, _ in leaves], [tuple(np.shape(x)) for _, x in leaves]


def mask_rule(mask: Any, params: Any, field: str) -> Exclude:
    """A pytree of booleans (True: excluded) as the core's rule of exact names."""
    try:
        flags = jax.tree.structure(params).flatten_up_to(mask)
    except (ValueError, TypeError) as exc:
        raise ExclusionError(f"{field}: the mask's tree structure differs from the params' ({exc})") from None
    return Exclude.mask(n for n, flag in zip(names_and_shapes(params)[0], flags, strict=True) if bool(flag))


def is_mask(value: Any) -> bool:
    """A pytree container whose leaves are all booleans (anything else goes to the core)."""
    leaves, treedef = jax.tree_util.tree_flatten(value)
    return treedef.num_nodes > 1 and all(isinstance(x, bool) or getattr(x, "dtype", None) == np.bool_
                                         for x in leaves)


def is_number_array(value: Any) -> bool:
    """A 0-d array of real numbers (NumPy's or JAX's, traced too): a number that may be an input
    of the step. Anything else that is not a Python number goes to the core as it is, to be
    refused there with the core's message (`float()` would take True, "0.1" or [0.1])."""
    return (isinstance(value, (jax.Array, np.ndarray, np.generic)) and getattr(value, "shape", None) == ()
            and np.dtype(value.dtype).kind in "fiu")


def concrete(value: Any) -> float | None:
    """A 0-d array's value, or None while tracing (then the step reads the array)."""
    try:
        return float(value)
    except TypeError:  # jax.errors.ConcretizationTypeError included
        return None


def check_leaves(names: list[str], w: list[Any], g: list[Any] | None = None,
                 v: list[Any] | None = None) -> None:
    """Refuses, before anything is computed, leaves LARS cannot step: integer or complex params or
    gradients, a gradient of another shape (it would broadcast) or None, a buffer that `init`
    would not have made (dtypes and shapes only: static, nothing is read from a device)."""
    for k, name in enumerate(names):
        if not jnp.issubdtype(w[k].dtype, jnp.floating):
            raise not_floating("parameter", name, np.dtype(w[k].dtype).name)
        if g is not None and g[k] is None:
            raise ShapeError(f"the gradient of {name!r} is None: lars steps every leaf of the params "
                             "(give a frozen leaf a zero gradient, or leave it out with optax.masked)")
        if g is not None and not jnp.issubdtype(g[k].dtype, jnp.floating):
            raise not_floating("gradient", name, np.dtype(g[k].dtype).name)
        if g is not None and np.shape(g[k]) != np.shape(w[k]):
            raise ShapeError(f"gradient {name!r} has shape {np.shape(g[k])}, but the parameter has shape "
                             f"{np.shape(w[k])}")
        if v is not None and v[k] is not None and (np.shape(v[k]) != np.shape(w[k])
                                                   or v[k].dtype != compute_dtype(w[k])):
            raise StateError(f"the momentum buffer of {name!r} is {v[k].dtype}{list(np.shape(v[k]))}, "
                             f"expected {np.dtype(compute_dtype(w[k])).name}{list(np.shape(w[k]))} "
                             "(as init makes it)")


# Norms inside `jax.shard_map`: a split tensor's ||x||² is the psum of its shards' sums of squares
# over its mesh axes (`Axes`); a replicated one's is local (summed, it would count once per device).
def axis_names(axis_name: Any) -> Axes | None:
    """`axis_name` as a tuple of distinct names; None for no mesh axis."""
    names = (axis_name,) if isinstance(axis_name, str) else axis_name
    if names is None or (isinstance(names, (tuple, list)) and names and len(set(names)) == len(names)
                         and all(isinstance(a, str) and a for a in names)):
        return None if names is None else tuple(names)
    raise HyperparameterError("axis_name", axis_name, "None, a mesh axis name or a tuple of distinct names")


def leaf_axes(sharded: Any, names: list[str], params: Any, axes: Axes | None) -> list[Axes]:
    """The axes each leaf is split over as `sharded` declares it: None, every leaf over every
    axis; else a pytree of booleans or PartitionSpecs (`P("x", ("y", "z"))`: x, y and z)."""
    if axes is None or sharded is None:
        return [axes or ()] * len(names)
    try:
        declared = jax.tree.structure(params).flatten_up_to(sharded)
    except (ValueError, TypeError) as exc:
        raise ShardingError(f"sharded: the tree structure does not match the params' ({exc})") from None
    out = []
    for name, d in zip(names, declared, strict=True):
        if not isinstance(d, (bool, np.bool_, jax.sharding.PartitionSpec)):
            raise ShardingError(f"sharded: {name!r} is declared by {d!r}: expected a bool or a PartitionSpec")
        named = set(axes if d else ()) if isinstance(d, (bool, np.bool_)) else {
            a for e in d if e is not None for a in (e if isinstance(e, tuple) else (e,))}
        if outside := named - set(axes):
            raise ShardingError(f"sharded: {name!r} is split over {sorted(map(str, outside))} (its {d}), "
                                f"which axis_name {axes} does not name (its norms would be a shard's)")
        out.append(tuple(a for a in axes if a in named))
    return out


def check_axes(axes: Axes, axes_of: list[Axes], names: list[str], w: list[Any], g: list[Any]) -> None:
    """Refuses a declaration that disagrees with the axes JAX knows the params to vary over, and
    gradients that vary over an axis their tensor is not split over (not yet reduced)."""
    try:
        tracked = set(axes) <= varying(jax.lax.axis_index(axes))
    except NameError:
        raise ShardingError(f"axis_name {axes}: no such mapped axis here; call the update inside "
                            "jax.shard_map over these axes (leave it out under jit: whole tensors)") from None
    for name, declared, w_leaf, g_leaf in zip(names, axes_of, w, g, strict=True):
        if tracked and (split := tuple(a for a in axes if a in varying(w_leaf))) != declared:
            raise ShardingError(f"sharded: {name!r} is declared split over {declared}, but inside "
                                f"shard_map it is split over {split}: declare it with `sharded=`")
        if tracked and (unreduced := [a for a in axes if a in varying(g_leaf) and a not in declared]):
            raise ShardingError(f"the gradient of {name!r} varies over {unreduced}, which {name!r} is "
                                "not split over: reduce it first (jax.lax.pmean over those axes)")


def psum(values: list[jax.Array], axes_of: list[Axes]) -> list[jax.Array]:
    """Each local value summed over its axes: one `psum` per set of axes, in its values' widest dtype."""
    out = list(values)
    for axes in dict.fromkeys(a for a in axes_of if a):
        members = [i for i, a in enumerate(axes_of) if a == axes]
        dtype = jnp.result_type(*(values[i] for i in members))
        summed = jax.lax.psum(jnp.stack([values[i].astype(dtype) for i in members]), axes)
        for k, i in enumerate(members):
            out[i] = summed[k].astype(values[i].dtype)
    return out


def as_schedule(schedule: schedules.Schedule) -> Schedule:
    """A core schedule as an optax schedule: its `value` at the update count, in `jnp`."""
    if not isinstance(schedule, schedules.Schedule):
        raise TypeError(f"schedule {schedule!r} is not a lars.core.schedules schedule")
    return lambda count: schedule.value(count, JaxOps(jnp.result_type(float)))


def lars(learning_rate: float | Schedule | None = None, flavor: str | None = None, *,
         hyperparameters: Hyperparams | None = None, weight_decay: Any = None, momentum: Any = None,
         dampening: Any = None, trust_coefficient: Any = None, eps: Any = None, nesterov: bool | None = None,
         exclude_from_weight_decay: Any = None, exclude_from_adaptation: Any = None,
         axis_name: str | tuple[str, ...] | None = None, sharded: Any = None, record: bool | int = False,
         **axes: Any) -> Lars:
    """LARS of a flavor (default "paper") or of a `lars.Hyperparams` as it is, overridden by each
    argument that is not None (docs/jax.md). `learning_rate`: a float, an array or an optax
    schedule (None: the hyperparameters'). `momentum`, ... may be arrays (inject_hyperparams),
    the structure coming from their values when made. Exclusions: a rule of `as_exclude` on key
    paths (`"layer/kernel"`) and shapes, or a pytree of booleans (True: excluded). `record`: True
    or k, each k-th update writes its per-leaf values into the state (`Lars.recorder` reads them)."""
    arguments = {k: v for k, v in locals().items() if k != "axes"} | axes
    mesh_axes = axis_names(axis_name)
    if sharded is not None and mesh_axes is None:
        raise HyperparameterError("sharded", sharded, "None without axis_name (which it splits)")
    if record is not False and (not isinstance(record, int) or record < 1):
        raise HyperparameterError("record", record, "False, True or an int >= 1")
    if isinstance(axes.get("axes"), dict):  # optax.inject_hyperparams passes **axes as axes=
        axes = {**axes.pop("axes"), **axes}
    given = dict(zip(NUMBERS, (momentum, dampening, weight_decay, trust_coefficient, eps), strict=True))
    numbers = {k: v for k, v in given.items() if is_number_array(v)}
    static = {k: v if k not in numbers else STAND_INS[k] if concrete(v) is None else concrete(v)
              for k, v in given.items() if v is not None}
    rules = {"exclude_from_weight_decay": exclude_from_weight_decay,
             "exclude_from_adaptation": exclude_from_adaptation}
    masks = {k: v for k, v in rules.items() if is_mask(v)}
    lr = (None if learning_rate is None or callable(learning_rate) else
          concrete(learning_rate) if is_number_array(learning_rate) else learning_rate)
    lr = 0.0 if lr is None and learning_rate is not None and hyperparameters is None else lr  # stand-in
    hp = resolve(flavor, hyperparameters, lr=lr, nesterov=nesterov, **static, **axes,
                 **{k: v for k, v in rules.items() if k not in masks})

    def rule_of(params: Any) -> tuple[Hyperparams, list[TensorPlan]]:
        resolved = hp.replace(**{k: mask_rule(m, params, k) for k, m in masks.items()}) if masks else hp
        return resolved, list(plan(resolved, zip(*names_and_shapes(params), strict=True)))

    def init_fn(params: Any) -> LarsState:
        resolved, plans = rule_of(params)  # refuses bad masks, and bad declarations of sharding:
        check_leaves(names_and_shapes(params)[0], jax.tree.leaves(params))
        leaf_axes(sharded, names_and_shapes(params)[0], params, mesh_axes)
        buffers = jax.tree.map(lambda p: jnp.zeros(p.shape, compute_dtype(p)), params)
        return LarsState(jnp.zeros((), jnp.int32), buffers if Rule(resolved, plans).has_buffer else None,
                         jnp.zeros((), jnp.result_type(float)),
                         jax.tree.map(lambda p: jnp.ones((), compute_dtype(p)), params), nothing(params))

    def nothing(params: Any) -> Any:  # what an update that does not record holds
        n = len(jax.tree.leaves(params))
        return {q: jnp.full(n, jnp.nan, jnp.result_type(float)) for q in QUANTITIES} if record else None

    def update_fn(grads: Any, state: LarsState, params: Any = None, **_: Any) -> tuple[Any, LarsState]:
        if params is None:
            raise ValueError("lars needs the params: call update(grads, state, params)")
        resolved, plans = rule_of(params)
        inputs = dict(numbers)
        if state.momentum is None and inputs.pop("momentum", None) is not None:
            resolved = resolved.replace(momentum=0.0)  # no buffer where init made none
        treedef, names = jax.tree.structure(params), names_and_shapes(params)[0]
        w, g = treedef.flatten_up_to(params), treedef.flatten_up_to(grads)
        v = [None] * len(w) if state.momentum is None else treedef.flatten_up_to(state.momentum)
        check_leaves(names, w, g, v)
        axes_of = leaf_axes(sharded, names, params, mesh_axes)
        if mesh_axes is not None:
            check_axes(mesh_axes, axes_of, names, w, g)
        lr = resolved.lr if learning_rate is None else (
            learning_rate(state.count) if callable(learning_rate) else learning_rate)
        dtypes, groups = [compute_dtype(x) for x in w], dict[Any, list[int]]()
        for i, dtype in enumerate(dtypes):
            groups.setdefault(dtype, []).append(i)
        every = int(record)  # each k-th update records (the others skip ||Δw||: NaN in the state)
        gate = every == 1 or (every > 1 and state.count % every == 0)
        batches = [Batch(Rule(resolved, [plans[i] for i in ix]), JaxOps(dtypes[ix[0]]),
                         [w[i] for i in ix], [g[i] for i in ix],
                         [v[i] for i in ix], lr, last_lr=state.last_lr, first=state.count == 0,
                         position=ix, numbers=inputs, extra={"leaves": ix}, record=gate)
                   for ix in groups.values()]
        step(batches, kernel := Kernel(axes_of, [x.dtype for x in w], v))
        order, wide = np.argsort([i for ix in groups.values() for i in ix]), jnp.result_type(float)
        values = {q: jnp.where(gate, jnp.concatenate([b.recorded[q].astype(wide) for b in batches])[order],
                               jnp.nan) for q in QUANTITIES} if every else None
        return treedef.unflatten(kernel.updates), LarsState(
            optax.safe_int32_increment(state.count),
            None if state.momentum is None else treedef.unflatten(kernel.buffers),
            jnp.asarray(lr, state.last_lr.dtype), treedef.unflatten(kernel.ratios), values)

    tx = Lars(init_fn, update_fn)
    tx.hyperparameters, tx.arguments = hp, arguments
    return tx


def from_file(config: Config | str | os.PathLike[str]) -> Lars:
    """`lars(...)` of a `lars.Config` or a TOML file (read and checked first), schedule included."""
    config = as_config(config)
    return lars(config.schedule and as_schedule(config.schedule), hyperparameters=config.hyperparams)


def export_state(state: LarsState, params: Any) -> State:
    """The core's neutral state (buffers by key-path name, as NumPy arrays)."""
    names, started, buffers = names_and_shapes(params)[0], int(state.count) > 0, state.momentum
    leaves = jax.tree.structure(params).flatten_up_to(buffers) if started and buffers is not None else []
    return State(int(state.count), float(state.last_lr) if started else None,
                 {n: np.asarray(b) for n, b in zip(names, leaves, strict=False)})


def import_state(neutral: State, state: LarsState, params: Any) -> LarsState:
    """`state` (from `tx.init(params)`) with the neutral state's values; checked first."""
    names, shapes = names_and_shapes(params)
    check_state(neutral, dict(zip(names, shapes, strict=True)))
    saved = neutral.momentum_buffers
    if saved and state.momentum is None:
        raise StateError("the state has momentum buffers but this transformation has no momentum")
    treedef = jax.tree.structure(params)
    buffers = None if state.momentum is None else treedef.unflatten([
        jnp.asarray(saved[n], b.dtype) if n in saved else b
        for n, b in zip(names, treedef.flatten_up_to(state.momentum), strict=True)])
    return LarsState(jnp.asarray(neutral.step, jnp.int32), buffers,
                     jnp.asarray(neutral.last_lr or 0.0, state.last_lr.dtype), state.trust_ratios,
                     state.record)
