"""End to end: a plain-JAX 64-64-10 MLP trained with `lars(...)` on scikit-learn's digits
(biases excluded from weight decay and adaptation by 'ndim<=1') reaches >= 90% test accuracy in a
few seconds; with lr = 0 it does not move at all."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from lars.backends.jax import lars

BATCH, EPOCHS, TRAIN = 100, 10, 1400


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = jnp.asarray(x[order] / 16.0, jnp.float32), jnp.asarray(y[order])
    return x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:]


def initial_params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"hidden": {"kernel": jax.random.normal(k1, (64, 64), jnp.float32) * (2 / 64) ** 0.5,
                       "bias": jnp.zeros(64, jnp.float32)},
            "out": {"kernel": jax.random.normal(k2, (64, 10), jnp.float32) * (1 / 64) ** 0.5,
                    "bias": jnp.zeros(10, jnp.float32)}}


def logits(params, x):
    hidden = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return hidden @ params["out"]["kernel"] + params["out"]["bias"]


def loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()


#: The lr is injected, so that lr = 0.1 and lr = 0 share one compiled epoch. With the paper's
#: trust coefficient 1e-3 the kernels move too slowly to learn in 10 epochs; 0.02 (LARC's) works.
TX = optax.inject_hyperparams(lars, static_args=("flavor", "nesterov"))(
    learning_rate=0.1, weight_decay=1e-4, momentum=0.9, trust_coefficient=0.02,
    exclude_from_weight_decay="ndim<=1", exclude_from_adaptation="ndim<=1")


@jax.jit
def epoch(params, state, x, y):
    def body(carry, batch):
        params, state = carry
        grads = jax.grad(loss)(params, *batch)
        updates, state = TX.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    batches = (x.reshape(-1, BATCH, x.shape[-1]), y.reshape(-1, BATCH))
    return jax.lax.scan(body, (params, state), batches)[0]


def train(digits, lr):
    x, y, x_test, y_test = digits
    params = initial_params()
    state = TX.init(params)
    state.hyperparams["learning_rate"] = jnp.asarray(lr)
    for e in range(EPOCHS):
        order = jnp.asarray(np.random.default_rng(e).permutation(TRAIN))
        params, state = epoch(params, state, x[order], y[order])
    accuracy = float((logits(params, x_test).argmax(-1) == y_test).mean())
    return params, state, accuracy


def test_lars_trains_an_mlp_on_digits(digits):
    params, state, accuracy = train(digits, 0.1)
    print(f"test accuracy {accuracy:.3f}")
    assert accuracy >= 0.9, accuracy
    assert int(state.inner_state.count) == EPOCHS * TRAIN // BATCH
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(params))
    ratios = state.inner_state.trust_ratios  # the biases are excluded (1), the kernels adapted
    assert float(ratios["hidden"]["bias"]) == 1.0 and float(ratios["out"]["bias"]) == 1.0
    assert all(0 < float(ratios[k]["kernel"]) != 1.0 for k in ("hidden", "out"))


def test_with_learning_rate_zero_nothing_is_learned(digits):
    params, _, accuracy = train(digits, 0.0)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(initial_params()), strict=True):
        assert np.array_equal(a, b)
    assert accuracy < 0.5, accuracy
