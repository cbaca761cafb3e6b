"""Issue 17, rows 11, 26-29 and item 5: the `lars` command never shows a traceback for a user
error. It prints what is wrong on one line (and "nothing was written" where it was about to
write), exits non-zero and leaves every file as it was."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lars import cli
from lars.core import State, hyperparams, load_state, save_state

HP = hyperparams("paper", lr=0.1).to_dict()
NOT_UTF8 = "lr = 0.1\n# caf\xe9\n".encode("latin-1")


@pytest.fixture
def src(tmp_path):
    return save_state(tmp_path / "torch.npz", State(3, 0.1, {"fc.bias": np.ones(3)}), HP, framework="torch")


def migrate(src, out, *extra):
    return cli.main(["migrate", str(src), "--from", "torch", "--to", "jax", "--out", str(out), *extra])


def assert_one_line_error(capsys, command, message):
    out, err = capsys.readouterr()
    assert "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"lars {command}: ") and message in lines[0], err
    return lines


@pytest.mark.parametrize("text, message", [
    (None, "cannot be read"),
    (b"lr = = 0.1\n", "is not valid TOML"),
    (b"lr = 0.1\nmomentun = 0.9\n", "momentun=0.9 is invalid: expected a known key (did you mean"),
    (b'lr = 0.1\nmomentum = "high"\n', "momentum='high' is invalid: expected a finite number"),
    (NOT_UTF8, "is not UTF-8 text"),
])
def test_parity_with_a_bad_config_says_why_in_one_line(tmp_path, capsys, text, message):  # row 26, 27
    config = tmp_path / "lars.toml"
    if text is not None:
        config.write_bytes(text)
    out = tmp_path / "reports"
    code = cli.main(["parity", "--config", str(config), "--out", str(out), "--no-training"])
    assert code == 2
    lines = assert_one_line_error(capsys, "parity", message)
    assert lines[-1].endswith("nothing was written") and len(lines) <= 2
    assert not out.exists()


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path):  # row 27 (the core's part)
    from lars import ConfigError, load_config

    (tmp_path / "lars.toml").write_bytes(NOT_UTF8)
    with pytest.raises(ConfigError, match=r"lars\.toml: .*is not UTF-8 text"):
        load_config(tmp_path / "lars.toml")


def test_a_name_map_that_is_not_utf8_is_refused(src, tmp_path, capsys):  # row 27
    (tmp_path / "map.toml").write_bytes(b'[tensors]\n"fc.bias" = "b\xe9"\n')
    code = migrate(src, tmp_path / "out.npz", "--names", str(tmp_path / "map.toml"))
    assert code == 1
    lines = assert_one_line_error(capsys, "migrate", "is not UTF-8 text")
    assert lines[-1] == "lars migrate: nothing was written"
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("where", ["a folder", "the current folder", "under a regular file"])
def test_migrate_to_a_path_that_cannot_be_written(src, tmp_path, capsys, monkeypatch, where):  # row 28
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    out = {"a folder": "folder", "the current folder": "./", "under a regular file": "file/s.npz"}[where]
    before = sorted(p.name for p in tmp_path.iterdir())
    code = migrate(src, out)
    assert code == 1
    lines = assert_one_line_error(capsys, "migrate", "cannot be written")
    assert lines[-1] == "lars migrate: nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list((tmp_path / "folder").iterdir()) == []


def test_migrate_into_a_read_only_folder(src, tmp_path, capsys):  # row 28
    """A folder nobody may write in; as root (who writes anywhere else) /proc, where nothing can
    be created."""
    folder = Path("/proc") if os.geteuid() == 0 else tmp_path / "ro"
    if folder != Path("/proc"):
        folder.mkdir()
        folder.chmod(0o555)
    try:
        code = migrate(src, folder / "s.npz")
    finally:
        if folder != Path("/proc"):
            folder.chmod(0o755)
    assert code == 1
    assert_one_line_error(capsys, "migrate", "cannot be written")
    assert not (folder / "s.npz").exists()


def test_a_map_entry_that_matches_no_buffer_is_not_counted(src, tmp_path, capsys):  # row 29
    (tmp_path / "map.toml").write_text('[tensors]\n"head.weight" = "head/kernel"\n')
    code = migrate(src, tmp_path / "out.npz", "--names", str(tmp_path / "map.toml"))
    out, err = capsys.readouterr()
    assert code == 0
    assert "map: 0 renamed, 0 transposed" in out
    assert "1 map entry matched no buffer: ['head.weight']" in err
    assert set(load_state(tmp_path / "out.npz").state.momentum_buffers) == {"fc.bias"}


def test_a_file_with_two_buffers_of_one_name_is_not_migrated(tmp_path, capsys):  # row 11
    entry = {"name": "fc.bias", "shape": [3], "dtype": "float64"}
    header = {"format": "lars-state", "version": 1, "step": 3, "last_lr": 0.1, "flavor": "paper",
              "hyperparams": HP, "framework": "torch", "buffers": [entry, entry]}
    with open(tmp_path / "dup.npz", "wb") as f:
        np.savez(f, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                 buffer_0=np.zeros(3), buffer_1=np.ones(3))
    code = migrate(tmp_path / "dup.npz", tmp_path / "out.npz")
    assert code == 1
    assert_one_line_error(capsys, "migrate", "two buffers named 'fc.bias'")
    assert not (tmp_path / "out.npz").exists()


def test_migrate_from_a_folder_or_a_missing_file(tmp_path, capsys):  # item 5
    for src in (tmp_path, tmp_path / "absent.npz"):
        assert migrate(src, tmp_path / "out.npz") == 1
        assert_one_line_error(capsys, "migrate", "cannot be read")
    assert not (tmp_path / "out.npz").exists()


def test_diff_with_a_config_that_is_not_utf8(tmp_path, capsys):  # item 5, row 27
    (tmp_path / "lars.toml").write_bytes(NOT_UTF8)
    code = cli.main(["diff", "paper", "optax", "--config", str(tmp_path / "lars.toml")])
    assert code == 2
    assert_one_line_error(capsys, "diff", "is not UTF-8 text")


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"format": "caf\xe9"}'])
def test_merge_of_a_broken_report_says_why(tmp_path, capsys, content):  # item 5
    pytest.importorskip("rich")  # the report's extra
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "parity.json").write_bytes(content)
    with pytest.raises(SystemExit) as stop:
        cli.main(["merge", str(tmp_path / "part"), "--out", str(tmp_path / "out")])
    assert stop.value.code != 0 and "parity.json" in str(stop.value.code)
    assert "is not a parity report" in str(stop.value.code)
    assert not (tmp_path / "out").exists()
