"""The trace format and the core's recording (issue 19): what a recorded step holds, from the
formulas; files versioned, checked and written whole."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lars
from lars.conformance.rule_driver import NumpyBackend
from lars.core.policy import plan
from lars.core.rule import Rule
from lars.core.step import Batch, jobs, step
from lars.core.trace import QUANTITIES, Recorder, Trace, TraceError, load_trace, save_trace
from lars.core.xp import Ops


class CountingBackend(NumpyBackend):
    """The NumPy backend, counting the sums of squares it takes (one pass over a tensor each)."""

    def __init__(self) -> None:
        self.sums = 0

    def sums_of_squares(self, requests):  # type: ignore[no-untyped-def]
        self.sums += sum(len(jobs(r)) for _, r in requests)
        return super().sums_of_squares(requests)


def recorded_step(flavor: str, record=True, backend=None, **overrides):  # type: ignore[no-untyped-def]
    hp = lars.hyperparams(flavor, lr=0.1, **{"momentum": 0.9, "weight_decay": 1e-2, **overrides})
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    gs = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    buffers = [rng.standard_normal((4, 3)) * 0.1, rng.standard_normal(3) * 0.1]
    before = [w.copy() for w in ws]
    rule = Rule(hp, plan(hp, [("fc_weight", (4, 3)), ("fc_bias", (3,))]))
    b = Batch(rule, Ops(np.float64), ws, gs, buffers, 0.1, last_lr=0.1, first=(False, False), record=record)
    step([b], backend or NumpyBackend())
    return b, before, gs


@pytest.mark.parametrize("flavor,overrides", [
    ("paper", {}), ("timm", {"nesterov": True}), ("optax", {}), ("torchlars", {}), ("mxnet", {}),
    ("holocron", {}), ("paper", {"momentum": 0.0})])
def test_a_recorded_step_holds_the_norms_before_and_the_change_it_made(flavor, overrides):  # type: ignore
    b, before, grads = recorded_step(flavor, **overrides)
    r = b.recorded
    np.testing.assert_allclose(r["weight_norm"], [np.linalg.norm(w) for w in before], rtol=1e-14)
    np.testing.assert_allclose(r["grad_norm"], [np.linalg.norm(g) for g in grads], rtol=1e-14)
    moved = [np.linalg.norm(w - o) for w, o in zip(b.weights, before, strict=True)]
    np.testing.assert_allclose(r["update_norm"], moved, rtol=1e-12)
    np.testing.assert_array_equal(r["adapted"], [1.0 if a else 0.0 for a in b.rule.adapt])
    assert set(QUANTITIES) <= set(r)


def test_the_gradient_is_recorded_as_the_rule_takes_it():
    b, _, grads = recorded_step("paper", grad_rescale=0.5, maximize=True)
    np.testing.assert_allclose(b.recorded["grad_norm"], [0.5 * np.linalg.norm(g) for g in grads], rtol=1e-14)


def test_mxnet_excludes_the_bias_and_its_weight_decay():
    b, _, _ = recorded_step("mxnet")
    np.testing.assert_array_equal(b.recorded["adapted"], [1.0, 0.0])
    np.testing.assert_array_equal(b.recorded["weight_decay"], [1e-2, 0.0])
    assert b.recorded["trust_ratio"][1] == 1.0


@pytest.mark.parametrize("flavor,overrides,extra", [("paper", {}, 2), ("paper", {"grad_rescale": 0.5}, 2),
                                                    ("mxnet", {}, 6)])
def test_recording_takes_again_only_the_norms_the_step_did_not_take(flavor, overrides, extra):  # type: ignore
    """The paper's rule takes ||w|| and ||κ₀·g|| of every tensor: recording adds the ||Δw|| of each
    (2 passes); MXNet's adapts only the weight: ||w||, ||g|| and ||Δw|| of both (6)."""
    plain, recorded = CountingBackend(), CountingBackend()
    recorded_step(flavor, False, plain, **overrides)
    b, _, grads = recorded_step(flavor, True, recorded, **overrides)
    assert recorded.sums - plain.sums == extra
    scale = overrides.get("grad_rescale", 1.0)
    want = [scale * np.linalg.norm(g) for g in grads]
    np.testing.assert_allclose(b.recorded["grad_norm"], want, rtol=1e-14)


def test_a_gate_known_when_the_step_runs_records_the_change_only_where_it_holds():  # type: ignore
    """A traced gate (JAX's one update in k): ||Δw|| taken in `Ops.cond`, 0 where it does not hold."""
    on, _, _ = recorded_step("paper", np.bool_(True))
    off, _, _ = recorded_step("paper", np.bool_(False))
    np.testing.assert_array_equal(off.recorded["update_norm"], [0.0, 0.0])
    assert (on.recorded["update_norm"] > 0).all()
    for q in ("weight_norm", "grad_norm", "trust_ratio"):
        np.testing.assert_array_equal(on.recorded[q], off.recorded[q])
    for a, b in zip(on.weights, off.weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_recorder_writes_the_whole_trace_every_flush_and_reads_back(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "run.npz"
    with Recorder(path, ["a", "b"], [(2,), ()], framework="numpy", dtype="float64",
                  hyperparams={"flavor": "paper"}, flush=2) as rec:
        for t in range(5):
            if rec.wants(t):
                rec.add(t, 0.1 * (t + 1), {q: np.full(2, float(t)) for q in QUANTITIES})
                rec.add_loss(t, 1.0 / (t + 1))
            if t == 2:  # two steps flushed, the third pending
                assert len(load_trace(path)) == 2
    trace = load_trace(path)
    assert trace.names == ("a", "b") and trace.shapes == ((2,), ()) and trace.framework == "numpy"
    np.testing.assert_array_equal(trace.step, range(5))
    np.testing.assert_allclose(trace.lr, [0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(trace.loss, [1.0, 0.5, 1 / 3, 0.25, 0.2])
    np.testing.assert_array_equal(trace.columns["update_norm"][:, 0], range(5))


def test_every_k_records_one_step_in_k(tmp_path):  # type: ignore[no-untyped-def]
    rec = Recorder(tmp_path / "t.npz", ["a"], [(1,)], framework="x", dtype="float32", hyperparams={}, every=3)
    assert [t for t in range(10) if rec.wants(t)] == [0, 3, 6, 9]
    with pytest.raises(TraceError, match=r"every=0 is invalid: expected an int >= 1"):
        Recorder(tmp_path / "t.npz", ["a"], [(1,)], framework="x", dtype="float32", hyperparams={}, every=0)


def test_a_trace_of_1000_steps_of_161_tensors_is_under_10_mb(tmp_path):  # type: ignore[no-untyped-def]
    n, steps = 161, 1000
    columns = {q: np.random.default_rng(0).random((steps, n)) for q in QUANTITIES}
    names, shapes = tuple(f"t{i}" for i in range(n)), tuple((64, 64, 3, 3) for _ in range(n))
    trace = Trace("torch", "float32", names, shapes, {"flavor": "paper"}, np.arange(steps),
                  np.full(steps, 0.1), np.full(steps, np.nan), columns)
    size = save_trace(tmp_path / "big.npz", trace).stat().st_size
    assert size < 10 * 2**20, size


def test_a_file_that_is_not_a_trace_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    state = tmp_path / "state.npz"
    lars.save_state(state, lars.State(), {"flavor": "paper"})
    with pytest.raises(TraceError, match="not a lars trace"):
        load_trace(state)
    other = tmp_path / "v2.npz"
    np.savez(other, header=np.array(json.dumps({"format": "lars-trace", "version": 2})))
    with pytest.raises(TraceError, match="trace version 2 is not 1"):
        load_trace(other)


def test_values_and_losses_are_read_on_the_host_only_at_a_flush(tmp_path):  # type: ignore[no-untyped-def]
    read = []

    def host(x):  # type: ignore[no-untyped-def]
        read.append(x)
        return np.asarray(x)

    rec = Recorder(tmp_path / "t.npz", ["a"], [(1,)], framework="x", dtype="float64", hyperparams={},
                   host=host)
    rec.add(0, 0.1, {q: np.ones(1) for q in QUANTITIES})
    rec.add_loss(0, 2.5)
    assert read == []  # a device's values would still be on the device
    rec.close()
    assert load_trace(tmp_path / "t.npz").loss.tolist() == [2.5]
