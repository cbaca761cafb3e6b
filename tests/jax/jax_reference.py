"""Shared helpers of the JAX tests: reproducible pytrees, the core's NumPy reference run on them,
and the per-tensor relative comparison (max|a - b| / max|ref|)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lars.core import Hyperparams, State, reference

TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
#: A small model: a 2-D kernel, a 1-D bias, a 4-D conv kernel.
SHAPES = {"dense": {"kernel": (4, 3), "bias": (3,)}, "conv": {"kernel": (2, 2, 3, 2)}}


def path_name(path: tuple[Any, ...]) -> str:
    """`("dense", "kernel")` -> `"dense/kernel"` for trees of dicts (written here, independently)."""
    return "/".join(str(k.key) for k in path)


def flat(tree: Any) -> dict[str, np.ndarray]:
    """A pytree of dicts as {"a/b": numpy array}."""
    return {path_name(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflat(names: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, x in names.items():
        *parents, last = name.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = x
    return out


def tree(shapes: Any, seed: int, dtype: Any = np.float64, scale: float = 1.0) -> Any:
    """Reproducible normal arrays shaped like `shapes` (drawn in float64, then cast)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray((scale * rng.standard_normal(s)).astype(dtype)), shapes,
                        is_leaf=lambda s: isinstance(s, tuple))


def gradients(shapes: Any, steps: int, dtype: Any = np.float64) -> list[Any]:
    return [tree(shapes, 1000 + t, dtype, scale=1.0 + t % 3) for t in range(steps)]


def run_reference(hp: Hyperparams, params: Any, grads: Sequence[Any],
                  lrs: Callable[[int], float] | None = None,
                  ) -> tuple[dict[str, np.ndarray], State, list[dict[str, float]]]:
    """The reference trajectory: final params by name, final state and each step's trust ratios."""
    current, state, ratios = flat(params), State(), []
    for t, g in enumerate(grads):
        result = reference.step(current, flat(g), state, hp, lr=None if lrs is None else lrs(t))
        current, state = result.params, result.state
        ratios.append(result.trust_ratios)
    return current, state, ratios


def run(tx: optax.GradientTransformation, params: Any, grads: Sequence[Any], jit: bool = False,
        state: Any = None) -> tuple[Any, Any]:
    """Steps `tx` once per gradient tree; returns (final params, final state)."""
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(params) if state is None else state
    for g in grads:
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def relative_error(ours: Any, expected: np.ndarray) -> float:
    """max|ours - expected| / max|expected| (the absolute error where `expected` is all zeros);
    NaN if either holds a NaN, so that a NaN never passes a `<=` check."""
    ours, expected = np.asarray(ours, np.float64), np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected))
    error = np.max(np.abs(ours - expected))
    return float(error / scale) if scale > 0 else float(error)


def assert_matches(ours: Any, expected: Mapping[str, np.ndarray], dtype: Any = np.float64) -> None:
    """Every tensor of the pytree `ours` within the dtype's tolerance of `expected[name]`."""
    ours_flat = flat(ours)
    assert ours_flat.keys() == expected.keys()
    for name, x in ours_flat.items():
        assert x.dtype == np.dtype(dtype), name
        error = relative_error(x, expected[name])
        assert error <= TOLERANCE[np.dtype(dtype)], f"{name}: relative error {error:.3g}"
