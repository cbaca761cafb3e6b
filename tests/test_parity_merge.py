"""`lars merge`: one report from the parts made in separate environments."""

import json

from lars.parity import report


def part(tmp_path, name, rows, unavailable):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "parity.json").write_text(json.dumps({"rows": rows, "unavailable": unavailable}))
    return folder


def row(driver, failed=()):
    return {"driver": driver, "flavor": "paper", "dtype": "float32", "cases": 12, "failed": list(failed),
            "refused": [], "max_deviation": 1e-6, "tolerance": 1e-5, "ms_per_step": 0.1, "passed": not failed}


def test_a_backend_that_ran_in_one_part_is_not_reported_missing(tmp_path, capsys):
    main = part(tmp_path, "main", [row("torch")], {"mxnet": "not installed", "keras": "no adapter"})
    mx = part(tmp_path, "mxnet", [row("mxnet")], {"torch": "not installed", "keras": "no adapter"})
    assert report.merge([main, mx], tmp_path / "out") == 0
    merged = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert {r["driver"] for r in merged["rows"]} == {"torch", "mxnet"}
    assert merged["unavailable"] == {"keras": "no adapter"}
    assert "keras: not in this report: no adapter" in capsys.readouterr().out


def test_a_failed_row_fails_the_merge(tmp_path):
    main = part(tmp_path, "main", [row("torch", failed=["nesterov"])], {})
    assert report.merge([main], tmp_path / "out") == 1
