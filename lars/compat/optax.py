"""`lars`: a drop-in for `optax.lars` (optax 0.2.8), with its exact signature and defaults.

Migrating is one import line: `from lars.compat.optax import lars` in place of `optax.lars`.
It returns our JAX adapter (`lars.backends.jax.lars`, flavor "optax"), so `export_state`,
`import_state` and the rest of ours work on it.

optax's masks say where weight decay and the trust ratio APPLY (True = apply); ours say what is
EXCLUDED (True = excluded). A mask here is read as optax reads it: a bool for every leaf, a
pytree of bools with the params' structure or a prefix of it, or a callable from the params to
such a pytree (evaluated on the params at `init` and at every `update`: optax evaluates it on
the updates, which have the params' structure and shapes, and a mask is static under `jit`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from lars.backends.jax import Lars, names_and_shapes
from lars.backends.jax import lars as _lars
from lars.core.errors import HyperparameterError
from lars.core.policy import Exclude

Mask = Any  # a bool, a pytree of bools (a prefix of the params' tree) or params -> such a pytree

_MASKS = {"weight_decay_mask": "exclude_from_weight_decay", "trust_ratio_mask": "exclude_from_adaptation"}


def lars(learning_rate: Any, weight_decay: Any = 0.0, weight_decay_mask: Mask = True,
         trust_coefficient: Any = 0.001, eps: Any = 0.0, trust_ratio_mask: Mask = True,
         momentum: Any = 0.9, nesterov: bool = False) -> Lars:
    """`optax.lars` (optax 0.2.8) as our `lars(..., flavor="optax")`: same arguments, same defaults.

    Every argument is mapped: `learning_rate` (a number, an array or a schedule), `weight_decay`,
    `trust_coefficient`, `eps`, `momentum` (numbers or arrays), `nesterov`, and both masks
    (True = apply, inverted into our exclusions). What ours cannot express raises
    `lars.HyperparameterError` naming the argument: a weight-decay schedule (wrap this function
    in `optax.inject_hyperparams(..., static_args=("weight_decay_mask", "trust_ratio_mask",
    "nesterov"))` instead, which feeds the schedule's value to every step), and a
    `trust_ratio_mask` of None (optax.lars itself fails on it).
    """
    if callable(weight_decay):
        raise HyperparameterError(
            "weight_decay", weight_decay, "a number or an array: wrap lars.compat.optax.lars in "
            "optax.inject_hyperparams(lars, static_args=('weight_decay_mask', 'trust_ratio_mask', "
            "'nesterov')) to schedule weight decay")
    if trust_ratio_mask is None:  # optax.lars hands None to optax.masked, which fails on it
        raise HyperparameterError("trust_ratio_mask", None, "True, False, a pytree of bools or a callable")
    numbers: dict[str, Any] = dict(weight_decay=weight_decay, trust_coefficient=trust_coefficient, eps=eps,
                   momentum=momentum,
                   # optax's Nesterov step with momentum 0 is the plain step; the core refuses
                   # nesterov without momentum, so it is dropped only where it changes nothing.
                   nesterov=bool(nesterov) and not _is_zero(momentum))
    given = {"weight_decay_mask": weight_decay_mask, "trust_ratio_mask": trust_ratio_mask}
    # None (allowed for weight decay only) and True: apply everywhere, nothing excluded.
    masks = {k: m for k, m in given.items() if m is not None and m is not True}
    # Built now, without the masks: every number is validated here, as optax.lars's caller
    # expects errors at construction, and the result carries the hyperparameters in force.
    try:
        unmasked = _lars(learning_rate, "optax", **numbers)
    except HyperparameterError as exc:  # in optax's words: our `lr` is its `learning_rate`
        field = "learning_rate" if exc.field == "lr" else exc.field
        raise HyperparameterError(field, exc.value, exc.allowed) from None
    if not masks:
        return unmasked

    def build(params: Any) -> Lars:
        rules: dict[str, Any] = {_MASKS[k]: _excluded(mask, params, k) for k, mask in masks.items()}
        return _lars(learning_rate, "optax", **numbers, **rules)

    def init_fn(params: Any) -> Any:
        return build(params).init(params)

    def update_fn(updates: Any, state: Any, params: Any = None, **extra: Any) -> Any:
        if params is None:
            raise ValueError("lars needs the params: call update(grads, state, params)")
        return build(params).update(updates, state, params, **extra)

    tx = Lars(init_fn, update_fn)
    tx.hyperparameters = unmasked.hyperparameters  # the masks are resolved on the params
    return tx


def _is_zero(value: Any) -> bool:
    try:
        return float(value) == 0.0
    except TypeError:  # a traced value (inject_hyperparams): not known to be zero
        return False


def _excluded(mask: Mask, params: Any, field: str) -> Exclude:
    """optax's mask `field` (True = apply) as our rule of the excluded leaves, by key-path name."""
    tree = mask(params) if callable(mask) else mask
    try:
        # A leaf of a prefix mask stands for its whole subtree of params.
        flags = jax.tree.leaves(jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), tree, params))
    except (ValueError, TypeError) as exc:
        raise HyperparameterError(field, mask, "True, False, a pytree of bools with the params' "
                                  f"structure or a prefix of it, or a callable giving one ({exc})") from None
    names = names_and_shapes(params)[0]
    if len(flags) != len(names) or not all(map(_is_bool, flags)):
        raise HyperparameterError(field, tree, "a bool for every leaf of the params (True = apply)")
    return Exclude.mask(n for n, applies in zip(names, flags, strict=True) if not bool(applies))


def _is_bool(x: Any) -> bool:
    return isinstance(x, (bool, np.bool_)) or (getattr(x, "dtype", None) == np.bool_ and np.shape(x) == ())


__all__ = ["lars"]
