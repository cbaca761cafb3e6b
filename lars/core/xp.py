"""The few array operations the compiled rule and the schedules need, per array library.

The core's numerical code (`lars.core.rule`, `lars.core.step`, `lars.core.schedules`) is written
once against an `Ops` object, in the einops style: a dozen functions, one small class per library. This
module has NumPy's and plain Python's; each backend adds its library's beside its adapter.
Arithmetic, comparisons and `&`/`|` on masks are the library's own operators; every value
that enters is either a Python number (static: decided while tracing) or an array of the
library, 0-d (a scalar of this step) or 1-d (one entry per tensor).

Why not the array API standard (`array-api-compat`, as scikit-learn and SciPy use)? It covers
NumPy, PyTorch and JAX, but not TensorFlow, Keras's `keras.ops` nor MXNet, three of the five
places this code runs; nine functions per library are less than one extra dependency.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Parameters of these dtypes step in float32 and keep float32 momentum buffers, in every framework.
LOW_PRECISION = ("float16", "bfloat16")


def step_dtype(name: str) -> str:
    """The dtype (by name) a parameter of dtype `name` steps in and keeps its buffer in."""
    return "float32" if name in LOW_PRECISION else name


class Ops:
    """The interface, implemented for NumPy arrays of one dtype (`dtype`).

    A backend subclasses it for its library, bound to the dtype and device its vectors are
    computed in.
    """

    #: Whether the values are traced (`jax.jit`, `tf.function`): nothing is read on the host.
    traced = False

    def __init__(self, dtype: Any = np.float64) -> None:
        self.dtype = np.dtype(dtype)

    def vector(self, values: Any) -> Any:
        """A 1-d array of this dtype from Python numbers (constant: a backend may cache it)."""
        return np.asarray(values, dtype=self.dtype)

    def scalar(self, value: Any) -> Any:
        """A step's value in this dtype; a Python number stays one (it is static)."""
        return value if isinstance(value, (int, float)) else np.asarray(value, dtype=self.dtype)

    def where(self, condition: Any, x: Any, y: Any) -> Any:
        out = np.where(condition, x, y)
        return out.astype(self.dtype, copy=False) if out.dtype.kind == "f" else out

    def sqrt(self, x: Any) -> Any:
        return np.sqrt(x)

    def minimum(self, x: Any, y: Any) -> Any:
        return np.minimum(x, y)

    def cos(self, x: Any) -> Any:
        return np.cos(x)

    def power(self, x: Any, y: Any) -> Any:
        return np.power(x, y)

    def widen(self, x: Any) -> Any:
        """A tensor of a narrower dtype (float16, bfloat16) in this dtype, before any arithmetic on
        it: a low-precision gradient is prepared in float32, as the step that uses it."""
        return x if x.dtype.itemsize >= self.dtype.itemsize else x.astype(self.dtype)

    def clip(self, x: Any, low: float, high: float) -> Any:
        """Element-wise clip of a gradient into `[low, high]`, in its own dtype."""
        return np.clip(x, x.dtype.type(low), x.dtype.type(high))

    def total(self, x: Any) -> Any:
        """The sum of a vector's entries."""
        return np.sum(x)

    def largest(self, x: Any) -> Any:
        """The largest of a vector's entries (NaN if one is)."""
        return np.max(x)

    @property
    def wide(self) -> bool:
        """Whether this dtype is float64, whose sums of squares the reference takes as they are."""
        return "64" in str(self.name if hasattr(self, "name") else self.dtype)

    def flagged(self, mask: Any) -> tuple[int, ...] | None:
        """The indices where a boolean vector holds, read on the host; None if `traced` (then
        `cond` decides)."""
        return None if self.traced else tuple(int(i) for i in np.flatnonzero(np.asarray(mask)))

    def cond(self, predicate: Any, then: Any, otherwise: Any) -> Any:
        """`then()` if a 0-d boolean holds, else `otherwise()`; both return the same structure."""
        return then() if bool(predicate) else otherwise()


class PythonOps(Ops):
    """Plain Python numbers: the schedules' values on the host, exactly as `math` computes them."""

    def __init__(self) -> None:
        super().__init__(np.float64)

    def scalar(self, value: Any) -> Any:
        return float(value)

    def where(self, condition: Any, x: Any, y: Any) -> Any:
        return x if condition else y

    def sqrt(self, x: Any) -> Any:
        return math.sqrt(x)

    def minimum(self, x: Any, y: Any) -> Any:
        return min(x, y)

    def cos(self, x: Any) -> Any:
        return math.cos(x)

    def power(self, x: Any, y: Any) -> Any:
        return float(x ** y)


PYTHON = PythonOps()


def is_static(value: Any) -> bool:
    """Whether `value` is a Python number (known while tracing), not an array of a step."""
    return isinstance(value, (bool, int, float))
