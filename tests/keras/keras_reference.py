"""Shared helpers of the Keras tests: named Keras variables, reproducible gradients, the core's
NumPy reference run on them and the per-tensor relative comparison (max|a - b| / max|ref|)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from lars.core import Hyperparams, State, reference

TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
#: A 4-D conv kernel, a 2-D dense kernel, a 1-D bias that starts at zero (the zero-norm rule at
#: step 0) and a 1-D norm scale.
SHAPES = {"conv/kernel": (3, 3, 2, 4), "dense/kernel": (4, 5), "dense/bias": (5,),
          "batch_normalization/gamma": (4,)}


def initial(dtype=np.float32, seed: int = 0, shapes: Mapping[str, tuple] = SHAPES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = {n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()}
    if "dense/bias" in params:
        params["dense/bias"][:] = 0
    return params


def gradient_stream(steps: int, dtype=np.float32, seed: int = 1,
                    shapes: Mapping[str, tuple] = SHAPES) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{n: ((1.0 + t % 3) * rng.standard_normal(s)).astype(dtype) for n, s in shapes.items()}
            for t in range(steps)]


def keras_variables(params: Mapping[str, np.ndarray]) -> dict[str, keras.Variable]:
    """One Keras variable per "scope/leaf" name, whose `path` is that name."""
    out = {}
    for name, value in params.items():
        scope, leaf = name.split("/")
        with keras.name_scope(scope):
            out[name] = keras.Variable(np.array(value, copy=True), name=leaf, dtype=str(value.dtype))
    assert [v.path for v in out.values()] == list(params)
    return out


def apply(optimizer: keras.optimizers.Optimizer, variables: Mapping[str, keras.Variable],
          grads: Mapping[str, np.ndarray]) -> None:
    names = [n for n in variables if grads.get(n) is not None]
    optimizer.apply([keras.ops.convert_to_tensor(grads[n]) for n in names], [variables[n] for n in names])


def values(variables: Mapping[str, keras.Variable]) -> dict[str, np.ndarray]:
    return {n: np.array(v.numpy()) for n, v in variables.items()}


def run_reference(hp: Hyperparams, params: Mapping[str, np.ndarray],
                  grads: Sequence[Mapping[str, np.ndarray]], lrs: Callable[[int], float] | None = None,
                  ) -> tuple[list[dict[str, np.ndarray]], State, list[dict[str, float]]]:
    """The reference trajectory: params after every step, the final state, each step's ratios."""
    current, state, trajectory, ratios = dict(params), State(), [], []
    for t, g in enumerate(grads):
        result = reference.step(current, g, state, hp, lr=None if lrs is None else lrs(t))
        current, state = result.params, result.state
        trajectory.append(current)
        ratios.append(result.trust_ratios)
    return trajectory, state, ratios


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    ours, ref = np.asarray(ours), np.asarray(ref)
    scale = float(np.max(np.abs(ref)))
    return float(np.max(np.abs(ours - ref))) / (scale if scale > 0 else 1.0)


def max_error(ours: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> float:
    assert set(ours) == set(ref)
    return max(relative_error(ours[n], ref[n]) for n in ref)
