"""`python -m bench.merge`: one report from the benchmark's parts (no framework needed)."""

import dataclasses
import json

import numpy as np
import pytest

from bench import common, merge, run


def measurement(kind, ms, tensors=161, parameters=25_557_032, dtype="float32", bound=20.0, not_measured=None):
    return {"kind": kind, "set": "resnet50" if kind == "set" else "synthetic", "tensors": tensors,
            "parameters": parameters, "dtype": dtype, "triad_gbps": 30.0, "bound_ms": bound, "ms": ms,
            "per_pass_ms": {k: [v] for k, v in ms.items()}, "not_measured": not_measured or {}}


def part(folder, backend, measurements, targets, unsupported=None, **extra):
    folder.mkdir(exist_ok=True)
    data = {"backend": backend, "quick": False, "complete": True, **extra, "machine": "test",
            "python": "3.11", "numpy": "2", "versions": {backend: "1.0"}, "targets": targets,
            "unsupported": unsupported or {}, "measurements": measurements}
    (folder / f"{backend}.json").write_text(json.dumps(data))


@pytest.fixture
def folders(tmp_path):
    main, mx = tmp_path / "main", tmp_path / "mxnet"
    torch_targets = [{"ours": "lars paper", "anchor": "torch SGD foreach", "limit": 1.0},
                     {"ours": "lars paper", "anchor": "pytorch_optimizer LARS", "limit": 0.5}]
    part(main, "torch", [
        measurement("set", {"torch SGD foreach": 40.0, "pytorch_optimizer LARS": 50.0, "lars paper": 30.0}),
        measurement("set", {"torch SGD foreach": 25.0, "lars paper": 20.0}, dtype="bfloat16", bound=10.0,
                    not_measured={"pytorch_optimizer LARS": "failed: TypeError: no bfloat16"}),
        measurement("parameters", {"lars paper": 2.0, "torch SGD foreach": 1.0}, 100, 10**6),
        measurement("parameters", {"lars paper": 20.0, "torch SGD foreach": 10.0}, 100, 10**7),
        measurement("tensors", {"lars paper": 8.0}, tensors=3000, parameters=10**7,
                    not_measured={"torch SGD foreach": "building it took 90 s"}),
    ], torch_targets)
    (main / "keras.json").write_text(json.dumps({"backend": "keras", "unavailable": "not installed here"}))
    part(mx, "mxnet", [measurement("set", {"mxnet LARS": 100.0, "lars mxnet flavor": 90.0})],
         [{"ours": "lars mxnet flavor", "anchor": "mxnet LARS", "limit": 1.0}],
         unsupported={"bfloat16": "MXNet has no bfloat16"})
    return [main, mx]


def test_targets_are_ratios_of_the_same_runs_step_times(folders):
    report = merge.combine(merge.load_parts(folders))
    found = {(t["backend"], t["dtype"], t["anchor"]): (t["ratio"], t["met"]) for t in report["targets"]}
    assert found == {("torch", "float32", "torch SGD foreach"): (30 / 40, True),
                     ("torch", "float32", "pytorch_optimizer LARS"): (30 / 50, False),
                     ("torch", "bfloat16", "torch SGD foreach"): (20 / 25, True),
                     ("mxnet", "float32", "mxnet LARS"): (90 / 100, True)}


def test_a_missed_target_says_whether_the_bytes_or_the_time_beyond_them_miss_it(folders):
    """The floor is our step at the attained bandwidth (the set's bound, 20 ms) over the anchor's
    time: above the limit, the bytes alone miss; below it, the time our step spends beyond them."""
    report = merge.combine(merge.load_parts(folders))
    found = {(t["dtype"], t["anchor"]): t for t in report["targets"] if t["backend"] == "torch"}
    peer = found["float32", "pytorch_optimizer LARS"]
    assert peer["floor"] == 20.0 / 50.0 and not peer["met"]
    assert merge.why_missed(peer) == "time beyond the bytes: our step runs at 0.67 of the bound"
    tight = {**peer, "limit": 0.3}
    assert merge.why_missed(tight) == "bytes: at 30 GB/s our step's bytes alone are 0.40x"
    assert merge.why_missed(found["float32", "torch SGD foreach"]) == ""


def test_the_bound_is_our_bytes_at_the_better_of_the_triad_and_the_fastest_sgd():
    """25.6M float32 parameters: SGD moves 20 B each, so 12.78 ms is 40 GB/s; our 28 B at 40 GB/s
    take 17.9 ms. bfloat16 with float32 momentum: 18 B against SGD's 10."""
    n = 25_557_032
    assert common.sgd_gbps(n, "float32", 20 * n / 40e9 * 1e3) == pytest.approx(40.0)
    assert common.bound_ms(n, "float32", 40.0) == pytest.approx(28 * n / 40e9 * 1e3)
    ratio = common.bound_ms(n, "bfloat16", 40.0) / common.bound_ms(n, "float32", 40.0)
    assert ratio == pytest.approx(18 / 28)


def test_every_missing_thing_says_why(folders):
    report = merge.combine(merge.load_parts(folders))
    assert report["unavailable"] == {"keras": "not installed here", "jax": "no part for it was given"}
    assert report["unsupported"] == [{"backend": "mxnet", "dtype": "bfloat16",
                                      "why": "MXNet has no bfloat16"}]
    out = merge.text(report)
    assert "not supported: MXNet has no bfloat16" in out
    assert "failed: TypeError: no bfloat16" in out
    assert "torch torch SGD foreach at 3,000 tensors: not measured: building it took 90 s" in out
    assert "keras: not in this report: not installed here" in out


def test_rows_report_the_fraction_of_the_memory_bound(folders):
    report = merge.combine(merge.load_parts(folders))
    row = next(r for r in report["rows"] if r["variant"] == "lars paper" and r["kind"] == "set"
               and r["dtype"] == "float32")
    assert row["bound_fraction"] == 20.0 / 30.0
    line = next(x for x in merge.text(report).splitlines() if x.startswith("torch    float32   lars paper"))
    assert line.split()[-3:] == ["30.0", "1.0x", "0.67"]


def test_sweeps_are_tables_of_points(folders):
    header, rows = merge.sweep_table(merge.combine(merge.load_parts(folders)), "parameters")
    assert header == ["ms/step at parameters", "1.0M", "10M"]
    assert rows[0] == ["torch: lars paper", "2.0", "20.0"]
    assert rows[-1][1:] == ["20.0", "20.0"]  # the bound at each point


def test_main_writes_the_json_and_the_markdown_table(folders, tmp_path, capsys):
    assert merge.main([*map(str, folders), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    written = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {r["backend"] for r in written["rows"]} == {"torch", "mxnet"}
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| torch | float32 | lars paper | 30.0 | 1.0x | 0.67 |" in table
    assert "ResNet-50: 161 tensors, 25,557,032 parameters" in capsys.readouterr().out


def test_a_part_stopped_half_way_keeps_its_measurements_and_says_so(tmp_path):
    part(tmp_path, "jax", [measurement("set", {"optax.lars": 50.0, "lars paper": 20.0})],
         [{"ours": "lars paper", "anchor": "optax.lars", "limit": 0.6}], complete=False,
         stopped="its benchmark process ran past 1800 s and was stopped")
    report = merge.combine(merge.load_parts([tmp_path]))
    assert [t["ratio"] for t in report["targets"]] == [0.4]
    assert "jax: only part of its measurements: its benchmark process ran past 1800 s" in merge.text(report)


def test_a_sweep_point_is_skipped_when_building_would_take_too_long():
    clock = run.BuildClock()
    clock.record("tensors", "optax.lars", 1000, 40.0)
    assert clock.why_skip("tensors", "optax.lars", 1000) is None
    assert "about 120 s expected at 3,000" in clock.why_skip("tensors", "optax.lars", 3000)
    assert clock.why_skip("tensors", "lars paper", 3000) is None


def test_a_backend_that_cannot_be_imported_is_a_part_that_says_why(monkeypatch):
    monkeypatch.setitem(run.MODULES, "torch", "bench.no_such_module")
    part = run.run_backend("torch", ["resnet50"], quick=True)
    assert part["backend"] == "torch" and "not installed here" in part["unavailable"]


@pytest.mark.parametrize(("seconds", "steps"), [(0.001, 20), (0.05, 20), (0.1, 10), (0.3, 3), (5.0, 3)])
def test_a_variant_gets_about_a_second_of_timed_steps_per_pass(seconds, steps):
    assert common.budget(seconds, quick=False) == common.Budget(warmup=1, steps=steps, passes=3)


def test_the_docs_plots_read_back_what_the_table_shows(folders):
    """The benchmarks page draws its figures from its pasted tables (`docs/hooks/bench_plots.py`):
    the rows it reads back are the merged report's, to the table's precision."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_plots", Path(__file__).parents[1] / "docs" / "hooks" / "bench_plots.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    report = merge.combine(merge.load_parts(folders))
    page = merge.text(report, markdown=True).replace("\n### ", "\n#### ").replace("### ", "#### ", 1)
    read = hook.report(page)["rows"]
    sets = {(r["backend"], r["dtype"], r["variant"]): r["bound_fraction"] for r in read if r["kind"] == "set"}
    assert sets == {(r["backend"], r["dtype"], r["variant"]): pytest.approx(r["bound_fraction"], abs=0.006)
                    for r in report["rows"] if r["kind"] == "set"}
    def key(r):
        return r["kind"], r["variant"], r["parameters"], r["tensors"]

    sweeps = {key(r): r["ms"] for r in read if r["kind"] != "set"}
    assert sweeps == {key(r): pytest.approx(r["ms"], rel=0.01) for r in report["rows"] if r["kind"] != "set"}


def test_a_target_is_timed_against_the_fastest_of_its_anchors_that_ran(tmp_path):
    """torch 2.13.0's fused SGD is refused in bfloat16 (its step is wrong there): the SGD target
    falls to the fastest stand-in that ran; in float32 the fused one is the fastest."""
    target = common.Target("lars paper", "torch SGD fused", 1.5,
                           stand_ins=("torch SGD for-loop", "torch SGD foreach"))
    part(tmp_path, "torch", [
        measurement("set", {"torch SGD fused": 10.0, "torch SGD for-loop": 25.0, "torch SGD foreach": 30.0,
                            "lars paper": 20.0}),
        measurement("set", {"torch SGD for-loop": 16.0, "torch SGD foreach": 13.0, "lars paper": 39.0},
                    dtype="bfloat16", not_measured={"torch SGD fused": "failed: WrongStep: not SGD's step"}),
    ], [dataclasses.asdict(target)])
    report = merge.combine(merge.load_parts([tmp_path]))
    found = {t["dtype"]: (t["anchor"], t["ratio"]) for t in report["targets"]}
    assert found == {"float32": ("torch SGD fused", 2.0), "bfloat16": ("torch SGD foreach", 3.0)}
    assert "failed: WrongStep: not SGD's step" in merge.text(report)


def numpy_sgd(*, moves_weights=True, momentum=0.9):
    """An SGD on NumPy float32 arrays in Keras's velocity form (`v = m·v - lr·u`, `w += v`), as a
    `common.Build`; `moves_weights=False` is torch 2.13.0's fused bfloat16 bug."""
    def build(tensors, dtype):
        ws = [w.copy() for _, w, _ in tensors]
        vs = [np.zeros_like(w) for w in ws]

        def step():
            for w, v, (_, _, g) in zip(ws, vs, tensors, strict=True):
                v *= np.float32(momentum)
                v -= np.float32(0.1) * (g + np.float32(1e-4) * w)
                if moves_weights:
                    w += v
        return step, lambda: ws
    return build


def test_an_anchor_is_checked_to_compute_sgds_step_before_it_is_timed():
    probe = common.probe_tensors()
    assert all(not (x.view(np.uint32) & 0xFFFF).any() for _, w, g in probe for x in (w, g))  # bfloat16
    assert max(w.size for _, w, _ in probe) > 512 // 16  # longer than a 512-bit register of bfloat16
    hp = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
    for dtype in ("float32", "bfloat16"):  # bfloat16: the float32 step, within bfloat16's roundings
        common.checked(numpy_sgd(), **hp)(probe, dtype)()
        with pytest.raises(common.WrongStep, match=f"in {dtype} here: .* weights wrong after 2 steps"):
            common.checked(numpy_sgd(moves_weights=False), **hp)(probe, dtype)
    with pytest.raises(common.WrongStep, match="1071 of 1071 weights wrong after 2 steps"):
        common.checked(numpy_sgd(momentum=0.0), **hp)(probe, "float32")
