"""LARS inside `jax.shard_map` over 8 virtual CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8,
as CI runs it): each device holds a shard of the params, grads and buffers, so every norm must be
summed over the mesh axes the tensor is split over (`axis_name`, `sharded`) and nowhere else.
20 steps equal the unsharded run (float32: 1e-5 relative) in params, buffers and trust ratios."""

import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from jax_reference import flat, gradients, relative_error, tree

import lars
from lars.backends.jax import LarsState
from lars.backends.jax import lars as jax_lars

STEPS = 20
SHAPES = {"conv": {"kernel": (8, 4, 2, 2)}, "dense": {"bias": (6,), "kernel": (16, 6)}}
#: Three denominators; the global clip norm; a momentum correction under a schedule.
CONFIGS = {
    "paper": dict(flavor="paper", weight_decay=1e-2, momentum=0.9, trust_coefficient=0.01),
    "combined_clip": dict(flavor="optax", weight_decay=1e-2, trust_coefficient=0.01, eps=1e-3,
                          grad_clip_norm=6.0),
    "update_correction": dict(flavor="holocron", momentum=0.9, trust_denominator="update",
                              momentum_correction=True, weight_decay=1e-2),
}


def schedule(count):
    return 0.5 * 0.8 ** (count // 3)


def mesh_and_specs(two_d):
    """8 devices; the kernels split, the bias replicated. On the 4x2 mesh the dense kernel is
    split over "x" only (replicated over "y"): its norms are summed over "x" alone."""
    if two_d:
        mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("x", "y"))
        return mesh, {"conv": {"kernel": P("x", "y")}, "dense": {"bias": P(), "kernel": P("x")}}
    mesh = Mesh(np.array(jax.devices()), ("data",))
    return mesh, {"conv": {"kernel": P("data")}, "dense": {"bias": P(), "kernel": P("data")}}


def make(config, **options):
    hp = dict(CONFIGS[config])
    return jax_lars(schedule if config == "update_correction" else 0.5, hp.pop("flavor"), **hp, **options)


def state_specs(specs):
    return LarsState(P(), specs, P(), jax.tree.map(lambda _: P(), specs))


def step_of(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state
    return step


def sharded_step(tx, mesh, specs, check_vma=True):
    in_specs = (specs, state_specs(specs), specs)
    return jax.jit(jax.shard_map(step_of(tx), mesh=mesh, in_specs=in_specs, out_specs=in_specs[:2],
                                 check_vma=check_vma))


def trajectory(step, tx, params, grads):
    state = tx.init(params)
    for g in grads:
        params, state = step(params, state, g)
    return params, state


def unsharded(config, params, grads):
    """The same transformation without axis_name, jitted on whole arrays on one device."""
    tx = make(config)
    return trajectory(jax.jit(step_of(tx)), tx, params, grads)


def data():
    return tree(SHAPES, 0, np.float32), gradients(SHAPES, STEPS, np.float32)


def assert_close(ours, expected, tolerance=1e-5):
    ours, expected = flat(ours), flat(expected)
    assert ours.keys() == expected.keys()
    for name, x in ours.items():
        assert x.dtype == np.float32, name
        error = relative_error(x, expected[name])
        assert error <= tolerance, f"{name}: relative error {error:.3g}"


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("two_d", [False, True], ids=["mesh_8", "mesh_4x2"])
def test_shard_map_update_equals_unsharded(config, two_d):
    mesh, specs = mesh_and_specs(two_d)
    params, grads = data()
    tx = make(config, axis_name=mesh.axis_names, sharded=specs)
    ours, state = trajectory(sharded_step(tx, mesh, specs), tx, params, grads)
    plain, plain_state = unsharded(config, params, grads)
    assert_close(ours, plain)
    assert_close(state.momentum, plain_state.momentum)
    assert_close(state.trust_ratios, plain_state.trust_ratios)
    assert all(float(r) != 1.0 for name, r in flat(state.trust_ratios).items() if "kernel" in name)
    assert int(state.count) == STEPS
    # The params really were split: a device held a fraction of the rows.
    assert ours["dense"]["kernel"].addressable_shards[0].data.shape[0] < SHAPES["dense"]["kernel"][0]


def test_without_check_vma_the_declaration_alone_decides():
    """With check_vma=False JAX tracks nothing (no check, no refusal of a bad psum): the specs
    alone say that the dense kernel is summed over "x" only and the bias not at all; the global
    clip norm and eps would see a norm counted twice or eight times."""
    mesh, specs = mesh_and_specs(True)
    params, grads = data()
    tx = make("combined_clip", axis_name=("x", "y"), sharded=specs)
    ours, state = trajectory(sharded_step(tx, mesh, specs, check_vma=False), tx, params, grads)
    plain, plain_state = unsharded("combined_clip", params, grads)
    assert_close(ours, plain)
    assert_close(state.trust_ratios, plain_state.trust_ratios)


def count_all_reduces(tx, mesh, specs):
    params, grads = data()
    lowered = sharded_step(tx, mesh, specs).lower(params, tx.init(params), grads[0])
    return lowered.as_text().count("stablehlo.all_reduce")


@pytest.mark.parametrize("config,two_d,expected", [
    ("paper", False, 1),              # one psum for every tensor's norms
    ("paper", True, 2),               # one per set of axes: ("x", "y") and ("x",)
    ("combined_clip", False, 2),      # the global clip norm first, then the tensors' norms
])
def test_one_psum_per_step_for_all_tensors(config, two_d, expected):
    """Each has its twin in the branch that takes the norms again when a float32 sum of squares
    leaves the range (`lars.core.step.take_norms`), which runs only then."""
    mesh, specs = mesh_and_specs(two_d)
    tx = make(config, axis_name=mesh.axis_names, sharded=specs)
    assert count_all_reduces(tx, mesh, specs) == 2 * expected


def test_without_the_reduction_the_result_differs():
    """The comparison above can fail: per-shard norms (no axis_name, so no psum) move the
    kernels' trust ratios and params far from the unsharded run."""
    mesh, specs = mesh_and_specs(False)
    params, grads = data()
    tx = make("paper")
    ours, state = trajectory(sharded_step(tx, mesh, specs, check_vma=False), tx, params, grads)
    plain, plain_state = unsharded("paper", params, grads)
    for name in ("conv/kernel", "dense/kernel"):
        assert relative_error(flat(ours)[name], flat(plain)[name]) > 1e-3, name
        assert relative_error(flat(state.trust_ratios)[name], flat(plain_state.trust_ratios)[name]) > 1e-2
    assert relative_error(flat(ours)["dense/bias"], flat(plain)["dense/bias"]) <= 1e-5  # replicated


def test_a_replicated_tensor_declared_split_is_refused():
    """Summing the replicated bias over the 8 devices would count it 8 times (eps and the global
    clip norm would see it); inside shard_map JAX knows it does not vary: refused by name."""
    mesh, specs = mesh_and_specs(False)
    params, grads = data()
    tx = make("paper", axis_name="data")  # every tensor declared split, the bias included
    with pytest.raises(lars.ShardingError, match=r"'dense/bias' is declared split over \('data',\), but "
                                                 r"inside shard_map it is split over \(\)"):
        sharded_step(tx, mesh, specs)(params, tx.init(params), grads[0])
    flags = {"conv": {"kernel": True}, "dense": {"bias": False, "kernel": True}}
    tx = make("paper", axis_name="data", sharded=flags)  # booleans say the same as the specs
    ours, _ = trajectory(sharded_step(tx, mesh, specs), tx, params, grads[:2])
    assert_close(ours, unsharded("paper", params, grads[:2])[0])


def test_unreduced_gradients_are_refused():
    mesh, specs = mesh_and_specs(False)
    params, grads = data()
    tx = make("paper", axis_name="data", sharded=specs)

    def step(params, state, grads):
        local = jax.tree.map(lambda g: g * (1.0 + 0.0 * jax.lax.axis_index("data")), grads)
        return tx.update(local, state, params)

    in_specs = (specs, state_specs(specs), specs)
    mapped = jax.shard_map(step, mesh=mesh, in_specs=in_specs, out_specs=(specs, in_specs[1]))
    with pytest.raises(lars.ShardingError, match=r"gradient of 'dense/bias' varies over \['data'\]"):
        mapped(params, tx.init(params), grads[0])


@pytest.mark.parametrize("options,error,match", [
    ({"axis_name": ""}, lars.HyperparameterError, "axis_name='' is invalid"),
    ({"axis_name": ("x", "x")}, lars.HyperparameterError, "tuple of distinct names"),
    ({"sharded": {"a": True}}, lars.HyperparameterError, "None without axis_name"),
])
def test_bad_arguments_are_refused_when_made(options, error, match):
    with pytest.raises(error, match=match):
        jax_lars(0.1, **options)


@pytest.mark.parametrize("sharded,match", [
    ({"conv": {"kernel": P("model")}, "dense": {"bias": P(), "kernel": P()}},
     r"'conv/kernel' is split over \['model'\].*which axis_name \('data',\) does not name"),
    ({"conv": {"kernel": True}}, "tree structure does not match"),
    ({"conv": {"kernel": "data"}, "dense": {"bias": False, "kernel": True}},
     r"'conv/kernel' is declared by 'data'"),
])
def test_bad_declarations_are_refused_at_init(sharded, match):
    tx = jax_lars(0.1, axis_name="data", sharded=sharded)
    with pytest.raises(lars.ShardingError, match=match):
        tx.init(tree(SHAPES, 0, np.float32))


def test_axis_name_outside_shard_map_is_refused():
    params, grads = data()
    tx = make("paper", axis_name="data")
    with pytest.raises(lars.ShardingError, match="no such mapped axis here"):
        jax.jit(tx.update)(grads[0], tx.init(params), params)
