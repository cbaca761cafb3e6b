"""Refusals that the torch and JAX adapters word the same way (issue 17).

Nothing here depends on a framework: each belongs in `lars.core` (`DtypeError` in
`lars.core.errors`, the checks of a neutral state in `State.check_fits`) and lives here until the
core has it, so that both adapters already raise the same error with the same message.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from lars.core.errors import ShapeError, StateError
from lars.core.state import State


class DtypeError(ShapeError, TypeError):
    """A tensor of a dtype LARS does not step (integer, complex): a `ShapeError` (tensors that do
    not fit) that is also a `TypeError`, as a framework's own dtype errors are."""


def not_floating(kind: str, name: str, dtype: Any) -> DtypeError:
    """The refusal of an integer or complex `kind` ("parameter", "gradient") named `name`."""
    return DtypeError(f"{kind} {name!r} has dtype {dtype}: LARS steps real floating-point tensors only "
                      "(float16, bfloat16, float32, float64), not integer or complex ones")


def check_last_lr(value: Any, where: str = "state") -> None:
    """The last learning rate of a state: None (no step yet) or what `lr` may be."""
    if value is None:
        return
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value < 0):
        raise StateError(f"{where}: last_lr={value!r} is invalid: expected None or a finite number >= 0")


def checked_state(state: Any, shapes: dict[str, tuple[int, ...]]) -> State:
    """`state` if it is a `State` that fits these shapes, with valid values and floating-point
    buffers (what `import_state` checks before it changes anything)."""
    if not isinstance(state, State):
        raise StateError(f"state={state!r} is invalid: expected a lars.State "
                         "(from export_state(), or lars.load_state(path).state)")
    state.check_fits(shapes)
    check_last_lr(state.last_lr)
    for name, buffer in state.momentum_buffers.items():
        dtype = np.asarray(buffer).dtype
        if dtype.kind != "f" and dtype.name != "bfloat16":  # ml_dtypes' bfloat16 is not kind "f"
            raise StateError(f"state buffer {name!r} has dtype {dtype}: expected a floating-point array")
    return state
