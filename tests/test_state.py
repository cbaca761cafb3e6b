"""The state file: exact round trip, exact resume, every refusal, atomic writes, clearing."""

import json

import numpy as np
import pytest

from lars.core import Hyperparams, State, StateError, hyperparams, load_state, reference, save_state

SHAPES = {"fc.weight": (2, 3), "fc.bias": (3,)}


def grads_at(t, dtype=np.float64):
    rng = np.random.default_rng(t)
    return {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}


def initial_params(dtype=np.float64):
    rng = np.random.default_rng(1234)
    return {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}


def run(hp, params, state, steps):
    for t in steps:
        res = reference.step(params, grads_at(t, params["fc.weight"].dtype), state, hp, lr=0.1 / (1 + t))
        params, state = res.params, res.state
    return params, state


@pytest.fixture
def hp():
    return hyperparams("pytorch_optimizer", lr=0.1, weight_decay=0.01, dampening=0.1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_round_trip_is_exact(tmp_path, hp, dtype):
    _, state = run(hp, initial_params(dtype), State(), range(3))
    path = save_state(tmp_path / "opt.npz", state, hp.to_dict())
    loaded = load_state(path, shapes=SHAPES)
    assert loaded.state.step == 3 and loaded.state.last_lr == 0.1 / 3
    assert loaded.flavor == "pytorch_optimizer"
    assert loaded.hyperparams == hp.to_dict()
    assert Hyperparams.from_dict(loaded.hyperparams) == hp
    assert loaded.state.momentum_buffers.keys() == state.momentum_buffers.keys()
    for name, buffer in state.momentum_buffers.items():
        assert loaded.state.momentum_buffers[name].dtype == dtype
        assert loaded.state.momentum_buffers[name].tobytes() == buffer.tobytes()


def test_empty_state_round_trips(tmp_path, hp):
    loaded = load_state(save_state(tmp_path / "fresh.npz", State(), hp.to_dict()))
    assert (loaded.state.step, loaded.state.last_lr) == (0, None)
    assert dict(loaded.state.momentum_buffers) == {}


@pytest.mark.parametrize("flavor", ["pytorch_optimizer", "timm", "mxnet", "holocron"])
def test_resume_continues_the_same_trajectory(tmp_path, flavor):
    hp = hyperparams(flavor, lr=0.1, momentum=0.9, weight_decay=0.01)
    straight, _ = run(hp, initial_params(), State(), range(5))
    params, state = run(hp, initial_params(), State(), range(2))
    save_state(tmp_path / "mid.npz", state, hp.to_dict())
    saved = load_state(tmp_path / "mid.npz", shapes=SHAPES)
    resumed, _ = run(Hyperparams.from_dict(saved.hyperparams), params, saved.state, range(2, 5))
    for name in SHAPES:
        np.testing.assert_array_equal(resumed[name], straight[name])


def rewrite_header(path, **changes):
    """Rewrites a saved file with header fields changed (the format: JSON bytes under 'header')."""
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(bytes(arrays["header"]).decode())
    header.update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def saved_file(tmp_path, hp):
    _, state = run(hp, initial_params(), State(), range(2))
    return save_state(tmp_path / "opt.npz", state, hp.to_dict())


def test_newer_version_is_refused(tmp_path, hp):
    path = saved_file(tmp_path, hp)
    rewrite_header(path, version=2)
    with pytest.raises(StateError, match="version 2"):
        load_state(path)


def test_other_format_is_refused(tmp_path, hp):
    path = saved_file(tmp_path, hp)
    rewrite_header(path, format="something-else")
    with pytest.raises(StateError, match="not a lars state file"):
        load_state(path)


def test_plain_npz_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, w=np.ones(3))
    with pytest.raises(StateError, match="not a lars state file"):
        load_state(path)


def test_garbage_and_missing_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00not a zip file at all" * 10)
    with pytest.raises(StateError):
        load_state(garbage)
    with pytest.raises(StateError):
        load_state(tmp_path / "absent.npz")


def test_truncated_and_corrupted_files_are_refused(tmp_path, hp):
    _, state = run(hp, initial_params(), State(), range(3))
    path = save_state(tmp_path / "s.npz", state, hp.to_dict())
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError, match="cannot be read"):
        load_state(truncated)
    corrupted = tmp_path / "corrupted.npz"
    flipped = bytearray(data)
    at = data.index(b"buffer_0.npy") + 200  # inside the first buffer's bytes
    flipped[at] ^= 0xFF
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(StateError):
        load_state(corrupted)


def test_unknown_names_are_refused(tmp_path, hp):
    path = saved_file(tmp_path, hp)
    with pytest.raises(StateError, match=r"fc\.bias"):
        load_state(path, shapes={"fc.weight": (2, 3)})


def test_wrong_shapes_are_refused(tmp_path, hp):
    path = saved_file(tmp_path, hp)
    with pytest.raises(StateError, match=r"\(2, 3\)"):
        load_state(path, shapes={"fc.weight": (3, 2), "fc.bias": (3,)})


def test_write_leaves_no_temporary_files(tmp_path, hp):
    saved_file(tmp_path, hp)
    save_state(tmp_path / "opt.npz", State(), hp.to_dict())            # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.npz"]


def test_failing_write_keeps_the_previous_file(tmp_path, hp, monkeypatch):
    path = saved_file(tmp_path, hp)
    before = path.read_bytes()

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_state(path, State(7, 0.5, {"fc.bias": np.zeros(3)}), hp.to_dict())
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_state(path).state.step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.npz"]


def test_cleared_state_is_fresh(hp):
    _, state = run(hp, initial_params(), State(), range(2))
    fresh = state.cleared()
    assert (fresh.step, fresh.last_lr, dict(fresh.momentum_buffers)) == (0, None, {})
    assert state.step == 2 and set(state.momentum_buffers) == set(SHAPES)
    # a cleared state starts the buffers again: the next step equals a first step
    params = initial_params()
    a = reference.step(params, grads_at(9), fresh, hp).params
    b = reference.step(params, grads_at(9), State(), hp).params
    for name in SHAPES:
        np.testing.assert_array_equal(a[name], b[name])
