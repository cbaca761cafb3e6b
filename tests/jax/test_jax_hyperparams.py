"""`lars(hyperparameters=hp)` takes a `lars.Hyperparams` as it is and shows it as
`tx.hyperparameters`; numbers injected with `optax.inject_hyperparams` change between steps
without a new trace; leaves of several dtypes keep their place in the step (MXNet's momentum
correction reaches the first tensors). Each checked against the NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax_reference import (
    SHAPES,
    TOLERANCE,
    assert_matches,
    flat,
    gradients,
    relative_error,
    run,
    run_reference,
    tree,
)

import lars
from lars.backends.jax import as_schedule
from lars.backends.jax import lars as jax_lars
from lars.core import reference, schedules

HP = lars.hyperparams("timm", lr=0.2, momentum=0.9, weight_decay=1e-2, larc_clip=True,
                      exclude_from_adaptation="ndim<=1")


def test_the_hyperparameters_given_are_the_ones_in_force():
    assert jax_lars(hyperparameters=HP).hyperparameters is HP
    assert jax_lars(0.2, hyperparameters=HP).hyperparameters == HP
    assert jax_lars(0.5, hyperparameters=HP).hyperparameters == HP.replace(lr=0.5)
    schedule = as_schedule(schedules.Constant(0.5))
    assert jax_lars(schedule, hyperparameters=HP).hyperparameters == HP  # a schedule leaves hp's lr
    assert jax_lars(hyperparameters=HP, weight_decay=0.0).hyperparameters == HP.replace(weight_decay=0.0)
    with pytest.raises(lars.HyperparameterError, match="flavor"):
        jax_lars(hyperparameters=HP, flavor="paper")
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 4)
    ours, _ = run(jax_lars(hyperparameters=HP), params, grads, jit=True)
    expected, _, _ = run_reference(HP, params, grads)
    assert_matches(ours, expected)


def test_it_composes_with_optax():
    tx = jax_lars(hyperparameters=HP)
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 3)
    chained, _ = run(optax.chain(optax.identity(), tx), params, grads, jit=True)
    injected_lr = optax.inject_hyperparams(jax_lars)(learning_rate=0.2, hyperparameters=HP)
    injected, _ = run(injected_lr, params, grads, jit=True)
    expected, _, _ = run_reference(HP, params, grads)
    assert_matches(chained, expected)
    assert_matches(injected, expected)


#: Each number changes after step 2 (momentum only where a buffer exists from the start).
NUMBERS = [dict(momentum=0.9, dampening=0.1, weight_decay=1e-2, trust_coefficient=0.02, eps=1e-6),
           dict(momentum=0.5, dampening=0.3, weight_decay=0.0, trust_coefficient=0.05, eps=1e-3)]


@pytest.mark.parametrize("flavor", ["paper", "timm", "holocron"])
def test_injected_numbers_change_between_steps_without_a_new_trace(flavor):
    """timm adapts only where the weight decay is not 0 (the injected 0 decides it in the step);
    holocron starts its buffer from a copy and applies the ratio outside it."""
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 5)
    tx = optax.inject_hyperparams(jax_lars, static_args=("flavor",))(learning_rate=0.1, flavor=flavor,
                                                                     **NUMBERS[0])
    traces = []

    def update(g, s, p):
        traces.append(1)
        return tx.update(g, s, p)

    update, state, ours = jax.jit(update), tx.init(params), params
    current, neutral = flat(params), lars.State()
    for t, g in enumerate(grads):
        numbers = NUMBERS[t >= 2]
        state.hyperparams.update({k: jnp.asarray(v) for k, v in numbers.items()})
        updates, state = update(g, state, ours)
        ours = optax.apply_updates(ours, updates)
        result = reference.step(current, flat(g), neutral, lars.hyperparams(flavor, lr=0.1, **numbers))
        current, neutral = result.params, result.state
        assert_matches(ours, current)
        for name, r in flat(state.inner_state.trust_ratios).items():
            assert relative_error(r, result.trust_ratios[name]) <= 1e-12, (t, name)
    assert len(traces) == 1
    assert relative_error(flat(ours)["dense/kernel"], run_reference(
        lars.hyperparams(flavor, lr=0.1, **NUMBERS[0]), params, grads)[0]["dense/kernel"]) > 1e-6


def test_leaves_of_two_dtypes_keep_their_place_for_the_momentum_correction():
    """Leaves alternate between float64 and float32 ("a" < "b" < "c" < "d"); the correction reaches
    the first two: one leaf of each dtype, so grouping by dtype alone would misplace "c"."""
    shapes = {"a": (3, 2), "b": (4,), "c": (2, 2), "d": (3,)}
    dtypes = {"a": np.float64, "b": np.float32, "c": np.float64, "d": np.float32}
    cast = lambda tree_: {n: jnp.asarray(x, dtypes[n]) for n, x in tree_.items()}  # noqa: E731
    params, grads = cast(tree(shapes, 0)), [cast(g) for g in gradients(shapes, 6)]
    schedule = schedules.WarmupPolynomial(0.3, warmup_steps=3, decay_steps=8, end_lr=0.01)
    hp = lars.hyperparams("mxnet", lr=0.3, momentum=0.9, weight_decay=1e-3, exclude_from_weight_decay=None,
                          momentum_correction_tensors=2)
    ours, _ = run(jax_lars(as_schedule(schedule), hyperparameters=hp), params, grads, jit=True)
    expected, _, _ = run_reference(hp, params, grads, lrs=schedule)
    for name, x in ours.items():
        assert x.dtype == dtypes[name]
        assert relative_error(x, expected[name]) <= TOLERANCE[np.dtype(dtypes[name])], name
    uncorrected, _, _ = run_reference(hp.replace(momentum_correction_tensors=1), params, grads, lrs=schedule)
    assert relative_error(expected["b"], uncorrected["b"]) > 1e-4  # "b" is reached: it matters
