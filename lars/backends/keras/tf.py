r"""The affine update with TensorFlow's own training kernels, which update a variable and its
buffer in place, one pass each and no temporary (a `keras.ops` step is a pass and a temporary
per operation). With Keras's velocity `n = -v`, the momentum `a`, and per tensor the buffer
terms `(b·κ, b·λ)`, the step `s` and the look-ahead's decay `f` (`lars.core.rule`):

    n -= (b·λ/a)·w                          ResourceApplyGradientDescent   (then a·n = a·n - b·λ·w)
    w -= f·w                                ResourceApplyGradientDescent   (look-ahead only)
    s = 1:  n = a·n - (b·κ)·ĝ;  w += n      ResourceApplyKerasMomentum
    else:   n = a·n + (-(b·κ)·ĝ);  w -= (-s)·n    ResourceApplyMomentum

The look-ahead (`use_nesterov`) adds `a·n' - (b·κ)·ĝ` (times `s`): `f·w` is the rest of its
`s·D`. The division by `a` needs a momentum that cannot vanish. Without a buffer,
`w' = w - e·ĝ - f·w` is two `ResourceApplyGradientDescent`s. Where the combined norm already
made `u = κ·ĝ + λ·w`, `u` is the gradient (`b` its scale) and the decay passes go.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from lars.core.xp import is_static


def sum_of_squares(x: Any) -> Any:
    """`sum(x**2)` in one pass with no temporary (`L2Loss` is `sum(x**2)/2`; doubling is exact)."""
    return 2.0 * tf.nn.l2_loss(x)


def _absent(c: Any) -> bool:
    return is_static(c) and c == 0


def _tensor(c: Any, dtype: Any) -> Any:
    return tf.constant(c, dtype) if is_static(c) else c


def _descend(variable: Any, alpha: Any, delta: Any) -> None:
    if not _absent(alpha):
        tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=_tensor(alpha, variable.dtype),
                                                delta=delta)


def descent(variable: Any, g: Any, e: Any, f: Any) -> None:
    """`w' = w - e·ĝ - f·w` (no buffer)."""
    _descend(variable, f, variable.value())
    _descend(variable, e, g)


def momentum(variable: Any, velocity: Any, g: Any, a: float, bk: Any, bl: Any, f: Any, s: Any,
             lookahead: bool) -> None:
    """The step with a buffer (see the module); `a` a number, not 0."""
    _descend(velocity, bl if _absent(bl) else bl / a, variable.value())
    _descend(variable, f, variable.value())
    m = tf.constant(a, variable.dtype)
    if is_static(s) and s == 1:
        tf.raw_ops.ResourceApplyKerasMomentum(var=variable.handle, accum=velocity.handle, lr=_tensor(bk, m.dtype),
                                              grad=g, momentum=m, use_nesterov=lookahead)
    else:
        tf.raw_ops.ResourceApplyMomentum(var=variable.handle, accum=velocity.handle, lr=_tensor(-s, m.dtype),
                                         grad=-bk * g, momentum=m, use_nesterov=lookahead)
