"""The `optax` flavor of `lars` against the installed `optax.lars` (0.2.8), run side by side for
120 steps in float64 and float32, with every argument optax.lars has, compared at every step.

optax's masks say where to *apply* weight decay / the trust ratio (True = apply); ours say what
to *exclude* (True = excluded), so a mask translates as `exclude = not mask`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_reference import TOLERANCE, flat, relative_error

from lars.backends.jax import lars

STEPS = 120
#: A 2-D and a 4-D kernel, a 1-D bias that starts at zero (the zero-norm rule at step 0) and a
#: 1-D norm scale.
SHAPES = {"conv": {"kernel": (3, 3, 2, 4)}, "dense": {"bias": (5,), "kernel": (4, 5)},
          "norm": {"scale": (4,)}}


def is_shape(x):
    return isinstance(x, tuple)


def initial(dtype):
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.standard_normal(s), SHAPES, is_leaf=is_shape)
    params["dense"]["bias"] = np.zeros(5)
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def gradient_stream(dtype):
    rng = np.random.default_rng(1)
    return [jax.tree.map(lambda s, t=t: jnp.asarray((1.0 + t % 3) * rng.standard_normal(s), dtype), SHAPES,
                         is_leaf=is_shape) for t in range(STEPS)]


def trajectory(tx, dtype):
    """{name: array of the params after every step}, with one jitted step."""
    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    params = initial(dtype)
    state, steps = tx.init(params), []
    for g in gradient_stream(dtype):
        params, state = step(params, state, g)
        steps.append(flat(params))
    return {name: np.stack([s[name] for s in steps]) for name in steps[0]}


def max_error(ours, peer):
    """The largest per-tensor relative error over all steps and tensors."""
    return max(relative_error(ours[name][t], peer[name][t]) for name in peer for t in range(STEPS))


#: optax-style masks (True = apply): weight decay on the kernels and the norm scale, the trust
#: ratio on the kernels only.
WD_MASK = {"conv": {"kernel": True}, "dense": {"bias": False, "kernel": True}, "norm": {"scale": True}}
RATIO_MASK = {"conv": {"kernel": True}, "dense": {"bias": False, "kernel": True}, "norm": {"scale": False}}


def negate(mask):
    return jax.tree.map(lambda m: not m, mask)


def more_than_a_vector(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


def schedule():
    return optax.warmup_cosine_decay_schedule(0.0, 0.5, warmup_steps=10, decay_steps=100, end_value=0.01)


NUMBERS = {"learning_rate": 0.2, "weight_decay": 1e-2, "eps": 1e-3, "momentum": 0.8,
           "trust_coefficient": 0.02}
#: (optax.lars kwargs, our kwargs) for the same optimizer.
CASES = {
    "defaults": ({"learning_rate": 0.1}, {"learning_rate": 0.1}),
    "weight_decay_eps_momentum_coefficient": (NUMBERS, NUMBERS),
    "nesterov_pytree_masks": (
        {"learning_rate": 0.1, "weight_decay": 1e-2, "momentum": 0.9, "nesterov": True,
         "weight_decay_mask": WD_MASK, "trust_ratio_mask": RATIO_MASK},
        {"learning_rate": 0.1, "weight_decay": 1e-2, "momentum": 0.9, "nesterov": True,
         "exclude_from_weight_decay": negate(WD_MASK), "exclude_from_adaptation": negate(RATIO_MASK)}),
    "schedule_ndim_rule": (
        {"learning_rate": schedule(), "weight_decay": 1e-3, "momentum": 0.95, "eps": 1e-6,
         "weight_decay_mask": more_than_a_vector, "trust_ratio_mask": more_than_a_vector},
        {"learning_rate": schedule(), "weight_decay": 1e-3, "momentum": 0.95, "eps": 1e-6,
         "exclude_from_weight_decay": "ndim<=1", "exclude_from_adaptation": "ndim<=1"}),
    "plain_weight_decay": ({"learning_rate": 0.1, "weight_decay": 1e-2},
                           {"learning_rate": 0.1, "weight_decay": 1e-2}),
}


@functools.cache
def peer(case, dtype_name):
    return trajectory(optax.lars(**CASES[case][0]), np.dtype(dtype_name))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", ["weight_decay_eps_momentum_coefficient", "nesterov_pytree_masks",
                                  "schedule_ndim_rule"])
def test_optax_flavor_matches_optax_lars(case, dtype):
    expected = peer(case, np.dtype(dtype).name)
    ours = trajectory(lars(flavor="optax", **CASES[case][1]), dtype)
    assert all(x.dtype == dtype for x in ours.values())
    assert max_error(ours, expected) <= TOLERANCE[np.dtype(dtype)]
    # Every tensor moved (a comparison of runs that do nothing would prove nothing).
    start = flat(initial(dtype))
    for name, steps in expected.items():
        assert relative_error(steps[-1], start[name]) > 1e-3, name


def test_optax_flavor_defaults_are_optax_lars_defaults():
    """`lars(lr, "optax")` with nothing else is `optax.lars(lr)`: weight decay 0, coefficient
    1e-3, eps 0, momentum 0.9, no nesterov, no masks."""
    ours = trajectory(lars(0.1, "optax"), np.float64)
    assert max_error(ours, peer("defaults", "float64")) <= 1e-12


def test_the_masks_change_the_trajectory():
    """The masks are not no-ops here: without them optax.lars ends elsewhere."""
    masked, plain = peer("nesterov_pytree_masks", "float64"), peer("plain_weight_decay", "float64")
    for name in ("dense/bias", "norm/scale"):
        assert relative_error(masked[name][-1], plain[name][-1]) > 1e-3, name


def test_paper_flavor_does_not_match_optax_lars():
    """The comparison can fail: the paper's split denominator ||g|| + wd*||w|| gives another
    trajectory than optax's combined ||g + wd*w||, with the same numbers."""
    ours = trajectory(lars(0.1, "paper", weight_decay=1e-2, momentum=0.9, eps=0.0), np.float64)
    assert max_error(ours, peer("plain_weight_decay", "float64")) > 1e-4


def test_a_nan_gradient_entry_is_where_the_optax_flavor_departs_from_optax_lars():
    """Documented divergence: optax.lars lets the NaN norm through its ratio, so the whole tensor's
    update is NaN; the `optax` flavor (like every flavor of the core) fails the `> 0` zero-norm
    test on a NaN norm and falls back to r = 1, so only the NaN entry's update is NaN. Finite
    gradients are unaffected (the tests above)."""
    params = initial(np.float64)
    grads = jax.tree.map(jnp.ones_like, params)
    grads["dense"]["kernel"] = grads["dense"]["kernel"].at[0, 0].set(jnp.nan)
    peer_tx, ours_tx = optax.lars(0.1, weight_decay=1e-2), lars(0.1, "optax", weight_decay=1e-2)
    peer_updates, _ = peer_tx.update(grads, peer_tx.init(params), params)
    ours_updates, _ = ours_tx.update(grads, ours_tx.init(params), params)
    assert np.isnan(peer_updates["dense"]["kernel"]).all()
    kernel = np.asarray(ours_updates["dense"]["kernel"])
    assert np.isnan(kernel[0, 0]) and np.isnan(kernel).sum() == 1
    for name in ("conv/kernel", "dense/bias", "norm/scale"):
        np.testing.assert_allclose(flat(ours_updates)[name], flat(peer_updates)[name], rtol=1e-12, atol=0)
