"""The checks an adapter makes before a step, an import or a load changes anything, with one
message per kind of bad input in every adapter (the core's errors: `DtypeError` for a tensor that
is not floating-point, `ShapeError` for one that does not fit, `StateError` for a state). They
take dtype names and shapes, so that a traced step (tf.function, jax.jit) checks static metadata
only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lars.core.errors import ShapeError, not_floating
from lars.core.state import check_state

#: The dtypes a parameter, a gradient or a buffer may have: the step's norms and ratios are real.
FLOATING = ("float16", "bfloat16", "float32", "float64")


def check_floating(kind: str, name: str, dtype: str) -> None:
    """Raises the core's `DtypeError` (`not_floating`) unless `dtype` (a name: "float32", "int32",
    ...) is floating-point."""
    if dtype not in FLOATING:
        raise not_floating(kind, name, dtype)


def check_gradient(name: str, shape: Sequence[Any], dtype: str, parameter_shape: Sequence[Any],
                   parameter_dtype: str | None = None) -> None:
    """Raises `ShapeError` unless the gradient of parameter `name` is floating-point (of the
    parameter's dtype if given: a kernel that needs it) and of its shape (a dimension unknown
    while tracing, None, is left to the kernel)."""
    check_floating("gradient", name, dtype)
    if parameter_dtype is not None and dtype != parameter_dtype:
        raise ShapeError(f"gradient {name!r} has dtype {dtype}, but the parameter has dtype "
                         f"{parameter_dtype}: expected a gradient of the parameter's dtype")
    shape, parameter_shape = tuple(shape), tuple(parameter_shape)
    if len(shape) != len(parameter_shape) or any(
            a is not None and b is not None and a != b for a, b in zip(shape, parameter_shape, strict=True)):
        raise ShapeError(f"gradient {name!r} has shape {shape}, but the parameter has shape "
                         f"{parameter_shape}")


def checked_state(state: Any, shapes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """A state to import, checked completely by the core (`check_state`: type, step, last lr,
    buffer names and dtypes; names and shapes against `shapes`): its buffers as NumPy arrays, so
    that nothing can fail once the caller starts to write."""
    check_state(state, shapes)
    return {name: np.asarray(b) for name, b in state.momentum_buffers.items()}
