"""The errors the core raises: each names what is wrong, the value and what is allowed."""

from __future__ import annotations

from typing import Any


class LarsError(Exception):
    """Base class of every error this package raises on purpose."""


class _MessageOnly(LarsError):
    """An error made from its message alone. Its `__init__` is `Exception.__init__` itself:
    TensorFlow's AutoGraph re-raises such an error from a `tf.function` as its own type (with the
    traced code's lines prepended), any other as a `StagingError`."""

    __init__ = Exception.__init__


class HyperparameterError(LarsError, ValueError):
    """An invalid hyperparameter: names the field, the value given and what is allowed."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is invalid: expected {allowed}")


class ConfigError(HyperparameterError):
    """An invalid hyperparameter file: the core's message, prefixed by the file it came from.

    `field` is the key as written in the file (`momentum`, `schedule.base_lr`); `source` the
    file's path (or `<string>`, `<dict>`).
    """

    def __init__(self, source: str, field: str, value: Any, allowed: str, *,
                 detail: str | None = None) -> None:
        super().__init__(field, value, allowed)
        self.source = source
        self.args = (f"{source}: {detail if detail is not None else self.args[0]}",)


class ExclusionError(_MessageOnly, ValueError):
    """An exclusion rule that cannot be applied (a bad pattern, names missing, a bad mask)."""


class StateError(_MessageOnly, ValueError):
    """Optimizer state that does not fit: wrong version, names, shapes or dtypes."""


class ShapeError(_MessageOnly, ValueError):
    """Gradients or buffers whose names or shapes do not fit the parameters."""


class ShardingError(_MessageOnly, ValueError):
    """A declaration of how tensors are split over devices that does not fit them (mesh axes,
    partition specs, tree structure)."""


class DtypeError(ShapeError, TypeError):
    """A tensor of a dtype LARS does not step (integer, complex): a `ShapeError` (tensors that do
    not fit) that is also a `TypeError`, as a framework's own dtype errors are."""


def not_floating(kind: str, name: str, dtype: object) -> DtypeError:
    """The refusal of an integer or complex `kind` ("parameter", "gradient") named `name`, in the
    same words in every backend."""
    error: DtypeError = DtypeError(
        f"{kind} {name!r} has dtype {dtype}: LARS steps real floating-point tensors only "
        "(float16, bfloat16, float32, float64), not integer or complex ones")
    return error
