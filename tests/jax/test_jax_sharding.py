"""LARS on params sharded over 8 virtual CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8,
as CI runs it): the trust ratio needs the norm of the whole tensor, so a jitted sharded update must
equal the unsharded one, and the outputs keep the params' sharding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax_reference import assert_matches, flat, gradients, relative_error, run_reference, tree

import lars
from lars.backends.jax import lars as jax_lars

STEPS = 20
#: Kernels split 8 ways on their leading dimension (or 4x2 on their first two); a replicated bias.
SHAPES = {"conv": {"kernel": (8, 4, 2, 2)}, "dense": {"bias": (6,), "kernel": (16, 6)}}
HP = {"weight_decay": 1e-2, "momentum": 0.9, "trust_coefficient": 0.01}
TX = jax_lars(0.5, **HP)


@jax.jit
def step(params, state, grads):
    updates, state = TX.update(grads, state, params)
    return optax.apply_updates(params, updates), state, updates


def one_d_mesh():
    return Mesh(np.array(jax.devices()), ("data",))


def shardings(mesh, two_d=False):
    kernel = P("x", "y") if two_d else P("data")
    return {"conv": {"kernel": NamedSharding(mesh, kernel)},
            "dense": {"bias": NamedSharding(mesh, P()), "kernel": NamedSharding(mesh, kernel)}}


def trajectory(params, grads, placement=None):
    place = (lambda t: t) if placement is None else (lambda t: jax.device_put(t, placement))
    params = place(params)
    state, updates = TX.init(params), None
    for g in grads:
        params, state, updates = step(params, state, place(g))
    return params, state, updates


def test_eight_devices():
    assert len(jax.devices()) == 8


@pytest.mark.parametrize("two_d", [False, True], ids=["mesh_8", "mesh_4x2"])
def test_sharded_update_equals_unsharded_and_keeps_the_sharding(two_d):
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("x", "y")) if two_d else one_d_mesh()
    placement = shardings(mesh, two_d)
    params, grads = tree(SHAPES, 0), gradients(SHAPES, STEPS)
    sharded, sharded_state, updates = trajectory(params, grads, placement)
    plain, plain_state, _ = trajectory(params, grads)
    assert_matches(sharded, flat(plain))
    expected, _, ratios = run_reference(lars.hyperparams("paper", lr=0.5, **HP), params, grads)
    assert_matches(sharded, expected)
    for name, r in flat(sharded_state.trust_ratios).items():
        assert math.isclose(float(r), ratios[-1][name], rel_tol=1e-12), name
        assert math.isclose(float(r), float(flat(plain_state.trust_ratios)[name]), rel_tol=1e-12), name
    # The kernels really are split: one shard holds a fraction of the rows.
    assert sharded["dense"]["kernel"].addressable_shards[0].data.shape[0] < SHAPES["dense"]["kernel"][0]
    for out in (sharded, updates, sharded_state.momentum):
        for x, want in zip(jax.tree.leaves(out), jax.tree.leaves(placement), strict=True):
            assert x.sharding.is_equivalent_to(want, x.ndim), (x.sharding, want)


def test_a_ratio_from_one_shards_norms_would_differ():
    """The comparison above can fail: the ratio computed from the first shard's norms alone
    differs from the whole-tensor ratio the sharded run used (and the reference's)."""
    placement = shardings(one_d_mesh())
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 1)
    w, g = jax.device_put(params, placement), jax.device_put(grads[0], placement)
    _, state, _ = step(w, TX.init(w), g)
    w_shard = np.asarray(w["dense"]["kernel"].addressable_shards[0].data)
    g_shard = np.asarray(g["dense"]["kernel"].addressable_shards[0].data)
    w_norm, g_norm = np.linalg.norm(w_shard), np.linalg.norm(g_shard)
    per_shard = HP["trust_coefficient"] * w_norm / (g_norm + HP["weight_decay"] * w_norm)
    whole = float(state.trust_ratios["dense"]["kernel"])
    w_full, g_full = np.asarray(params["dense"]["kernel"]), np.asarray(grads[0]["dense"]["kernel"])
    formula = HP["trust_coefficient"] * np.linalg.norm(w_full) / (
        np.linalg.norm(g_full) + HP["weight_decay"] * np.linalg.norm(w_full))
    assert math.isclose(whole, formula, rel_tol=1e-12)
    assert relative_error(per_shard, whole) > 1e-2


def test_sharded_state_and_params_stay_on_all_devices():
    placement = shardings(one_d_mesh())
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 2)
    sharded, state, _ = trajectory(params, grads, placement)
    kernel = sharded["dense"]["kernel"]
    assert {s.device for s in kernel.addressable_shards} == set(jax.devices())
    assert {s.device for s in state.momentum["dense"]["kernel"].addressable_shards} == set(jax.devices())
    assert jnp.isfinite(kernel).all()
