r"""`LARS`, a `keras.optimizers.Optimizer` on Keras's TensorFlow and JAX backends.

The rule is the core's, run in the order of `lars.core.step`: each dtype's variables are one
`Batch`, every norm is taken before any variable changes, and each variable's update is the
affine form of `lars.core.rule`, written for the velocity `n = -v` that `keras.optimizers.SGD`
keeps (so a `.keras` file moves between Keras's backends):

    n' = a·n - (b·κ)·ĝ - (b·λ)·w,      w' = w - (-d·n' + e·ĝ + f·w)

with TF's training kernels wherever they express it (`lars.backends.keras.tf`), else with
`keras.ops` (always on JAX, where XLA fuses it). Exclusions are planned from each variable's
path (`"dense/kernel"`) and shape; Keras's decoupled `weight_decay` is never used.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from lars.backends.keras import _compat
from lars.core import schedules as core_schedules
from lars.core.config import Config, as_config
from lars.core.errors import StateError
from lars.core.flavors import resolve
from lars.core.hyperparams import Hyperparams
from lars.core.policy import plan
from lars.core.rule import Coefficients, Request, Rule, at
from lars.core.state import State
from lars.core.step import Batch, assemble, step
from lars.core.xp import Ops, is_static

if _compat.TENSORFLOW:
    from lars.backends.keras import tf as tf_kernels

#: Keras base-class arguments that LARS passes through (applied before the LARS step).
KERAS_ARGUMENTS = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum",
                   "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps")
RULES = ("exclude_from_weight_decay", "exclude_from_adaptation")


def sum_of_squares(x: Any) -> Any:
    """One accurate pass: TF's `L2Loss`, else `keras.ops` (XLA fuses it)."""
    return tf_kernels.sum_of_squares(x) if _compat.TENSORFLOW else ops.sum(ops.square(x))


class KerasOps(Ops):
    """`lars.core.xp.Ops` with `keras.ops` in one dtype; Python numbers become tensors of it
    (TensorFlow does not promote), constant vectors are made once."""

    def __init__(self, dtype: str) -> None:
        self.name = dtype
        self._vectors: dict[tuple[Any, ...], Any] = {}

    def tensor(self, x: Any) -> Any:
        if not is_static(x):
            return x
        return ops.convert_to_tensor(x, dtype="bool" if isinstance(x, bool) else self.name)

    def vector(self, values: Any) -> Any:
        key = tuple(values)
        if key not in self._vectors:
            self._vectors[key] = ops.convert_to_tensor(np.asarray(key, dtype=np.float64), dtype=self.name)
        return self._vectors[key]

    def scalar(self, value: Any) -> Any:
        return value if is_static(value) else ops.cast(value, self.name)

    def where(self, condition: Any, x: Any, y: Any) -> Any:
        return ops.where(condition, self.tensor(x), self.tensor(y))

    def sqrt(self, x: Any) -> Any:
        return ops.sqrt(x.vector if isinstance(x, Sums) else x)

    def minimum(self, x: Any, y: Any) -> Any:
        return ops.minimum(self.tensor(x), self.tensor(y))

    def cos(self, x: Any) -> Any:
        return ops.cos(x)

    def power(self, x: Any, y: Any) -> Any:
        return ops.power(self.tensor(x), self.tensor(y))

    def clip(self, x: Any, low: float, high: float) -> Any:
        return ops.clip(x, low, high)


class Sums:
    """A vector of sums of squares, with the `.sum()` that `lars.core.step` takes of the global
    clip's (a NumPy method, which tf.Tensor lacks)."""

    def __init__(self, vector: Any) -> None:
        self.vector = vector

    def sum(self) -> Any:
        return ops.sum(self.vector)


@keras.saving.register_keras_serializable(package="lars")
class CoreSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A core schedule (`lars.core.schedules`) as a Keras schedule in floatx; `step` counts from 0."""

    def __init__(self, schedule: core_schedules.Schedule) -> None:
        self.schedule = schedule

    def __call__(self, step: Any) -> Any:
        return self.schedule.value(step, KerasOps(keras.config.floatx()))

    def get_config(self) -> dict[str, Any]:
        return {"kind": type(self.schedule).__name__, **self.schedule.__dict__}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CoreSchedule:
        config = dict(config)
        return cls(getattr(core_schedules, config.pop("kind"))(**config))


@keras.saving.register_keras_serializable(package="lars")
class LARS(_compat.Hooks, keras.optimizers.Optimizer):
    """LARS (You, Gitman, Ginsburg 2017) in any flavor of `lars.FLAVORS`, or any `lars.Hyperparams`.

    Args:
      learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`
        (`CoreSchedule` wraps the core's schedules); by default the hyperparameters' `lr`.
      flavor: which public implementation to reproduce (default "paper").
      hyperparameters: a `lars.Hyperparams` taken as it is (keyword arguments override it).
      **kwargs: any field of `lars.Hyperparams` (momentum, weight_decay, trust_coefficient,
        eps, nesterov, exclude_from_weight_decay, ...; a regex matches the variable path), and
        Keras's own `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`, ..., which Keras
        applies to the gradients (summed over replicas) before LARS sees them.
    """

    def __init__(self, learning_rate: Any = None, flavor: str | None = None, name: str = "lars",
                 hyperparameters: Hyperparams | None = None, **kwargs: Any) -> None:
        keras_kwargs = {k: kwargs.pop(k) for k in KERAS_ARGUMENTS if k in kwargs}
        if isinstance(learning_rate, (int, float)):
            kwargs["lr"] = learning_rate
        elif learning_rate is not None and hyperparameters is None:
            kwargs.setdefault("lr", 0.0)  # the schedule gives every step's rate
        hp = resolve(flavor, hyperparameters, **kwargs)
        super().__init__(learning_rate=hp.lr if learning_rate is None else learning_rate, name=name,
                         weight_decay=None, **keras_kwargs)
        self.hp = hp

    @classmethod
    def from_toml(cls, config: Config | str | os.PathLike[str], name: str = "lars",
                  **keras_kwargs: Any) -> LARS:
        """LARS with the hyperparameters of a TOML file (`lars.load_config`) or a `lars.Config`.

        (Keras's own `from_config` rebuilds an optimizer from its `get_config()` dict; this one
        reads a hyperparameter file.) The file is checked completely first; its `[schedule]`
        becomes a `CoreSchedule`. `keras_kwargs`: Keras's `clipnorm`, `use_ema`, ... only.
        """
        config = as_config(config)
        unknown = sorted(set(keras_kwargs) - set(KERAS_ARGUMENTS))
        if unknown:
            raise TypeError(f"LARS.from_toml() got {unknown}: the hyperparameters come from the file; "
                            f"only Keras's own arguments may be added ({', '.join(KERAS_ARGUMENTS)})")
        schedule = None if config.schedule is None else CoreSchedule(config.schedule)
        return cls(schedule, name=name, hyperparameters=config.hyperparams, **keras_kwargs)

    @property
    def hyperparameters(self) -> Hyperparams:
        return self.hp

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        super().build(variables)
        self._plans = plan(self.hp, [(v.path, tuple(v.shape)) for v in variables])
        self.momentums = [self.add_variable_from_reference(v, name="momentum") for v in variables
                          ] if Rule(self.hp, self._plans).has_buffer else []
        floatx, first = keras.config.floatx(), "only_first_replica"  # written in the replica context
        self.last_trust_ratios = self.add_variable((len(variables),), initializer="ones", dtype=floatx,
                                                   aggregation=first, name="trust_ratios")
        self.last_lr = self.add_variable((), dtype=floatx, aggregation=first, name="last_lr")

    def set_lr(self, learning_rate: float) -> None:
        """Sets a constant learning rate, validated like any hyperparameter."""
        self.hp = self.hp.with_lr(learning_rate)
        self.learning_rate = learning_rate

    def clear_state(self) -> None:
        """Zeroes the buffers and the step count: the next step is a first step."""
        for v in [*self.momentums, self.iterations, self.last_lr]:
            v.assign(ops.zeros_like(v))
        self.last_trust_ratios.assign(ops.ones_like(self.last_trust_ratios))

    # The step ------------------------------------------------------------------------------------
    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Keras's one-variable hook; Keras calls `lars_step` with all of them."""
        self.lars_step([gradient], [variable], learning_rate)

    def lars_step(self, grads: Sequence[Any], variables: Sequence[Any], learning_rate: Any) -> None:
        """One step of the variables given (those with a gradient): the gradients summed over
        replicas, Keras's clipping of the sum, then the core's step on one `Batch` per dtype."""
        variables = list(variables)
        grads = _compat.keras_clip(self, _compat.all_reduce(self, grads, variables))
        indices = [_compat.variable_index(self, v) for v in variables]
        groups: dict[str, list[int]] = {}
        for p, v in enumerate(variables):
            groups.setdefault(keras.backend.standardize_dtype(v.dtype), []).append(p)
        batches, first, position = [], ops.equal(self.iterations, 0), 0
        for dtype, ps in groups.items():
            rule = Rule(self.hp, [self._plans[indices[p]] for p in ps])
            batches.append(Batch(rule, KerasOps(dtype), [variables[p] for p in ps],
                                 [ops.cast(grads[p], dtype) for p in ps],
                                 [self.momentums[indices[p]] if rule.has_buffer else None for p in ps],
                                 learning_rate, last_lr=self.last_lr, first=first, position=position,
                                 extra={"indices": [indices[p] for p in ps], "u": {}}))
            position += len(ps)
        step(batches, _Kernels(self))
        order, ratios = [], []
        for b in batches:
            assert b.coefficients is not None
            order += b.extra["indices"]
            ratios.append(ops.cast(b.coefficients.trust_ratio, self.last_trust_ratios.dtype))
        recorded = ops.concatenate(ratios)
        if order != list(range(len(self._plans))):  # some variables had no gradient
            recorded = ops.scatter_update(ops.convert_to_tensor(self.last_trust_ratios),
                                          [[i] for i in order], recorded)
        self.assign(self.last_trust_ratios, recorded)
        self.assign(self.last_lr, ops.cast(learning_rate, self.last_lr.dtype))

    # Telemetry and serialization -----------------------------------------------------------------
    def trust_ratios(self) -> dict[str, float]:
        """The trust ratio of each variable (by path) in the last step."""
        return {t.name: float(r) for t, r in zip(self._plans, _numpy(self.last_trust_ratios), strict=True)}

    def export_state(self) -> State:
        """The state in the core's neutral format (positive buffers by variable path)."""
        step = int(_numpy(self.iterations))
        buffers = {} if step == 0 else {t.name: -_numpy(n) for t, n in zip(self._plans, self.momentums)}
        return State(step, float(_numpy(self.last_lr)) if step else None, buffers)

    def import_state(self, state: State) -> None:
        """Replaces the state by a neutral one; checks names and shapes before any change."""
        state.check_fits({t.name: t.shape for t in self._plans})
        if state.momentum_buffers and not self.momentums:
            raise StateError("the state has momentum buffers but this optimizer has no momentum")
        for t, n in zip(self._plans, self.momentums):
            buffer = state.momentum_buffers.get(t.name)
            n.assign(ops.zeros_like(n) if buffer is None else ops.convert_to_tensor(-buffer, dtype=n.dtype))
        self.iterations.assign(state.step)
        self.last_lr.assign(0.0 if state.last_lr is None else state.last_lr)

    def get_config(self) -> dict[str, Any]:
        for rule in RULES:
            if getattr(self.hp, rule).predicate is not None:
                raise ValueError(f"{rule} uses a callable, which cannot be serialized: use regexes, "
                                 "names or ndims to save this optimizer")
        config: dict[str, Any] = super().get_config()
        config.pop("weight_decay", None)
        # Keras reads a constant rate back from its variable (0.2 -> 0.20000000298...): save the
        # exact rate of the hyperparameters while that variable still holds it.
        stored = config.get("learning_rate")
        if isinstance(stored, float) and stored == float(ops.convert_to_numpy(
                ops.convert_to_tensor(self.hp.lr, dtype=self.learning_rate.dtype))):
            config["learning_rate"] = self.hp.lr
        return config | self.hp.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> LARS:
        config = dict(config)
        values = {k: config.pop(k) for k in Hyperparams.field_names() if k in config}
        lr = config.get("learning_rate")
        values.setdefault("lr", lr if isinstance(lr, (int, float)) else 0.0)
        config["hyperparameters"] = Hyperparams.from_dict(values)
        return super().from_config(config, custom_objects)  # type: ignore[no-any-return]


def _numpy(variable: Any) -> np.ndarray:
    """A variable's value (under a tf.distribute strategy: the first replica's copy)."""
    return np.asarray(variable.numpy())


def _same(x: Any, y: Any) -> bool:
    return x is y or (is_static(x) and is_static(y) and x == y)


def _combine(*terms: tuple[Any, Any]) -> Any:
    """`Σ c·t` (None if every `c` is a static 0), without multiplying by a static 1."""
    out = None
    for c, t in terms:
        if not (is_static(c) and c == 0):
            x = t if is_static(c) and c == 1 else c * t
            out = x if out is None else out + x
    return out


class _Kernels:
    """`lars.core.step.Backend` for the steps of one `LARS`."""

    def __init__(self, optimizer: LARS) -> None:
        self.optimizer = optimizer

    def sums_of_squares(self, requests: Sequence[tuple[Batch, Sequence[Request]]]) -> list[list[Any]]:
        out = []
        for b, rs in requests:
            sums = [self._sum_of_squares(b, r.terms, i) for r in rs for i in r.only]
            stack = functools.partial(_stack, b.ops)
            out.append([Sums(v) for v in assemble(rs, sums, stack)])
        return out

    def _sum_of_squares(self, b: Batch, terms: Sequence[tuple[Any, Any]], i: int) -> Any:
        """`||Σ c·t||²` of tensor `i`; `c²·||t||²` for one term (no temporary). A term of the
        buffers (`n = -v`) is negated; a combined `κ·ĝ + λ·w` is kept for the kernel (`u`)."""
        pairs = []
        for c, t in terms:
            c = at(c, i)
            if t is b.buffers:
                c = -1.0 if c is None else -c
            pairs.append((1.0 if c is None else c, ops.convert_to_tensor(t[i])))
        if len(pairs) == 1:
            c, x = pairs[0]
            return sum_of_squares(x) if _same(c, 1.0) else (c * c) * sum_of_squares(x)
        x = _combine(*pairs)
        if len(terms) == 2 and terms[0][1][i] is b.prepared[i] and terms[1][1] is b.weights:
            b.extra["u"][i] = (pairs[0][0], x)
        return sum_of_squares(x)

    def update(self, b: Batch, c: Coefficients, *, buffers: bool = True, weights: bool = True) -> None:
        n, lookahead = len(b.weights), c.lookahead
        a, bk, bl = c.buffer_terms() if c.momentum is not None else (None, 0.0, 0.0)
        d, e, f = c.weight_terms() if weights else (0.0, 0.0, 0.0)
        fused = _compat.TENSORFLOW and buffers and weights and (c.momentum is None or b.rule.constant_momentum)
        columns = [_column(x, n) for x in (a, bk, bl, d, e, f, c.step, c.grad_scale, c.increment)]
        rows = []
        for i, (ai, bki, bli, di, ei, fi, si, ki, inc) in enumerate(zip(*columns, strict=True)):
            g, u = b.prepared[i], b.extra["u"].get(i)
            # the norm's u is the kernel's if it combined the same κ and the planned λ (the
            # vector `Ops.vector` made once: no fallback replaced it)
            if fused and a is not None and u and _same(u[0], ki) and c.decay is b.ops.vector(b.rule.decays):
                g, bki, bli, fi = u[1], inc, 0.0, 0.0
            rows.append((g, ai, bki, bli, di, ei, fi, si))

        def kernel(variable: Any, j: int, g: Any, a: Any, bk: Any, bl: Any, d: Any, e: Any, f: Any,
                   s: Any) -> None:
            velocity = b.buffers[j]
            if fused and velocity is None:
                tf_kernels.descent(variable, g, e, f)
            elif fused:
                tf_kernels.momentum(variable, velocity.value, g, a, bk, bl, f, s, lookahead)
            else:
                self._affine(variable, velocity, g, (a, bk, bl) if buffers else None, (d, e, f) if weights else None)

        self._each(kernel, b.weights, rows)

    def _affine(self, variable: Any, velocity: Any, g: Any, buffer_terms: Any, weight_terms: Any) -> None:
        """The affine form with `keras.ops`: `n' = a·n - bk·ĝ - bl·w`, `w -= -d·n' + e·ĝ + f·w`."""
        opt, w = self.optimizer, ops.convert_to_tensor(variable)
        if buffer_terms is not None and velocity is not None:
            a, bk, bl = buffer_terms
            opt.assign(velocity, _combine((a, ops.convert_to_tensor(velocity)), (-bk, g), (-bl, w)))
        if weight_terms is not None:
            d, e, f = weight_terms
            moved = [] if velocity is None else [(-d, ops.convert_to_tensor(velocity))]
            step = _combine(*moved, (e, g), (f, w))
            if step is not None:
                opt.assign_sub(variable, step)

    def _each(self, fn: Callable[..., None], variables: Sequence[Any], rows: Sequence[tuple[Any, ...]]) -> None:
        """`fn(variable, j, *rows[j])` where Keras updates variables: under a tf.distribute
        strategy, once per device copy with that replica's tensors (only tensors cross)."""
        tensors = [x for row in rows for x in row if ops.is_tensor(x)]

        def run(distribution: Any, tensors: list[Any]) -> None:
            replica = iter(tensors)
            for j, (v, row) in enumerate(zip(variables, rows, strict=True)):
                args = tuple(next(replica) if ops.is_tensor(x) else x for x in row)
                native = v.value if _compat.TENSORFLOW else v
                distribution.extended.update(native, fn, args=(j, *args), group=False)

        _compat.merge_call(self.optimizer, run, tensors)


def _column(x: Any, n: int) -> list[Any]:
    """A coefficient per tensor: a vector unstacked once, a number or 0-d value repeated."""
    if x is None or is_static(x) or len(x.shape) == 0:
        return [x] * n
    return list(ops.unstack(x))


def _stack(o: KerasOps, row: list[Any]) -> Any:
    return ops.stack([o.tensor(x) for x in row])
