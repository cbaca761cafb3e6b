"""Issue 17, rows 9-13 and item 6: a state file is refused with `StateError` for every way it
can be wrong, `save_state` writes nothing that `load_state` would refuse, and a saved file keeps
the mode of the file it replaces and writes through a symlink."""

import json
import math
import os
import stat
import sys

import numpy as np
import pytest

from lars.core import State, StateError, hyperparams, load_state, reference, save_state

HP = hyperparams("paper", lr=0.1).to_dict()
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes and symlinks")


def good_header(**changes):
    header = {"format": "lars-state", "version": 1, "step": 3, "last_lr": 0.1, "flavor": "paper",
              "hyperparams": HP, "framework": None,
              "buffers": [{"name": "w", "shape": [3], "dtype": "float64"}]}
    header.update(changes)
    return header


def write_raw(path, header, arrays=None):
    """A file in the state format with any header and arrays (what a foreign tool could write)."""
    arrays = {"buffer_0": np.zeros(3)} if arrays is None else arrays
    text = header if isinstance(header, str) else json.dumps(header)
    with open(path, "wb") as f:
        np.savez(f, header=np.frombuffer(text.encode(), dtype=np.uint8), **arrays)
    return path


def test_the_raw_writer_writes_a_loadable_file(tmp_path):  # the helper below is sound
    saved = load_state(write_raw(tmp_path / "s.npz", good_header()))
    assert saved.state.step == 3 and list(saved.state.momentum_buffers) == ["w"]


def test_a_npy_file_is_refused(tmp_path):  # row 9
    np.save(tmp_path / "w.npy", np.ones(3))
    with pytest.raises(StateError, match=r"w\.npy is not a lars state file"):
        load_state(tmp_path / "w.npy")


BAD_HEADERS = {  # row 9 and row 10: (header, what the message must name)
    "a JSON list": ("[1, 2]", "not a lars state file"),
    "step null": (good_header(step=None), "step=None is invalid: expected an int >= 0"),
    "step -5": (good_header(step=-5), "step=-5 is invalid: expected an int >= 0"),
    "step 2.7": (good_header(step=2.7), "step=2.7 is invalid: expected an int >= 0"),
    "step true": (good_header(step=True), "step=True is invalid"),
    "last_lr NaN": (good_header(last_lr=math.nan), "last_lr=nan is invalid: expected None or a finite"),
    "last_lr -1": (good_header(last_lr=-1), "last_lr=-1 is invalid"),
    "last_lr text": (good_header(last_lr="0.1"), "last_lr='0.1' is invalid"),
    "flavor null": (good_header(flavor=None), "flavor=None is invalid: expected a string"),
    "framework 5": (good_header(framework=5), "framework=5 is invalid: expected None or a string"),
    "hyperparams 5": (good_header(hyperparams=5), "hyperparams=5 is invalid: expected a JSON object"),
    "buffers 5": (good_header(buffers=5), "buffers=5 is invalid: expected a list"),
    "entry not an object": (good_header(buffers=["w"]), r"buffers\[0\]='w' is invalid"),
    "entry without name": (good_header(buffers=[{"shape": [3], "dtype": "float64"}]),
                           r"buffers\[0\].* is invalid: expected .*name"),
    "name not a string": (good_header(buffers=[{"name": 1, "shape": [3], "dtype": "float64"}]),
                          r"buffers\[0\]\.name=1 is invalid"),
    "shape not a list": (good_header(buffers=[{"name": "w", "shape": 3, "dtype": "float64"}]),
                         r"buffers\[0\]\.shape=3 is invalid"),
    "step 0 with buffers": (good_header(step=0), "step=0"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_a_bad_header_is_a_state_error_naming_the_field(tmp_path, case):  # rows 9, 10
    header, message = BAD_HEADERS[case]
    with pytest.raises(StateError, match=message):
        load_state(write_raw(tmp_path / "s.npz", header))


@pytest.mark.parametrize("dtype", ["<U3", "int64", "complex128", "bool"])
def test_a_buffer_of_a_non_float_dtype_is_refused(tmp_path, dtype):  # row 10
    array = np.zeros(3, dtype=dtype)
    header = good_header(buffers=[{"name": "w", "shape": [3], "dtype": str(array.dtype)}])
    with pytest.raises(StateError, match=r"buffer 'w' has dtype .* expected a floating-point dtype"):
        load_state(write_raw(tmp_path / "s.npz", header, {"buffer_0": array}))


def test_two_buffers_with_one_name_are_refused(tmp_path):  # row 11
    entry = {"name": "w", "shape": [3], "dtype": "float64"}
    header = good_header(buffers=[entry, entry])
    arrays = {"buffer_0": np.zeros(3), "buffer_1": np.ones(3)}
    with pytest.raises(StateError, match="two buffers named 'w'"):
        load_state(write_raw(tmp_path / "s.npz", header, arrays))


@pytest.mark.parametrize("state, message", [
    (State(-3, 0.1, {}), "step=-3 is invalid: expected an int >= 0"),
    (State(1, math.nan, {}), "last_lr=nan is invalid"),
    (State(1, 0.1, {"w": np.array([object()], dtype=object)}), "buffer 'w' has dtype object"),
    (State(1, 0.1, {"w": np.array(["a"])}), "buffer 'w' has dtype <U1"),
    (State(1, 0.1, {3: np.zeros(2)}), "buffer name 3 is invalid: expected a string"),
    (State(0, 0.1, {"w": np.zeros(2)}), r"step=0 .*buffers"),
])
def test_save_state_writes_nothing_load_state_would_refuse(tmp_path, state, message):  # row 13
    with pytest.raises(StateError, match=message):
        save_state(tmp_path / "s.npz", state, HP)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("hp, message", [
    (None, "hyperparams=None is invalid: expected a mapping"),
    ({"lr": 0.1}, "flavor=None is invalid: expected a string"),
    ({**HP, "exclude_from_weight_decay": object()}, "cannot be written as JSON"),
])
def test_save_state_refuses_hyperparams_it_cannot_write(tmp_path, hp, message):  # row 13
    with pytest.raises(StateError, match=message):
        save_state(tmp_path / "s.npz", State(), hp)
    assert list(tmp_path.iterdir()) == []


def test_save_state_refuses_a_non_state(tmp_path):  # also seen: import_state(None)
    from lars.core.state import check_state

    with pytest.raises(StateError, match=r"state=None is invalid: expected a lars\.State"):
        save_state(tmp_path / "s.npz", None, HP)
    with pytest.raises(StateError, match=r"state=None is invalid: expected a lars\.State"):
        check_state(None, {"w": (3,)})


def test_a_state_with_buffers_at_step_0_is_refused_before_use():  # also seen: buffers dropped
    with pytest.raises(StateError, match=r"step=0 .*buffers \['w'\]"):
        State(0, 0.1, {"w": np.zeros(3)}).check_fits({"w": (3,)})
    with pytest.raises(StateError, match="last_lr=nan"):
        State(2, math.nan, {}).check_fits({"w": (3,)})
    hp = hyperparams("paper", lr=0.1)
    with pytest.raises(StateError, match=r"step=0"):
        reference.step({"w": np.ones(3)}, {"w": np.ones(3)}, State(0, 0.1, {"w": np.zeros(3)}), hp)


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640])
def test_a_saved_file_keeps_the_mode_of_the_file_it_replaces(tmp_path, mode):  # row 12, item 6
    path = save_state(tmp_path / "s.npz", State(), HP)
    os.chmod(path, mode)
    save_state(path, State(1, 0.1, {}), HP)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert load_state(path).state.step == 1


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_new_file_follows_the_umask(tmp_path, umask):  # row 12, item 6
    old = os.umask(umask)
    try:
        path = save_state(tmp_path / "s.npz", State(), HP)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


@posix_only
def test_saving_through_a_symlink_writes_the_target(tmp_path):  # row 12, item 6
    target = save_state(tmp_path / "real.npz", State(), HP)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    save_state(link, State(4, 0.1, {}), HP)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert load_state(target).state.step == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real.npz"]


@pytest.mark.parametrize("where", ["a folder", "under a regular file"])
def test_an_unwritable_path_is_a_state_error(tmp_path, where):  # row 28 (the core's part)
    (tmp_path / "file").write_bytes(b"x")
    path = tmp_path if where == "a folder" else tmp_path / "file" / "s.npz"
    with pytest.raises(StateError, match="cannot be written"):
        save_state(path, State(), HP)
    assert (tmp_path / "file").read_bytes() == b"x"
