"""The one API shape on an optax transformation: `set_lr` validates and gives a new transformation,
`clear_state` and `trust_ratios` find the LARS state inside any optax state (here a chain's)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lars
from lars.backends.jax import lars as lars_tx

PARAMS = {"dense": {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.zeros(2)}}
GRADS = {"dense": {"kernel": jnp.full((3, 2), 0.1), "bias": jnp.full(2, 0.01)}}


def chained(tx):
    return optax.chain(optax.clip_by_global_norm(10.0), tx)


@pytest.mark.parametrize("bad", [-1.0, math.nan, "0.1"])
def test_set_lr_is_validated_and_leaves_the_transformation_as_it_was(bad):
    tx = lars_tx(0.1, momentum=0.9)
    with pytest.raises(lars.HyperparameterError, match=r"^lr="):
        tx.set_lr(bad)
    assert tx.hyperparameters.lr == 0.1


def test_set_lr_steps_as_a_transformation_made_with_that_rate():
    tx = lars_tx(0.1, momentum=0.9, weight_decay=1e-3).set_lr(0.3)
    made = lars_tx(0.3, momentum=0.9, weight_decay=1e-3)
    assert tx.hyperparameters == made.hyperparameters
    ours, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
    theirs, _ = made.update(GRADS, made.init(PARAMS), PARAMS)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ours),
                                                    jax.tree.leaves(theirs), strict=True))


def test_clear_state_and_trust_ratios_inside_a_chain():
    tx = lars_tx(0.1, momentum=0.9)
    chain = chained(tx)
    state = chain.init(PARAMS)
    _, state = chain.update(GRADS, state, PARAMS)
    ratios = tx.trust_ratios(state, PARAMS)
    assert set(ratios) == {"dense/kernel", "dense/bias"} and ratios["dense/bias"] == 1.0  # zero weights
    w, g = math.sqrt(6 * 0.25), math.sqrt(6 * 0.01)  # the paper's split denominator, wd 1e-4
    assert ratios["dense/kernel"] == pytest.approx(1e-3 * w / (g + 1e-4 * w), rel=1e-6)
    cleared = tx.clear_state(state, PARAMS)
    fresh = chain.init(PARAMS)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(cleared),
                                                    jax.tree.leaves(fresh), strict=True))
    with pytest.raises(lars.StateError, match="one LarsState"):
        tx.trust_ratios(optax.sgd(0.1).init(PARAMS), PARAMS)
