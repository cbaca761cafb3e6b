r"""`LARS`, a `keras.optimizers.Optimizer` on Keras's TensorFlow and JAX backends: the core's step, one
`Batch` per dtype, with the affine form of `lars.core.rule` for the velocity `n = -v` of
`keras.optimizers.SGD` (so `.keras` files move between backends), `n' = a·n - (b·κ)·ĝ - (b·λ)·w`,
`w' = w - (-d·n' + e·ĝ + f·w)`: TF's training kernels where they express it, else `keras.ops`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from lars.backends.keras import _compat
from lars.core import schedules as core_schedules
from lars.core.checks import check_floating, check_gradient, checked_state
from lars.core.config import Config, as_config
from lars.core.errors import StateError
from lars.core.flavors import resolve
from lars.core.hyperparams import Hyperparams
from lars.core.policy import Exclude, plan
from lars.core.rule import Coefficients, Request, Rule, at
from lars.core.state import State, load_state, save_state
from lars.core.step import Batch, assemble, step
from lars.core.trace import QUANTITIES
from lars.core.xp import LOW_PRECISION, Ops, is_static, step_dtype

if _compat.TENSORFLOW:
    import tensorflow as tf

#: Keras base-class arguments that LARS passes through (applied before the LARS step).
KERAS_ARGUMENTS = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum",
                   "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps")


@dataclass
class KerasOps(Ops):
    """`keras.ops` in one dtype, which Python numbers take."""

    name: str
    cos, clip, minimum, power, sqrt, total, largest, cond = (staticmethod(f) for f in (
        ops.cos, ops.clip, ops.minimum, ops.power, ops.sqrt, ops.sum, ops.max, ops.cond))

    traced = True

    def vector(self, values: Any) -> Any:
        return ops.convert_to_tensor(np.asarray(values, np.float64), self.name)

    def scalar(self, value: Any) -> Any:
        return value if is_static(value) else ops.cast(value, self.name)

    def widen(self, x: Any) -> Any:
        return ops.cast(x, self.name)

    def where(self, condition: Any, x: Any, y: Any) -> Any:
        if is_static(x):  # y takes x's dtype
            x = ops.convert_to_tensor(x, "bool" if isinstance(x, bool) else self.name)
        return ops.where(condition, x, y)


@keras.saving.register_keras_serializable(package="lars")
@dataclass(eq=False)
class CoreSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A core schedule (`lars.core.schedules`) as a Keras schedule in floatx; `step` counts from 0."""

    schedule: core_schedules.Schedule

    def __call__(self, step: Any) -> Any:
        return self.schedule.value(step, KerasOps(keras.config.floatx()))

    def get_config(self) -> dict[str, Any]:
        return {"kind": type(self.schedule).__name__, **self.schedule.__dict__}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CoreSchedule:
        return cls(getattr(core_schedules, config["kind"])(**{k: config[k] for k in config if k != "kind"}))


@keras.saving.register_keras_serializable(package="lars")
class LARS(_compat.Hooks, keras.optimizers.Optimizer):
    """LARS (You, Gitman, Ginsburg 2017) in any flavor of `lars.FLAVORS`, or any `lars.Hyperparams`;
    also the `lars.core.step.Backend` of its steps.

    Args:
      learning_rate: a float or a Keras schedule (`CoreSchedule` wraps the core's); by default
        the hyperparameters' `lr`.
      flavor: which public implementation to reproduce (default "paper").
      hyperparameters: a `lars.Hyperparams`, taken as it is (keyword arguments override it).
      **kwargs: any field of `lars.Hyperparams` (an exclusion regex matches the variable path),
        and Keras's `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`, ..., which act on the
        gradients (summed over replicas) before LARS.
    """

    def __init__(self, learning_rate: Any = None, flavor: str | None = None, name: str = "lars",
                 hyperparameters: Hyperparams | None = None, **kwargs: Any) -> None:
        keras_kwargs = {k: kwargs.pop(k) for k in KERAS_ARGUMENTS if k in kwargs}
        schedule = _is_schedule(learning_rate)
        if learning_rate is not None and not schedule:
            kwargs["lr"] = learning_rate  # any other value is a rate, which the core judges (not Keras)
        elif schedule and hyperparameters is None:
            kwargs.setdefault("lr", 0.0)  # the schedule gives every step's rate
        hp = resolve(flavor, hyperparameters, **kwargs)
        super().__init__(learning_rate=learning_rate if schedule else hp.lr, name=name, weight_decay=None,
                         **keras_kwargs)
        self.hyperparameters = hp
        self.recording, self.records = False, list[Any]()  # `TraceCallback`'s: see `start_recording`

    @classmethod
    def from_file(cls, config: Config | str | os.PathLike[str], name: str = "lars",
                  **keras_kwargs: Any) -> LARS:
        """LARS from a TOML file (`lars.load_config`) or a `lars.Config`, plus Keras's own arguments."""
        config = as_config(config)
        if unknown := sorted(set(keras_kwargs) - set(KERAS_ARGUMENTS)):
            raise TypeError(f"LARS.from_file() got {unknown}: the hyperparameters come from the file; "
                            f"only Keras's own arguments may be added ({', '.join(KERAS_ARGUMENTS)})")
        schedule = None if config.schedule is None else CoreSchedule(config.schedule)
        return cls(schedule, name=name, hyperparameters=config.hyperparams, **keras_kwargs)

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        for v in variables:  # before anything is built: the step's norms and ratios are real
            check_floating("parameter", str(v.path), keras.backend.standardize_dtype(v.dtype))
        super().build(variables)
        self._plans = plan(self.hyperparameters, [(v.path, tuple(v.shape)) for v in variables])
        self.momentums = [_compat.buffer(self, v, compute_dtype(v)) for v in variables
                          ] if Rule(self.hyperparameters, self._plans).has_buffer else []
        floatx, first = keras.config.floatx(), "only_first_replica"  # written in the replica context
        self.last_trust_ratios = self.add_variable((len(variables),), initializer="ones", dtype=floatx,
                                                   aggregation=first, name="trust_ratios")
        self.last_lr = self.add_variable((), dtype=floatx, aggregation=first, name="last_lr")
        if self.recording:
            self.start_recording()

    def start_recording(self) -> None:
        """Has each step record `lars.core.trace.QUANTITIES` (traced again), in a floatx variable each
        (`records`, by build position), made in `build` or now if built."""
        self.recording = True
        if self.built and not self.records:
            with _compat.scope(self):
                self.records = [self.add_variable((len(self._plans),), dtype=keras.config.floatx(),
                                                  aggregation="only_first_replica", name=q)
                                for q in QUANTITIES]

    def set_lr(self, learning_rate: float) -> None:
        """Sets a constant learning rate, validated like any hyperparameter."""
        self.learning_rate = learning_rate

    @property
    def learning_rate(self) -> Any:
        return self._get_current_learning_rate()  # keras 3.15.1's getter

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        """Keras's setter (its LearningRateScheduler and ReduceLROnPlateau callbacks use it); a rate
        that is not a schedule is validated like any hyperparameter first, and kept in them."""
        if _is_schedule(learning_rate):
            keras.optimizers.Optimizer.learning_rate.fset(self, learning_rate)
            return
        if ops.is_tensor(learning_rate) and len(learning_rate.shape) == 0:
            learning_rate = ops.convert_to_numpy(learning_rate).item()  # a scalar tensor is a number
        hp = self.hyperparameters.with_lr(learning_rate)
        keras.optimizers.Optimizer.learning_rate.fset(self, hp.lr)  # which a schedule's optimizer refuses
        self.hyperparameters = hp

    def exclude_from_weight_decay(self, var_list: Any = None, var_names: Any = None) -> None:
        """Keras's hook, as for AdamW: the variables of `var_list`, and those whose path one of the
        regexes `var_names` matches, get no weight decay (the hyperparameters' rule, extended).
        Before `build`, as in Keras."""
        if getattr(self, "built", False):
            raise ValueError("exclude_from_weight_decay() can only be configured before the optimizer "
                             "is built")
        rule = Exclude.mask(str(v.path) for v in var_list or ()) | Exclude.regex(*(var_names or ()))
        hp = self.hyperparameters
        self.hyperparameters = hp.replace(exclude_from_weight_decay=hp.exclude_from_weight_decay | rule)

    def clear_state(self) -> None:
        """Zeroes the buffers and the step count: the next step is a first step."""
        for v in [*self.momentums, self.iterations, self.last_lr]:
            v.assign(ops.zeros_like(v))
        self.last_trust_ratios.assign(ops.ones_like(self.last_trust_ratios))

    def lars_step(self, grads: Sequence[Any], variables: Sequence[Any], learning_rate: Any) -> None:
        """The step of the variables with a gradient (Keras calls it): the gradients summed over
        replicas and clipped by Keras, then the core's step, one `Batch` per dtype. Every gradient is
        checked first (static shapes and dtypes), so that a bad one changes nothing."""
        for g, v in zip(grads, variables, strict=True):
            dtype = keras.backend.standardize_dtype(g.dtype)
            check_gradient(str(v.path), tuple(g.shape), dtype, tuple(v.shape))
        grads, indices = _compat.gradients(self, grads, variables)
        groups: dict[str, list[int]] = {}
        for p, v in enumerate(variables):
            groups.setdefault(keras.backend.standardize_dtype(v.dtype), []).append(p)
        batches, first, order = [], ops.equal(self.iterations, 0), list[int]()
        for ps in groups.values():
            dtype = compute_dtype(variables[ps[0]])
            # a float16/bfloat16 gradient is widened where it is used: a float32 copy is one more pass
            low = keras.backend.standardize_dtype(variables[ps[0]].dtype) in LOW_PRECISION
            rule = Rule(self.hyperparameters, [self._plans[indices[p]] for p in ps])
            batches.append(Batch(rule, KerasOps(dtype), [variables[p] for p in ps],
                                 [grads[p] if low else ops.cast(grads[p], dtype) for p in ps],
                                 [self.momentums[indices[p]] if rule.has_buffer else None for p in ps],
                                 learning_rate, self.last_lr, first, ps,  # each one's place in the step
                                 record=self.recording))
            order.extend(indices[p] for p in ps)
        step(batches, self)
        ratios = ops.concatenate([ops.cast(b.coefficients.trust_ratio, self.last_trust_ratios.dtype)
                                  for b in batches if b.coefficients])
        self.assign(self.last_trust_ratios, ops.scatter_update(self.last_trust_ratios, [[i] for i in order],
                                                               ratios))
        self.assign(self.last_lr, ops.cast(learning_rate, self.last_lr.dtype))
        for q, v in zip(QUANTITIES, self.records if self.recording else (), strict=False):
            values = [ops.broadcast_to(ops.cast(b.recorded[q], v.dtype), (b.rule.size,)) for b in batches]
            self.assign(v, ops.scatter_update(v, [[i] for i in order], ops.concatenate(values)))

    def sums_of_squares(self, requests: Sequence[tuple[Batch, Sequence[Request]]]) -> list[list[Any]]:
        """`lars.core.step.Backend`: each batch's sums of squares for its requests."""
        return [assemble(rs, [_sum_of_squares(b, r, i) for r in rs for i in r.only], ops.stack)
                for b, rs in requests]

    def update(self, b: Batch, c: Coefficients, *, buffers: bool = True, weights: bool = True) -> None:
        """`lars.core.step.Backend`: TF's kernels for a buffer with a numeric momentum when both
        phases are one, else `keras.ops` (`a` None: no buffer update; `d, e, f` 0: no weight update)."""
        low = keras.backend.standardize_dtype(b.weights[0].dtype) in LOW_PRECISION  # stepped in float32
        dtype = compute_dtype(b.weights[0])
        fused = _compat.TENSORFLOW and not low and buffers and weights and b.rule.has_buffer and \
            b.rule.constant_momentum
        a, bk, bl = c.buffer_terms() if c.momentum is not None and buffers else (None, 0.0, 0.0)
        d, e, f = c.weight_terms() if weights else (0.0, 0.0, 0.0)

        def kernel(variable: Any, j: int, g: Any, a: Any, bk: Any, bl: Any, d: Any, e: Any, f: Any,
                   s: Any) -> None:
            velocity = b.buffers[j]
            if fused:
                return _tf_kernel(variable, velocity.value, g, a, bk, bl, f, s, c.lookahead)
            if low and _compat.TENSORFLOW and not tf.distribute.has_strategy():
                coefficients = (x if x is None or is_static(x) else tf.convert_to_tensor(x)  # no retracing
                                for x in (a, bk, bl, d, e, f))
                _tf_low_precision(variable if isinstance(variable, tf.Variable) else variable.value,
                                  None if velocity is None else velocity.value, g, *coefficients)
                return
            n, w = _affine(variable, g, velocity, a, bk, bl, d, e, f, dtype)
            if a is not None:
                self.assign(velocity, n)
            if w is not None:  # rounded once to a float16/bfloat16 variable's dtype
                self.assign(variable, ops.cast(w, variable.dtype))

        columns = [_column(x, len(b.weights)) for x in (a, bk, bl, d, e, f, c.step)]
        _compat.each(self, kernel, b.weights, list(zip(b.prepared, *columns, strict=True)))

    def trust_ratios(self) -> dict[str, float]:
        """The trust ratio of each variable (by path) in the last step."""
        ratios = self.last_trust_ratios.numpy()
        return {str(t.name): float(r) for t, r in zip(self._plans, ratios, strict=True)}

    def export_state(self) -> State:
        """The state in the core's neutral format (positive buffers by variable path)."""
        buffers = {str(t.name): -n.numpy() for t, n in zip(self._plans, self.momentums, strict=False)}
        step = int(self.iterations.numpy())
        return State(step, float(self.last_lr.numpy()), buffers) if step else State()

    def import_state(self, state: State) -> None:
        """Replaces the state by a neutral one, checked completely (names, shapes, dtypes, step and
        last lr) and converted before the first change: it is imported whole or not at all."""
        buffers = checked_state(state, self._shapes())
        if buffers and not self.momentums:
            raise StateError("the state has momentum buffers but this optimizer has no momentum")
        # `zeros`, not `zeros_like`: on Keras's JAX backend that refuses a Variable.
        values = [ops.zeros(n.shape, n.dtype) if (v := buffers.get(str(t.name))) is None
                  else ops.convert_to_tensor(-v, dtype=n.dtype)
                  for t, n in zip(self._plans, self.momentums, strict=False)]
        for n, value in zip(self.momentums, values, strict=True):
            n.assign(value)
        self.iterations.assign(state.step)
        self.last_lr.assign(0.0 if state.last_lr is None else state.last_lr)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Writes the neutral state file (`lars.save_state`) with the hyperparameters in force."""
        return save_state(path, self.export_state(), self.hyperparameters.to_dict(), framework="keras")

    def load(self, path: str | os.PathLike[str]) -> None:
        """Reads a neutral state file, checked against the built variables, and imports it."""
        self.import_state(load_state(path, self._shapes()).state)

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """The variables' shapes by path, which a state must fit."""
        if not self.built:
            raise StateError("the optimizer has no variables yet: build it first "
                             "(optimizer.build(model.trainable_variables))")
        return {str(t.name): t.shape for t in self._plans}

    def save_own_variables(self, store: Any) -> None:
        """Keras's, less the recording's variables (the last): a `.keras` file is the same with or
        without a `TraceCallback`, and loads into either."""
        for i, v in enumerate(self.variables[:len(self.variables) - len(self.records)]):
            store[str(i)] = v.numpy()

    def load_own_variables(self, store: Any) -> None:
        kept = self.variables[:len(self.variables) - len(self.records)]
        if len(store.keys()) != len(kept):
            super().load_own_variables(store)  # Keras's warning: nothing loaded
            return
        for i, v in enumerate(kept):
            v.assign(store[str(i)])

    def get_config(self) -> dict[str, Any]:
        hp = self.hyperparameters
        for rule in ("exclude_from_weight_decay", "exclude_from_adaptation"):
            if getattr(hp, rule).predicate is not None:
                raise ValueError(f"{rule} uses a callable, which cannot be serialized: use regexes, "
                                 "names or ndims to save this optimizer")
        config: dict[str, Any] = {k: v for k, v in super().get_config().items() if k != "weight_decay"}
        if config["learning_rate"] in (hp.lr, float(np.float32(hp.lr))):  # read back from float32
            config["learning_rate"] = hp.lr
        return config | hp.to_dict()

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> LARS:
        fields = Hyperparams.field_names()
        hp = Hyperparams.from_dict({k: v for k, v in config.items() if k in fields})
        config = {k: v for k, v in config.items() if k not in fields} | {"hyperparameters": hp}
        return super().from_config(config, custom_objects)  # type: ignore[no-any-return]


def compute_dtype(variable: Any) -> str:
    """The dtype a variable steps in (`lars.core.xp.step_dtype`)."""
    return step_dtype(keras.backend.standardize_dtype(variable.dtype))


def _is_schedule(learning_rate: Any) -> bool:
    """Whether Keras takes `learning_rate` as a schedule (else it is a rate, a number)."""
    schedule = keras.optimizers.schedules.LearningRateSchedule
    return isinstance(learning_rate, schedule) or callable(learning_rate)


def _combine(*terms: tuple[Any, Any]) -> Any:
    """`Σ c·t` without the static zeros and ones (None if no term is left)."""
    parts = [t if is_static(c) and c == 1 else c * t for c, t in terms if not (is_static(c) and c == 0)]
    return sum(parts[1:], parts[0]) if parts else None


def _affine(w: Any, g: Any, n: Any, a: Any, bk: Any, bl: Any, d: Any, e: Any, f: Any,
            dtype: Any) -> tuple[Any, Any]:
    """`(n', w')` in `dtype` (`w` and `g` widened to it): `n' = a·n - (b·κ)·ĝ - (b·λ)·w` (`n` where
    `a` is None), `w' = w - (-d·n' + e·ĝ + f·w)` (None without a step)."""
    w, g = ops.cast(w, dtype), ops.cast(g, dtype)
    if a is not None:
        n = _combine((a, n), (-bk, g), (-bl, w))
    step = _combine(*([] if n is None else [(-d, n)]), (e, g), (f, w))
    return n, None if step is None else w - step


def _low_precision(variable: Any, velocity: Any, g: Any, a: Any, bk: Any, bl: Any, d: Any, e: Any,
                   f: Any) -> None:
    """`_affine` of a float16/bfloat16 TF variable and its float32 buffer, read and assigned in one
    XLA kernel (no copies of its outputs, the gradient widened in it), `w'` rounded to bfloat16 on
    its bits (XLA:CPU's own conversion is slow, `docs/benchmarks.md`)."""
    n, moved = _affine(variable.read_value(), g, None if velocity is None else velocity.read_value(),
                       a, bk, bl, d, e, f, tf.float32)
    if a is not None:
        velocity.assign(n)
    if moved is not None:
        bfloat16 = variable.dtype == tf.bfloat16
        variable.assign(to_bfloat16(moved) if bfloat16 else tf.cast(moved, variable.dtype))


def to_bfloat16(x: Any) -> Any:
    """`x` (float32) rounded to nearest even, as `tf.cast` does; a NaN stays a NaN."""
    bits = tf.bitcast(x, tf.uint32)
    sixteen, one, quiet = (tf.constant(k, tf.uint32) for k in (16, 1, 0x400000))
    up = bits + tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, sixteen), one) + 0x7FFF
    bits = tf.where(tf.math.is_nan(x), tf.bitwise.bitwise_or(bits, quiet), up)
    return tf.bitcast(tf.cast(tf.bitwise.right_shift(bits, sixteen), tf.uint16), tf.bfloat16)


if _compat.TENSORFLOW:  # one XLA loop per variable: TF runs each op as a pass of its own
    _tf_low_precision = tf.function(_low_precision, jit_compile=True, reduce_retracing=True)


def _sum_of_squares(b: Batch, r: Request, i: int) -> Any:
    """`||Σ c·t||²` of tensor `i` in one accurate pass (TF's `L2Loss`, `Σx²/2`, no temporary; else
    `keras.ops`, which XLA fuses), `c²·||t||²` for one term (not `scaled`); a term of the buffers
    (`n = -v`) negated."""
    job = [(-c if t is b.buffers else c, b.ops.widen(ops.convert_to_tensor(t[i])))
           for c, t in ((1.0 if at(c, i) is None else at(c, i), t) for c, t in r.terms)]
    c, x = (1.0, _combine(*job)) if len(job) > 1 or r.scaled else job[0]
    s = 2.0 * tf.nn.l2_loss(x) if _compat.TENSORFLOW else ops.sum(ops.square(x))
    return s if is_static(c) and c == 1 else (c * c) * s


def _tf_kernel(variable: Any, velocity: Any, g: Any, a: float, bk: Any, bl: Any, f: Any, s: Any,
               lookahead: bool) -> None:
    """The affine form by TF's training kernels, in place, one pass each and no temporary:

        n -= (b·λ/a)·w                        ResourceApplyGradientDescent (so a·n loses b·λ·w)
        w -= f·w                              ResourceApplyGradientDescent (the look-ahead's decay)
        s = 1:  n = a·n - (b·κ)·ĝ;  w += n    ResourceApplyKerasMomentum (use_nesterov: look-ahead)
        else:   n = a·n + (-(b·κ)·ĝ);  w -= (-s)·n    ResourceApplyMomentum
    """
    dtype, keras_momentum = variable.dtype, is_static(s) and s == 1
    for var, alpha in ((velocity, bl / a), (variable, f)):
        if not (is_static(alpha) and alpha == 0):
            tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=tf.convert_to_tensor(alpha, dtype),
                                                    delta=variable.value())
    apply, lr, g = ((tf.raw_ops.ResourceApplyKerasMomentum, bk, g) if keras_momentum
                    else (tf.raw_ops.ResourceApplyMomentum, -s, -bk * g))
    apply(var=variable.handle, accum=velocity.handle, lr=tf.convert_to_tensor(lr, dtype), grad=g,
          momentum=tf.convert_to_tensor(a, dtype), use_nesterov=lookahead)


def _column(x: Any, n: int) -> list[Any]:
    """A coefficient per tensor: a vector unstacked once, a number or a 0-d value repeated."""
    return [x] * n if x is None or is_static(x) or len(x.shape) == 0 else list(ops.unstack(x))

