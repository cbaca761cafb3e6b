"""`LARS`: a drop-in for TF Model Garden's `official.modeling.optimization.lars.LARS`
(tf-models-official 2.20.0), with its exact signature and defaults, on Keras 3.

Migrating is one import line: `from lars.compat.tf_models import LARS`. It returns our Keras
optimizer (`lars.backends.keras.LARS`, flavor "tf_models"), so `.keras` saving, `export_state`
and the rest of ours work on it.

One difference is Keras's, not the rule's: Model Garden's regexes are searched in a tf_keras
variable's `name` ("dense/kernel:0"), ours in the Keras 3 variable's `path` ("dense/kernel",
under the model's and layers' names): a regex anchored on the ":0" suffix or on the whole
name reads differently.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import keras

from lars.backends.keras.optimizer import LARS as KerasLARS
from lars.core.errors import HyperparameterError
from lars.core.policy import Exclude

#: Our field -> Model Garden's argument, so that an error names what the caller wrote.
_THEIR_NAMES = {"lr": "learning_rate", "weight_decay": "weight_decay_rate", "trust_coefficient": "eeta",
                "exclude_from_adaptation": "exclude_from_layer_adaptation"}
#: Model Garden's `classic_momentum=False` on the core's axes (as `lars.conformance.peers.POPULAR`):
#: `v = m*v + u`, `w -= lr*r*v` with `r` from the norm of the step taken (Nesterov's included).
POPULAR: Mapping[str, Any] = MappingProxyType(
    {"momentum_style": "ratio_outside", "trust_denominator": "update", "buffer_start": "zero"})
#: tf_keras's legacy optimizer's keyword arguments that Keras 3 takes as they are.
_CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")


def LARS(learning_rate: Any = 0.01, momentum: float = 0.9, weight_decay_rate: float = 0.0,
         eeta: float = 0.001, nesterov: bool = False, classic_momentum: bool = True,
         exclude_from_weight_decay: list[str] | None = None,
         exclude_from_layer_adaptation: list[str] | None = None, name: str = "LARS",
         **kwargs: Any) -> KerasLARS:
    """TF Model Garden's `LARS` (tf-models-official 2.20.0) as our Keras `LARS(flavor="tf_models")`.

    Every argument is mapped: `learning_rate` (a number, a Keras schedule, a tf_keras schedule or
    a callable), `momentum`, `weight_decay_rate` (our `weight_decay`), `eeta` (our
    `trust_coefficient`), `nesterov`, `classic_momentum` (False: the "popular" momentum, our axes
    `lars.conformance.peers.POPULAR`), the two regex lists (an empty or None adaptation list
    takes the weight-decay list, as Model Garden does), `name`, and tf_keras's `clipnorm`,
    `clipvalue`, `global_clipnorm` and `decay` (`lr / (1 + decay * step)`, a Keras
    `InverseTimeDecay`). `lars.HyperparameterError` names what ours cannot take: `lr` (Model
    Garden accepts it and ignores it: pass `learning_rate`), `decay` with a schedule,
    `gradient_aggregator` and `gradient_transformers`, and a bare string as a regex list (Model
    Garden would read it character by character). Other keyword arguments are refused with
    tf_keras's TypeError.
    """
    allowed = {*_CLIPPING, "lr", "decay", "gradient_aggregator", "gradient_transformers"}
    if unknown := sorted(set(kwargs) - allowed):
        raise TypeError(f"Unexpected keyword argument passed to optimizer: {unknown[0]}. "
                        f"Allowed kwargs are {sorted(allowed)}.")
    for arg in ("lr", "gradient_aggregator", "gradient_transformers"):
        if kwargs.get(arg) is not None:
            raise HyperparameterError(arg, kwargs[arg], "None: TF Model Garden's LARS ignores `lr` (pass "
                                      "learning_rate)" if arg == "lr" else "None: ours has no such hook")
    if not isinstance(classic_momentum, bool):
        raise HyperparameterError("classic_momentum", classic_momentum, "True or False")
    rules: dict[str, Any] = {
        "exclude_from_weight_decay": _regexes(exclude_from_weight_decay, "exclude_from_weight_decay"),
        "exclude_from_adaptation": _regexes(exclude_from_layer_adaptation, "exclude_from_layer_adaptation")}
    schedule = _schedule(learning_rate, kwargs.get("decay") or 0.0)
    clipping = {k: kwargs[k] for k in _CLIPPING if kwargs.get(k) is not None}
    try:
        return KerasLARS(schedule, "tf_models", name=name, momentum=momentum, weight_decay=weight_decay_rate,
                         trust_coefficient=eeta,
                         # Nesterov with momentum 0 is Model Garden's plain step; the core refuses
                         # nesterov without momentum, so it is dropped only where it changes nothing.
                         nesterov=nesterov and momentum != 0, **rules,
                         **({} if classic_momentum else POPULAR), **clipping)
    except HyperparameterError as exc:
        raise HyperparameterError(_THEIR_NAMES.get(exc.field, exc.field), exc.value, exc.allowed) from None


def _regexes(patterns: Iterable[str] | None, field: str) -> Exclude:
    """Model Garden's list of regexes (`re.search` on the name; falsy: none) as our rule."""
    if not patterns:
        return Exclude()
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise HyperparameterError(field, patterns, "a list of regular expressions (TF Model Garden "
                                  "iterates over a bare string character by character)")
    return Exclude.regex(*patterns)


def _schedule(learning_rate: Any, decay: float) -> Any:
    """The learning rate as Keras 3 takes it; tf_keras's `decay` as `InverseTimeDecay`."""
    if not isinstance(decay, (int, float)) or decay < 0:
        raise HyperparameterError("decay", decay, "a number >= 0")
    if _is_tf_keras_schedule(learning_rate):
        learning_rate = StepSchedule(learning_rate)
    if decay == 0:
        return learning_rate
    if not isinstance(learning_rate, (int, float)):
        raise HyperparameterError("decay", decay, "0 with a learning-rate schedule (put the decay in the "
                                  "schedule)")
    # tf_keras: lr / (1 + decay * iterations), iterations counted before the step, as here.
    return keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=decay)


def _is_tf_keras_schedule(value: Any) -> bool:
    try:  # tf_keras is Model Garden's dependency, not ours
        tf_keras = importlib.import_module("tf_keras")
    except ImportError:
        return False
    return isinstance(value, tf_keras.optimizers.schedules.LearningRateSchedule)


class StepSchedule(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
    """A tf_keras schedule (`lr(step)`) for Keras 3, which calls a plain callable without the step.
    tf_keras hands it the step count as a float; so does this."""

    def __init__(self, schedule: Callable[[Any], Any]) -> None:
        self.schedule = schedule

    def __call__(self, step: Any) -> Any:
        return self.schedule(keras.ops.cast(step, "float32"))

    def get_config(self) -> dict[str, Any]:
        return {"schedule": self.schedule.get_config()}  # type: ignore[attr-defined]


__all__ = ["LARS", "StepSchedule"]
