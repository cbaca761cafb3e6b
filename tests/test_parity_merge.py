"""`lars merge`: one report from the parts made in separate environments."""

import json

import pytest

from lars.parity import report


def part(tmp_path, name, rows, unavailable, traces=(), version=report.VERSION, atlas=None):
    folder = tmp_path / name
    folder.mkdir()
    data = report.document([], unavailable, {"problem": "digits", "traces": list(traces)}, {"source": "x"},
                           atlas)
    data["rows"], data["version"] = rows, version
    (folder / "parity.json").write_text(json.dumps(data))
    return folder


def row(driver, failed=()):
    return {"driver": driver, "flavor": "paper", "dtype": "float32", "cases": 12, "failed": list(failed),
            "refused": [], "max_deviation": 1e-6, "tolerance": 1e-5, "ms_per_step": 0.1, "kind": "adapter",
            "deviation_per_step": [1e-7, 1e-6], "passed": not failed}


def trace(backend, passed=True):
    return {"backend": backend, "dtype": "float32", "losses": [2.3, 1.0], "trust_ratios": [{"l": 1.0}] * 2,
            "test_accuracy": 0.9, "seconds_per_step": 1e-3,
            "comparison": {"passed": passed, "loss_deviation": 0.0, "param_deviation": 0.0,
                           "tolerance": 1e-4}}


def test_a_backend_that_ran_in_one_part_is_not_reported_missing(tmp_path, capsys):
    main = part(tmp_path, "main", [row("torch")], {"mxnet": "not installed", "keras": "no adapter"})
    mx = part(tmp_path, "mxnet", [row("mxnet")], {"torch": "not installed", "keras": "no adapter"})
    assert report.merge([main, mx], tmp_path / "out") == 0
    merged = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert {r["driver"] for r in merged["rows"]} == {"torch", "mxnet"}
    assert merged["unavailable"] == {"keras": "no adapter"}
    assert "keras: not in this report: no adapter" in capsys.readouterr().out
    assert (tmp_path / "out" / "index.html").exists()


def test_a_failed_row_fails_the_merge(tmp_path):
    main = part(tmp_path, "main", [row("torch", failed=["nesterov"])], {})
    assert report.merge([main], tmp_path / "out") == 1


def test_training_traces_are_merged_once_each_and_a_failed_one_fails(tmp_path):
    main = part(tmp_path, "main", [row("torch")], {}, [trace("reference"), trace("torch")])
    mx = part(tmp_path, "mxnet", [row("mxnet")], {}, [trace("reference"), trace("mxnet", passed=False)])
    assert report.merge([main, mx], tmp_path / "out") == 1
    merged = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert [t["backend"] for t in merged["training"]["traces"]] == ["reference", "torch", "mxnet"]


def test_a_part_of_another_format_version_is_refused_with_its_path(tmp_path):
    old = part(tmp_path, "old", [row("torch")], {}, version=1)
    with pytest.raises(SystemExit, match=r"old/parity.json.*version 1"):
        report.merge([old], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_part_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no parity report there"):
        report.merge([tmp_path / "nowhere"], tmp_path / "out")


def test_the_atlas_of_a_part_is_kept(tmp_path):
    atlas = {"flavors": ["paper", "yscv"], "reproduces": {"paper": "You et al.", "yscv": "yscv"},
             "measured_with": {"source": "common", "steps": 3}, "problem": "digits",
             "divergence": [[0.0, 0.0], [0.0, 0.0]], "first_step": [[None, None], [None, None]],
             "axes": [[[], []], [[], []]], "final_loss": {"paper": 1.0, "yscv": 1.0}}
    main = part(tmp_path, "main", [row("torch")], {})
    mx = part(tmp_path, "mxnet", [row("mxnet")], {}, atlas=atlas)
    report.merge([main, mx], tmp_path / "out")
    assert json.loads((tmp_path / "out" / "parity.json").read_text())["atlas"] == atlas
    assert "paper vs yscv: identical weights after 3 steps" in (tmp_path / "out" / "index.html").read_text()
