"""`lars.compat.optax.lars`, the drop-in for `optax.lars` (0.2.8), against the installed
`optax.lars` called with the very same arguments: 120 steps side by side from the same weights
with the same gradients, compared at every step (float64 to 1e-12, float32 to 1e-5).

The masks are optax's (True = apply): a bool, a full pytree, a prefix pytree and a callable.
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_reference import TOLERANCE, flat, relative_error

from lars import HyperparameterError
from lars.backends.jax import Lars, export_state
from lars.backends.jax import lars as our_lars
from lars.compat.optax import lars

STEPS = 120
#: A 4-D and a 2-D kernel, a 1-D bias that starts at zero (the zero-norm rule at step 0) and a
#: 1-D norm scale.
SHAPES = {"conv": {"kernel": (3, 3, 2, 4)}, "dense": {"bias": (5,), "kernel": (4, 5)},
          "norm": {"scale": (4,)}}


def is_shape(x):
    return isinstance(x, tuple)


def initial(dtype):
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda s: rng.standard_normal(s), SHAPES, is_leaf=is_shape)
    params["dense"]["bias"] = np.zeros(5)
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)


def gradients(dtype):
    rng = np.random.default_rng(4)
    return [jax.tree.map(lambda s, t=t: jnp.asarray((0.5 + t % 4) * rng.standard_normal(s), dtype), SHAPES,
                         is_leaf=is_shape) for t in range(STEPS)]


def trajectory(tx, dtype):
    """{name: the params after every step, stacked}, one jitted step."""
    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    params = initial(dtype)
    state, steps = tx.init(params), []
    for g in gradients(dtype):
        params, state = step(params, state, g)
        steps.append(flat(params))
    return {name: np.stack([s[name] for s in steps]) for name in steps[0]}


def worst(ours, peer):
    """The largest per-tensor relative error over all steps and tensors (NaN fails `<=`)."""
    return max(relative_error(ours[n][t], peer[n][t]) for n in peer for t in range(STEPS))


def not_a_vector(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


def schedule():
    return optax.warmup_cosine_decay_schedule(0.0, 0.4, warmup_steps=10, decay_steps=100, end_value=0.02)


#: optax masks, True = apply. The prefix mask: True for the whole of `conv`, False for the
#: whole of `norm`.
FULL = {"conv": {"kernel": True}, "dense": {"bias": False, "kernel": True}, "norm": {"scale": True}}
PREFIX = {"conv": True, "dense": {"bias": False, "kernel": True}, "norm": False}

#: The same keyword arguments go to optax.lars and to the drop-in.
CASES = {
    "defaults": dict(learning_rate=0.1),
    "numbers-nesterov": dict(learning_rate=0.2, weight_decay=1e-2, trust_coefficient=0.02, eps=1e-3,
                             momentum=0.8, nesterov=True),
    "bool-masks-off": dict(learning_rate=0.1, weight_decay=1e-2, weight_decay_mask=False,
                           trust_ratio_mask=False),
    "full-pytree-masks": dict(learning_rate=0.1, weight_decay=1e-2, weight_decay_mask=FULL,
                              trust_ratio_mask=PREFIX, momentum=0.9, nesterov=True),
    "prefix-wd-mask": dict(learning_rate=0.1, weight_decay=3e-2, weight_decay_mask=PREFIX),
    "callable-masks-schedule": dict(learning_rate=schedule(), weight_decay=1e-3, momentum=0.95, eps=1e-6,
                                    weight_decay_mask=not_a_vector, trust_ratio_mask=not_a_vector),
    "no-momentum-nesterov": dict(learning_rate=1.0, momentum=0.0, nesterov=True, weight_decay=1e-2,
                                 weight_decay_mask=None),
}


@functools.cache
def peer(case, dtype_name):
    return trajectory(optax.lars(**CASES[case]), np.dtype(dtype_name))


def test_the_signature_is_optax_lars_signature():
    ours, theirs = inspect.signature(lars).parameters, inspect.signature(optax.lars).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [
        (p.name, p.kind, p.default) for p in theirs.values()]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_drop_in_matches_optax_lars_at_every_step(case, dtype):
    expected = peer(case, np.dtype(dtype).name)
    tx = lars(**CASES[case])
    assert isinstance(tx, Lars) and tx.hyperparameters.flavor == "optax"
    ours = trajectory(tx, dtype)
    assert all(x.dtype == dtype for x in ours.values())
    assert worst(ours, expected) <= TOLERANCE[np.dtype(dtype)]
    start = flat(initial(dtype))  # the run went somewhere: every tensor moved
    for name, steps in expected.items():
        assert relative_error(steps[-1], start[name]) > 1e-3, name


@pytest.mark.parametrize("case", ["full-pytree-masks", "prefix-wd-mask", "callable-masks-schedule",
                                  "bool-masks-off"])
def test_the_masks_matter_and_a_mask_not_inverted_is_caught(case):
    """The comparison can fail: the same case without masks, or with optax's masks handed to our
    adapter as they are (True read as excluded, not inverted), ends measurably elsewhere."""
    masked = peer(case, "float64")
    kwargs = {k: v for k, v in CASES[case].items() if not k.endswith("_mask")}
    assert worst(trajectory(lars(**kwargs), np.float64), masked) > 1e-4
    params = initial(np.float64)
    as_is = {f"exclude_from_{k}": full_tree(CASES[case].get(m, True), params)
             for k, m in (("weight_decay", "weight_decay_mask"), ("adaptation", "trust_ratio_mask"))}
    if all(all(jax.tree.leaves(t)) for t in as_is.values()):
        pytest.fail("every mask is all True: not inverting it could not be told apart")
    wrong = our_lars(**kwargs, flavor="optax", **as_is)
    assert worst(trajectory(wrong, np.float64), masked) > 1e-4


def full_tree(mask, params):
    """An optax mask (bool, prefix, callable) as a full pytree of bools: written here, apart."""
    mask = mask(params) if callable(mask) else mask
    if isinstance(mask, bool):
        return jax.tree.map(lambda _: mask, params)
    return {k: full_tree(mask[k], params[k]) for k in params}


def test_a_weight_decay_schedule_through_inject_hyperparams_matches_optax():
    """optax.lars takes a weight-decay schedule; ours takes its value each step through
    optax.inject_hyperparams, as the error for a schedule says."""
    wd = optax.linear_schedule(1e-2, 1e-4, STEPS)
    expected = trajectory(optax.lars(0.1, weight_decay=wd, weight_decay_mask=FULL), np.float64)
    static = ("weight_decay_mask", "trust_ratio_mask", "nesterov")
    injected = optax.inject_hyperparams(lars, static_args=static)
    ours = trajectory(injected(learning_rate=0.1, weight_decay=wd, weight_decay_mask=FULL), np.float64)
    assert worst(ours, expected) <= 1e-12
    constant = trajectory(optax.lars(0.1, weight_decay=1e-2, weight_decay_mask=FULL), np.float64)
    assert worst(constant, expected) > 1e-4  # the schedule mattered


def test_what_ours_cannot_take_raises_naming_the_argument():
    with pytest.raises(HyperparameterError) as schedule_error:
        lars(0.1, weight_decay=optax.linear_schedule(1e-2, 0.0, 10))
    assert schedule_error.value.field == "weight_decay"
    with pytest.raises(HyperparameterError) as none_error:
        lars(0.1, trust_ratio_mask=None)
    assert none_error.value.field == "trust_ratio_mask"
    params = initial(np.float64)
    for field, mask in (("weight_decay_mask", {"conv": True}), ("trust_ratio_mask", lambda p: "no")):
        tx = lars(0.1, **{field: mask})
        with pytest.raises(HyperparameterError) as bad:
            tx.init(params)
        assert bad.value.field == field
    for field, value in (("momentum", 1.5), ("learning_rate", -0.1), ("eps", -1.0)):
        with pytest.raises(HyperparameterError) as invalid:
            lars(**{"learning_rate": 0.1, field: value})
        assert invalid.value.field == field


def test_our_tools_work_on_the_drop_in():
    """It is our adapter: the neutral state export reads its buffers (positive convention)."""
    tx, params = lars(0.1, weight_decay_mask=not_a_vector), initial(np.float64)
    g = gradients(np.float64)[0]
    updates, state = tx.update(g, tx.init(params), params)
    saved = export_state(state, params)
    assert saved.step == 1
    np.testing.assert_allclose(saved.momentum_buffers["conv/kernel"], -np.asarray(updates["conv"]["kernel"]),
                               rtol=1e-15)
