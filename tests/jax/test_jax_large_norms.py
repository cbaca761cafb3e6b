"""The trust ratio of a large float32 parameter is the exact one (XLA's reductions are
tree-shaped, so JAX needs no help here; the check is the same as for the other backends)."""

import jax
import jax.numpy as jnp
import numpy as np

from lars.backends.jax import lars as jax_lars

SHAPE = (2000, 1000)  # 2M elements


def exact_norm(x):
    return float(np.linalg.norm(x.astype(np.float64)))


def test_the_trust_ratio_of_a_large_tensor_is_the_exact_one():
    rng = np.random.default_rng(0)
    # unlike weights and gradients: the errors of their norms would partly cancel if drawn alike
    w = rng.standard_normal(SHAPE).astype(np.float32)
    g = ((rng.random(SHAPE) + 0.5) * 1e-3).astype(np.float32)
    wd = 1e-4
    exact = 1e-3 * exact_norm(w) / (exact_norm(g) + wd * exact_norm(w))  # the paper's ratio
    tx = jax_lars(0.1, "paper", momentum=0.9, weight_decay=wd, trust_coefficient=1e-3, eps=0.0)
    params, grads = {"big": jnp.asarray(w)}, {"big": jnp.asarray(g)}
    assert params["big"].dtype == jnp.float32
    _, state = jax.jit(tx.update)(grads, tx.init(params), params)
    assert abs(float(state.trust_ratios["big"]) - exact) <= 1e-6 * exact
