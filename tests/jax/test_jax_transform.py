"""`lars.backends.jax.lars` as an optax transformation: purity and jit, composition with optax
(chain, inject_hyperparams, schedules), exclusion rules, errors, telemetry and non-finite
gradients, each checked against the core's NumPy reference or a formula."""

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from jax_reference import SHAPES, assert_matches, flat, gradients, relative_error, run, run_reference, tree

import lars
from lars.backends.jax import LarsState, as_schedule, narrow
from lars.backends.jax import lars as jax_lars
from lars.core import schedules
from lars.core.policy import Exclude

STEPS = 4


def test_jit_equals_eager_equals_reference_and_inputs_are_unchanged():
    params, grads = tree(SHAPES, 0), gradients(SHAPES, STEPS)
    params_before, grads_before = flat(params), [flat(g) for g in grads]
    tx = jax_lars(0.1, weight_decay=1e-2)
    eager, _ = run(tx, params, grads)
    jitted, jit_state = run(tx, params, grads, jit=True)
    expected, _, ratios = run_reference(lars.hyperparams("paper", lr=0.1, weight_decay=1e-2), params, grads)
    assert_matches(eager, expected)
    assert_matches(jitted, expected)
    for name, x in flat(jitted).items():
        assert relative_error(x, flat(eager)[name]) <= 1e-12
    for name, r in flat(jit_state.trust_ratios).items():
        assert math.isclose(float(r), ratios[-1][name], rel_tol=1e-12)
    # Pure: the inputs are untouched, and the same call gives the same answer twice.
    assert all(np.array_equal(x, params_before[n]) for n, x in flat(params).items())
    assert all(np.array_equal(x, b[n]) for g, b in zip(grads, grads_before, strict=True)
               for n, x in flat(g).items())
    state = tx.init(params)
    first, second = tx.update(grads[0], state, params), tx.update(grads[0], state, params)
    assert int(state.count) == 0 and all(not np.any(b) for b in jax.tree.leaves(state.momentum))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second),
                                                     strict=True))


@pytest.mark.parametrize("flavor", ["paper", "mxnet", "timm", "larc", "holocron", "moco", "tf_models"])
def test_flavors_follow_the_reference(flavor):
    """Each flavor's axes and default exclusions (MXNet's name suffixes, MoCo's ndim rule) reach the
    jnp math: params, trust ratios and the state's step match the reference after 4 steps."""
    params, grads = tree(SHAPES, 0), gradients(SHAPES, STEPS)
    ours, state = run(jax_lars(0.1, flavor, weight_decay=1e-2, momentum=0.9), params, grads)
    hp = lars.hyperparams(flavor, lr=0.1, weight_decay=1e-2, momentum=0.9)
    expected, _, ratios = run_reference(hp, params, grads)
    assert_matches(ours, expected)
    for name, r in flat(state.trust_ratios).items():
        assert math.isclose(float(r), ratios[-1][name], rel_tol=1e-12), name


def test_float32_follows_the_float32_reference():
    params, grads = tree(SHAPES, 0, np.float32), gradients(SHAPES, STEPS, np.float32)
    ours, state = run(jax_lars(0.1, weight_decay=1e-2), params, grads, jit=True)
    expected, _, _ = run_reference(lars.hyperparams("paper", lr=0.1, weight_decay=1e-2), params, grads)
    assert_matches(ours, expected, np.float32)
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.momentum))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
# lr 1 with the clip: its float16 updates at lr 0.1, ~5e-5, would be subnormals (not one rounding)
@pytest.mark.parametrize(("lr", "more"), [(0.1, {}), (1.0, {"grad_rescale": 0.3, "grad_clip_value": 0.3})])
def test_low_precision_params_step_in_float32_with_float32_buffers(dtype, lr, more):
    """The step of float16/bfloat16 params is the float32 reference's on the same values, rounded
    once to the params' dtype; buffers and trust ratios stay float32 (and so does a gradient
    rescaled and clipped element-wise)."""
    def narrow(t):
        return jax.tree.map(lambda x: x.astype(dtype), t)

    def wide(t):
        return jax.tree.map(lambda x: x.astype(jnp.float32), t)

    params, grads = narrow(tree(SHAPES, 0, np.float32)), [narrow(g) for g in gradients(SHAPES, 1, np.float32)]
    tx = jax_lars(lr, momentum=0.9, weight_decay=1e-2, **more)
    updates, state = jax.jit(tx.update)(grads[0], tx.init(params), params)
    hp = lars.hyperparams("paper", lr=lr, momentum=0.9, weight_decay=1e-2, **more)
    expected, reference_state, ratios = run_reference(hp, wide(params), [wide(grads[0])])
    start = flat(wide(params))
    for name, u in flat(updates).items():
        assert u.dtype == dtype
        step = expected[name] - start[name]
        assert relative_error(u, step) <= 2.0 ** -np.finfo(dtype).nmant, name  # one rounding
    assert_matches(state.momentum, reference_state.momentum_buffers, np.float32)
    for name, r in flat(state.trust_ratios).items():
        assert r.dtype == np.float32 and math.isclose(float(r), ratios[0][name], rel_tol=1e-6), name


def test_bfloat16_updates_are_rounded_to_nearest_even_like_a_conversion():
    """The bfloat16 update is rounded on the bits (faster than XLA:CPU's conversion): the same
    values as ml_dtypes' round-to-nearest-even over every kind of float32, NaN kept a NaN."""
    bits = np.random.default_rng(0).integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.0, -0.0, 1e-45, -1e-40, 1.00390625, 1.01171875, 3.3895314e38, 3.4028235e38,
                      -3.4028235e38, np.inf, -np.inf, np.nan], np.float32)
    values = np.concatenate([bits.view(np.float32), edges])
    got = np.asarray(jax.jit(narrow, static_argnums=1)(values, jnp.bfloat16))
    expected = values.astype(ml_dtypes.bfloat16)
    nan = np.isnan(values)
    assert got.dtype == jnp.bfloat16 and np.isnan(got[nan].astype(np.float32)).all()
    assert np.array_equal(got[~nan].view(np.uint16), expected[~nan].view(np.uint16))


# Composition with optax ---------------------------------------------------------------------------
def test_inside_optax_chain_with_an_inactive_clip_it_equals_lars_alone():
    params, grads = tree(SHAPES, 0), gradients(SHAPES, STEPS)
    alone, _ = run(jax_lars(0.1, weight_decay=1e-2), params, grads)
    chained, _ = run(optax.chain(optax.clip_by_global_norm(1e6), jax_lars(0.1, weight_decay=1e-2)),
                     params, grads)
    assert_matches(chained, flat(alone))


def test_inside_optax_chain_an_active_clip_feeds_lars_the_clipped_gradients():
    params, grads = tree(SHAPES, 0), gradients(SHAPES, STEPS)
    chained, _ = run(optax.chain(optax.clip_by_global_norm(0.5), jax_lars(0.1, weight_decay=1e-2)),
                     params, grads)

    def clipped(g):  # the formula: g * 0.5 / ||all of g|| when that norm exceeds 0.5
        total = math.sqrt(sum(float(np.sum(np.square(x))) for x in flat(g).values()))
        return jax.tree.map(lambda x: x * (0.5 / total) if total > 0.5 else x, g)

    expected, _, _ = run_reference(lars.hyperparams("paper", lr=0.1, weight_decay=1e-2), params,
                                   [clipped(g) for g in grads])
    assert_matches(chained, expected)


@pytest.mark.parametrize("flavor", ["paper", "mxnet"])
def test_inject_hyperparams_learning_rate_changes_between_steps(flavor):
    """The injected lr of each step is the one used (MXNet: also in its momentum correction)."""
    lrs = [0.1, 0.3, 0.0, 0.2, 0.05]
    params, grads = tree(SHAPES, 0), gradients(SHAPES, len(lrs))
    factory = optax.inject_hyperparams(jax_lars, static_args=("flavor", "nesterov"))
    tx = factory(learning_rate=0.1, flavor=flavor, momentum=0.9, weight_decay=1e-2)
    update, state, ours = jax.jit(tx.update), tx.init(params), params
    for lr, g in zip(lrs, grads, strict=True):
        state.hyperparams["learning_rate"] = jnp.asarray(lr)
        updates, state = update(g, state, ours)
        ours = optax.apply_updates(ours, updates)
    hp = lars.hyperparams(flavor, lr=0.1, momentum=0.9, weight_decay=1e-2)
    expected, _, _ = run_reference(hp, params, grads, lrs=lambda t: lrs[t])
    assert_matches(ours, expected)
    assert float(state.inner_state.last_lr) == lrs[-1] and int(state.inner_state.count) == len(lrs)
    constant, _, _ = run_reference(hp, params, grads)
    assert relative_error(expected["dense/kernel"], constant["dense/kernel"]) > 1e-6


CORE_SCHEDULES = [
    schedules.Constant(0.3),
    schedules.WarmupPolynomial(1.0, warmup_steps=5, decay_steps=20, end_lr=1e-4, power=2.0),
    schedules.WarmupPolynomial(1.0, warmup_steps=0, decay_steps=20, power=1.5, offset=1),
    schedules.WarmupCosine(0.5, warmup_steps=4, total_steps=20, end_lr=0.01),
    schedules.WarmupCosine(0.5, warmup_steps=0, total_steps=20, offset=1),
]


@pytest.mark.parametrize("core", CORE_SCHEDULES, ids=lambda s: type(s).__name__)
def test_as_schedule_gives_the_core_schedule(core):
    optax_schedule = as_schedule(core)
    counts = range(30)  # warm-up, decay and the plateau after it
    for t in counts:
        assert math.isclose(float(optax_schedule(jnp.asarray(t, jnp.int32))), core(t), rel_tol=1e-12,
                            abs_tol=1e-15), t


def test_warmup_cosine_formula():
    """The cosine schedule by its formula, independently of the core."""
    fn = as_schedule(schedules.WarmupCosine(0.5, warmup_steps=4, total_steps=20, end_lr=0.01))
    for t, lr in [(0, 0.0), (2, 0.25), (4, 0.5), (12, 0.01 + 0.49 * 0.5), (20, 0.01), (25, 0.01)]:
        assert math.isclose(float(fn(jnp.asarray(t))), lr, rel_tol=1e-12, abs_tol=1e-15), t


def test_as_schedule_refuses_what_is_not_a_core_schedule():
    with pytest.raises(TypeError, match=r"not a lars\.core\.schedules schedule"):
        as_schedule(lambda t: 0.1)


@pytest.mark.parametrize("kind", ["core", "optax"])
def test_learning_rate_schedule_drives_each_step(kind):
    """The schedule is read at the update count (0 first): the state's last_lr after each step and
    the final params match the reference run with that lr sequence."""
    core = schedules.WarmupCosine(0.5, warmup_steps=3, total_steps=8, end_lr=0.01)
    if kind == "core":
        schedule, lr_of = as_schedule(core), core
    else:
        # optax computes this in float32 at an int32 count: values exact in binary keep it exact.
        schedule = optax.linear_schedule(0.5, 0.125, transition_steps=4)
        def lr_of(t):
            return 0.5 + (0.125 - 0.5) * min(t, 4) / 4
    steps = 10
    params, grads = tree(SHAPES, 0), gradients(SHAPES, steps)
    tx = jax_lars(schedule, weight_decay=1e-2)
    update, state, ours = jax.jit(tx.update), tx.init(params), params
    for t, g in enumerate(grads):
        updates, state = update(g, state, ours)
        ours = optax.apply_updates(ours, updates)
        assert math.isclose(float(state.last_lr), lr_of(t), rel_tol=1e-12, abs_tol=1e-15), t
    expected, _, _ = run_reference(lars.hyperparams("paper", lr=0.0, weight_decay=1e-2), params, grads,
                                   lrs=lr_of)
    assert_matches(ours, expected)


# Exclusion ----------------------------------------------------------------------------------------
RULES = {  # (our rule, the names it must exclude)
    "mask": ({"conv": {"kernel": False}, "dense": {"bias": True, "kernel": False}}, ["dense/bias"]),
    "callable_on_name": (lambda name, shape: name.endswith("bias"), ["dense/bias"]),
    "callable_on_shape": (lambda name, shape: len(shape) == 4, ["conv/kernel"]),
    "ndim": ("ndim<=1", ["dense/bias"]),
    "regex_on_key_path": (r"^dense/", ["dense/bias", "dense/kernel"]),
}


@pytest.mark.parametrize("field", ["exclude_from_weight_decay", "exclude_from_adaptation"])
@pytest.mark.parametrize("form", list(RULES))
def test_exclusion_rules_match_the_reference(form, field):
    rule, names = RULES[form]
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 3)
    numbers = {"weight_decay": 0.1, "trust_coefficient": 0.02}
    ours, state = run(jax_lars(0.1, **numbers, **{field: rule}), params, grads)
    hp = lars.hyperparams("paper", lr=0.1, **numbers, **{field: Exclude.mask(names)})
    expected, _, _ = run_reference(hp, params, grads)
    assert_matches(ours, expected)
    unexcluded, _, _ = run_reference(lars.hyperparams("paper", lr=0.1, **numbers), params, grads)
    for name in names:  # the rule makes a difference, so matching it means something
        assert relative_error(expected[name], unexcluded[name]) > 1e-9, name
    if field == "exclude_from_adaptation":
        assert {n for n, r in flat(state.trust_ratios).items() if float(r) == 1.0} == set(names)


@pytest.mark.parametrize("mask", [
    {"conv": {"kernel": False}, "dense": {"kernel": False}},  # a leaf missing
    {"conv": {"kernel": False}, "dense": {"bias": True, "kernel": False}, "extra": False},
    {"conv": False, "dense": True},  # a prefix of the params (optax accepts it; lars does not)
    [False, True, False],
], ids=["missing_leaf", "extra_key", "prefix", "list"])
def test_a_mask_that_does_not_fit_the_params_is_refused_at_init(mask):
    tx = jax_lars(0.1, exclude_from_adaptation=mask)
    with pytest.raises(lars.ExclusionError, match="exclude_from_adaptation: the mask's tree structure"):
        tx.init(tree(SHAPES, 0))


def test_an_invalid_regex_is_refused_when_the_transformation_is_made():
    with pytest.raises(lars.ExclusionError, match="not a regular expression"):
        jax_lars(0.1, exclude_from_weight_decay="kernel(")


# Errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"learning_rate": -0.1}, {"momentum": 1.0}, {"weight_decay": -1e-4}, {"trust_coefficient": 0.0},
    {"eps": float("nan")}, {"dampening": 1.5}, {"flavor": "adam"}, {"nesterov": True, "momentum": 0.0},
    {"momentum_style": "adam"}, {"bogus": 1},
], ids=lambda k: "-".join(k))
def test_invalid_hyperparameters_raise_the_cores_error(kwargs):
    with pytest.raises(lars.HyperparameterError) as ours:
        jax_lars(**{"learning_rate": 0.1, **kwargs})
    core_kwargs = {"lr" if k == "learning_rate" else k: v for k, v in kwargs.items() if k != "flavor"}
    with pytest.raises(lars.HyperparameterError) as core:
        lars.hyperparams(kwargs.get("flavor", "paper"), **{"lr": 0.1, **core_kwargs})
    assert str(ours.value) == str(core.value)


# Telemetry and state ------------------------------------------------------------------------------
def test_trust_ratios_count_and_last_lr():
    params, grads = tree(SHAPES, 0), gradients(SHAPES, STEPS)
    tx = jax_lars(0.2, weight_decay=1e-2)
    state = tx.init(params)
    assert isinstance(state, LarsState)
    assert int(state.count) == 0 and state.count.dtype == jnp.int32 and float(state.last_lr) == 0.0
    assert all(float(r) == 1.0 for r in jax.tree.leaves(state.trust_ratios))
    _, _, ratios = run_reference(lars.hyperparams("paper", lr=0.2, weight_decay=1e-2), params, grads)
    update, ours = jax.jit(tx.update), params
    for t, g in enumerate(grads):
        updates, state = update(g, state, ours)
        ours = optax.apply_updates(ours, updates)
        assert int(state.count) == t + 1 and float(state.last_lr) == 0.2
        got = {n: float(r) for n, r in flat(state.trust_ratios).items()}
        assert got.keys() == ratios[t].keys()
        for name, r in got.items():
            assert math.isclose(r, ratios[t][name], rel_tol=1e-12), (t, name)
            assert r != 1.0  # a real ratio, not the fallback


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference's 0*inf
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_non_finite_gradient_entry_stays_in_its_tensor(bad):
    """Actual behaviour, as the reference: a NaN entry makes the tensor's norm NaN, which fails the
    `> 0` zero-norm test, so its ratio falls back to 1; only that entry's update is NaN, the
    tensor's other entries take the un-adapted step lr*(g + wd*w). An inf entry makes the ratio 0,
    so that entry's update is 0*inf = NaN and the tensor's other entries do not move. The other
    tensors are unaffected."""
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 1)
    g = {n: np.array(x) for n, x in flat(grads[0]).items()}
    g["dense/kernel"][1, 2] = bad
    bad_grads = [jax.tree.map(jnp.asarray, {"conv": {"kernel": g["conv/kernel"]},
                                            "dense": {"bias": g["dense/bias"], "kernel": g["dense/kernel"]}})]
    tx = jax_lars(0.1, weight_decay=1e-2)
    updates, state = tx.update(bad_grads[0], tx.init(params), params)
    kernel = np.asarray(updates["dense"]["kernel"])
    assert np.isnan(kernel[1, 2]) and np.isfinite(np.delete(kernel.reshape(-1), 1 * 3 + 2)).all()
    assert np.isfinite(updates["dense"]["bias"]).all() and np.isfinite(updates["conv"]["kernel"]).all()
    assert float(state.trust_ratios["dense"]["kernel"]) == (1.0 if bad != bad else 0.0)
    expected, _, ratios = run_reference(lars.hyperparams("paper", lr=0.1, weight_decay=1e-2), params,
                                        bad_grads)
    ours = optax.apply_updates(params, updates)
    for name, x in flat(ours).items():
        np.testing.assert_allclose(x, expected[name], rtol=1e-12, atol=0, equal_nan=True)
    assert float(state.trust_ratios["dense"]["kernel"]) == ratios[0]["dense/kernel"]


def test_update_without_params_names_the_missing_argument():
    params = {"w": jnp.ones((2, 2))}
    tx = jax_lars(0.1)
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params))


def test_a_scalar_that_is_no_rule_is_refused_by_the_core():
    with pytest.raises(lars.HyperparameterError, match="exclude_from_weight_decay"):
        jax_lars(0.1, exclude_from_weight_decay=42.5j)
