"""`lars(..., record=k)` and `Lars.recorder` (issue 19): each recorded update writes its per-leaf
values into the state, under jit and inside a chain; a recorder reads them after the update (no
host round trip inside jit) into a trace file, checked against the formulas on the params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lars
from lars.backends.jax import lars as lars_tx
from lars.core.trace import QUANTITIES, TraceError, load_trace

NAMES = ["dense/bias", "dense/kernel", "out/kernel"]  # the key paths, in the leaves' order
CLIP = 1.0


def params(dtype=jnp.float64):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    return {"dense": {"kernel": jnp.asarray(rng.standard_normal((4, 3)), dtype),
                      "bias": jnp.asarray(rng.standard_normal(3), dtype)},
            "out": {"kernel": jnp.asarray(rng.standard_normal((3, 2)), dtype)}}


def grads(p, t):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(t + 1)
    return jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), p)


def transformation(record, dtype=jnp.float64):  # type: ignore[no-untyped-def]
    """LARS inside a chain that clips, its lr a schedule, the bias without weight decay."""
    mask = {"dense": {"kernel": False, "bias": True}, "out": {"kernel": False}}
    tx = lars_tx(lambda count: 0.1 * (count + 1), momentum=0.9, weight_decay=1e-2, record=record,
                 exclude_from_weight_decay=mask)
    return tx, optax.chain(optax.clip_by_global_norm(CLIP), tx)


def trained(record, steps, dtype=jnp.float64, recorder=None):  # type: ignore[no-untyped-def]
    tx, chain = transformation(record, dtype)

    @jax.jit
    def update(p, s, g):  # type: ignore[no-untyped-def]
        u, s = chain.update(g, s, p)
        return optax.apply_updates(p, u), s, jnp.sum(jnp.square(g["out"]["kernel"]))  # a stand-in loss

    p, rows = params(dtype), []
    state = chain.init(p)
    for t in range(steps):
        g = grads(p, t)
        before = p
        p, state, loss = update(p, state, g)
        if recorder is not None:
            recorder.add_state(state, loss)
        leaves = [jax.tree.leaves(x) for x in (before, g, p)]
        scale = min(1.0, CLIP / np.sqrt(sum(np.sum(np.square(x)) for x in leaves[1])))  # the clip before lars
        rows.append({"weight_norm": [np.linalg.norm(x) for x in leaves[0]],
                     "grad_norm": [scale * np.linalg.norm(x) for x in leaves[1]],
                     "update_norm": [np.linalg.norm(b - a) for a, b in zip(*leaves[::2], strict=True)],
                     "trust_ratio": [tx.trust_ratios(state, p)[n] for n in NAMES], "loss": float(loss)})
    return tx, p, state, rows


def test_a_recorded_update_holds_the_norms_ratios_and_change_of_every_leaf(tmp_path):  # type: ignore
    tx, _ = transformation(True)
    rec = tx.recorder(tmp_path / "run.npz", params(), flush=2)
    _, _, state, rows = trained(True, 5, recorder=rec)
    assert len(load_trace(tmp_path / "run.npz")) == 4  # two flushes, the fifth step pending
    rec.close()
    trace = load_trace(tmp_path / "run.npz")
    assert trace.names == tuple(NAMES) and trace.framework == "jax" and trace.dtype == "float64"
    assert trace.shapes == ((3,), (4, 3), (3, 2)) and trace.hyperparams["flavor"] == "paper"
    np.testing.assert_array_equal(trace.step, range(5))
    np.testing.assert_allclose(trace.lr, [0.1, 0.2, 0.3, 0.4, 0.5], rtol=1e-15)
    np.testing.assert_allclose(trace.loss, [r["loss"] for r in rows], rtol=1e-15)
    for t, row in enumerate(rows):
        for q in ("weight_norm", "grad_norm", "update_norm", "trust_ratio"):
            np.testing.assert_allclose(trace.columns[q][t], row[q], rtol=1e-10, err_msg=f"{q} of step {t}")
        np.testing.assert_array_equal(trace.columns["weight_decay"][t], [0.0, 1e-2, 1e-2])  # bias excluded
        np.testing.assert_array_equal(trace.columns["adapted"][t], [1.0, 1.0, 1.0])
    assert set(lars.backends.jax.find(state).record) == set(QUANTITIES)


def test_leaves_of_two_dtypes_are_recorded_in_the_leaves_order(tmp_path):  # type: ignore[no-untyped-def]
    p = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.full(2, 2.0, jnp.float32),
         "c": jnp.full(4, 3.0, jnp.bfloat16)}
    tx = lars_tx(0.1, momentum=0.9, record=True)
    _, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, p), tx.init(p), p)
    with tx.recorder(tmp_path / "t.npz", p) as rec:
        rec.add_state(state)
    trace = load_trace(tmp_path / "t.npz")
    assert trace.names == ("a", "b", "c") and trace.dtype == "bfloat16"
    np.testing.assert_allclose(trace.columns["weight_norm"][0], [np.sqrt(3), np.sqrt(8), 6.0], rtol=1e-7)
    np.testing.assert_allclose(trace.columns["grad_norm"][0], [np.sqrt(3), np.sqrt(2), 2.0], rtol=1e-7)


@pytest.mark.parametrize("record,every,steps", [(3, None, [0, 3, 6]), (True, 3, [0, 3, 6]), (2, 4, [0, 4])])
def test_every_k_records_one_update_in_k(tmp_path, record, every, steps):  # type: ignore[no-untyped-def]
    tx, _ = transformation(record)
    with tx.recorder(tmp_path / "t.npz", params(), every=every) as rec:
        _, _, state, rows = trained(record, 8, recorder=rec)
    last = lars.backends.jax.find(state).record  # of update 7: recorded by record=True only
    assert all(np.isnan(last[q]).all() != (record is True) for q in QUANTITIES)
    trace = load_trace(tmp_path / "t.npz")
    np.testing.assert_array_equal(trace.step, steps)
    want = [rows[t]["update_norm"] for t in steps]
    np.testing.assert_allclose(trace.columns["update_norm"], want, rtol=1e-10)


def test_recording_leaves_the_updates_bit_identical_and_off_the_state_as_it_was():  # type: ignore
    _, plain, state, _ = trained(False, 4, jnp.float32)
    assert lars.backends.jax.find(state).record is None
    # count and lr, then per leaf a buffer and a ratio: nothing more
    assert len(jax.tree.leaves(lars.backends.jax.find(state))) == 2 + 2 * len(NAMES)
    for record in (True, 3):
        _, recorded, _, _ = trained(record, 4, jnp.float32)
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(recorded), strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_recorder_needs_a_transformation_that_records(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(TraceError, match="record=False"):
        lars_tx(0.1).recorder(tmp_path / "t.npz", params())
    with pytest.raises(TraceError, match="every=3 with record=2"):
        lars_tx(0.1, record=2).recorder(tmp_path / "t.npz", params(), every=3)
    with pytest.raises(lars.HyperparameterError, match="record"):
        lars_tx(0.1, record="yes")
