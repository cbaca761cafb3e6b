"""The neutral state of the JAX adapter: `export_state` gives the reference's `State`, and
`import_state` (directly or through `lars.save_state`/`lars.load_state` files) resumes a run
exactly where it stopped; a state that does not fit is refused before anything changes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_reference import SHAPES, assert_matches, flat, gradients, run, run_reference, tree

import lars
from lars.backends.jax import as_schedule, export_state, import_state
from lars.backends.jax import lars as jax_lars
from lars.core import schedules

SCHEDULE = schedules.WarmupCosine(0.4, warmup_steps=2, total_steps=10, end_lr=0.01)


def setup(name):
    """(our transformation, the reference's hyperparameters, the reference's lr per step)."""
    if name == "paper_schedule":  # the count picks the lr: resuming must restore it
        return (jax_lars(as_schedule(SCHEDULE), weight_decay=1e-2, momentum=0.9),
                lars.hyperparams("paper", lr=0.0, weight_decay=1e-2, momentum=0.9), SCHEDULE)
    if name == "mxnet_correction":  # the momentum correction reads the last lr: it must be restored
        core = schedules.WarmupPolynomial(0.3, warmup_steps=3, decay_steps=8, end_lr=0.01)
        return (jax_lars(as_schedule(core), "mxnet", momentum=0.9),
                lars.hyperparams("mxnet", momentum=0.9), core)
    if name == "timm_no_momentum":  # no buffers at all
        return (jax_lars(0.1, "timm", weight_decay=1e-2), lars.hyperparams("timm", lr=0.1, weight_decay=1e-2),
                None)
    raise ValueError(name)


NAMES = ["paper_schedule", "mxnet_correction", "timm_no_momentum"]


@pytest.mark.parametrize("name", NAMES)
def test_export_equals_the_reference_state(name):
    tx, hp, lrs = setup(name)
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 5)
    ours, state = run(tx, params, grads)
    _, expected, _ = run_reference(hp, params, grads, lrs=lrs)
    exported = export_state(state, ours)
    assert isinstance(exported, lars.State)
    assert exported.step == expected.step == 5
    assert math.isclose(exported.last_lr, expected.last_lr, rel_tol=1e-12)
    assert exported.momentum_buffers.keys() == expected.momentum_buffers.keys()
    assert (len(exported.momentum_buffers) == 0) == (name == "timm_no_momentum")
    for n, b in exported.momentum_buffers.items():
        np.testing.assert_allclose(b, expected.momentum_buffers[n], rtol=0,
                                   atol=1e-12 * np.max(np.abs(expected.momentum_buffers[n])))


def test_export_of_a_fresh_state_is_the_empty_state():
    params = tree(SHAPES, 0)
    tx, _, _ = setup("paper_schedule")
    assert export_state(tx.init(params), params) == lars.State()


def resume(name, through_file=None):
    tx, hp, _ = setup(name)
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 8)
    whole, _ = run(tx, params, grads)
    half, state = run(tx, params, grads[:4])
    neutral = export_state(state, half)
    if through_file is not None:
        lars.save_state(through_file, neutral, hp.to_dict())
        saved = lars.load_state(through_file, {n: x.shape for n, x in flat(half).items()})
        assert saved.flavor == hp.flavor
        neutral = saved.state
    fresh_tx, _, _ = setup(name)  # a new transformation, as in a new process
    restored = import_state(neutral, fresh_tx.init(half), half)
    resumed, _ = run(fresh_tx, half, grads[4:], state=restored)
    return resumed, whole, hp, params, grads


@pytest.mark.parametrize("name", NAMES)
def test_resuming_continues_the_same_trajectory(name):
    resumed, whole, hp, params, grads = resume(name)
    assert_matches(resumed, flat(whole))
    _, _, lrs = setup(name)
    expected, _, _ = run_reference(hp, params, grads, lrs=lrs)
    assert_matches(resumed, expected)


@pytest.mark.parametrize("name", ["paper_schedule", "mxnet_correction"])
def test_resuming_through_a_state_file(name, tmp_path):
    resumed, whole, _, _, _ = resume(name, tmp_path / "lars_state.npz")
    assert_matches(resumed, flat(whole))


def test_resuming_without_the_state_does_not_continue_the_trajectory():
    """The resume test can fail: a fresh state (count 0: warm-up again, empty buffers) diverges."""
    tx, _, _ = setup("paper_schedule")
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 8)
    whole, _ = run(tx, params, grads)
    half, _ = run(tx, params, grads[:4])
    restarted, _ = run(tx, half, grads[4:])
    assert max(np.max(np.abs(x - flat(whole)[n])) / np.max(np.abs(flat(whole)[n]))
               for n, x in flat(restarted).items()) > 1e-6


def neutral_after_two_steps():
    tx, _, _ = setup("paper_schedule")
    params, grads = tree(SHAPES, 0), gradients(SHAPES, 2)
    ours, state = run(tx, params, grads)
    return tx, ours, export_state(state, ours)


@pytest.mark.parametrize("change", ["unknown_name", "wrong_shape"])
def test_a_state_that_does_not_fit_is_refused(change):
    tx, params, neutral = neutral_after_two_steps()
    buffers = dict(neutral.momentum_buffers)
    if change == "unknown_name":
        buffers["head/kernel"] = np.zeros((2, 2))
        match = r"unknown parameters \['head/kernel'\]"
    else:
        buffers["dense/kernel"] = np.zeros((3, 4))
        match = r"'dense/kernel' has shape \(3, 4\), but the parameter has shape \(4, 3\)"
    bad = lars.State(neutral.step, neutral.last_lr, buffers)
    target = tx.init(params)
    before = [np.asarray(x).copy() for x in jax.tree.leaves(target)]
    with pytest.raises(lars.StateError, match=match):
        import_state(bad, target, params)
    assert all(np.array_equal(a, b) for a, b in zip(before, jax.tree.leaves(target), strict=True))


def test_a_file_that_does_not_fit_is_refused_on_load(tmp_path):
    _, params, neutral = neutral_after_two_steps()
    path = lars.save_state(tmp_path / "s.npz", neutral, {"flavor": "paper"})
    shapes = {n: x.shape for n, x in flat(params).items()} | {"dense/kernel": (5, 3)}
    with pytest.raises(lars.StateError, match="'dense/kernel'"):
        lars.load_state(path, shapes)


def test_buffers_into_a_transformation_without_momentum_are_refused():
    _, params, neutral = neutral_after_two_steps()
    no_momentum = jax_lars(0.1, momentum=0.0)
    with pytest.raises(ValueError, match="no momentum"):
        import_state(neutral, no_momentum.init(params), params)


def test_float32_buffers_export_and_import_in_float32():
    tx = jax_lars(0.1, weight_decay=1e-2)
    params, grads = tree(SHAPES, 0, np.float32), gradients(SHAPES, 3, np.float32)
    ours, state = run(tx, params, grads)
    neutral = export_state(state, ours)
    assert all(b.dtype == np.float32 for b in neutral.momentum_buffers.values())
    restored = import_state(neutral, tx.init(ours), ours)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(restored.momentum))
    assert int(restored.count) == 3 and float(restored.last_lr) == pytest.approx(0.1)
    updates_a, _ = tx.update(grads[0], state, ours)
    updates_b, _ = tx.update(grads[0], restored, ours)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(updates_a), jax.tree.leaves(updates_b),
                                                     strict=True))
