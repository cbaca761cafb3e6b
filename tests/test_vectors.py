"""`lars vectors`: the exported vectors round-trip through an implementation that reads only
them (the reference, fed their JSON), a one-axis mutant fails at the step and tensor where it
parts, the files follow the published schema, and a consumer in another language (C, compiled
here) implements the yscv flavor from the specification and passes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from lars.cli import main
from lars.conformance import vectors
from lars.core import reference
from lars.core.flavors import FLAVORS
from lars.core.hyperparams import Hyperparams
from lars.core.state import State

C_CONSUMER = Path(__file__).resolve().parent.parent / "vectors" / "c" / "lars_yscv.c"


def results_of(v: dict[str, Any], hp: Hyperparams, buffers: bool = True) -> dict[str, Any]:
    """What an implementation reading only the vector's JSON computes, as a results file: here
    the reference's `step`, given `hp` (the vector's own hyperparameters, or a mutant's)."""
    shapes = {t["name"]: tuple(t["shape"]) for t in v["tensors"]}
    params = {n: np.reshape(v["initial_weights"][n], s) for n, s in shapes.items()}
    state, steps = State(), []
    for s in v["steps"]:
        grads = {n: np.reshape(s["grads"][n], shapes[n]) for n in shapes}
        result = reference.step(params, grads, state, hp, s["lr"])
        params, state = result.params, result.state
        steps.append({"weights": vectors.flat(params), "trust_ratios": result.trust_ratios,
                      **({"buffers": vectors.flat(state.momentum_buffers)} if buffers else {})})
    return {"format": vectors.RESULTS_FORMAT, "version": 1, "steps": steps}


def write_results(results: Path, name: str, data: dict[str, Any]) -> None:
    results.mkdir(exist_ok=True)
    (results / name).write_text(json.dumps(data))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vectors")
    assert main(["vectors", "export", str(out), "--steps", "4", "--dtype", "float64",
                 "--dtype", "float32"]) == 0
    return out


def test_every_flavor_and_stream_case_is_exported_with_its_npz(exported):
    stems = {p.stem for p in exported.glob("*.json")}
    assert stems == {f"{f}.{c}.{d}" for f in FLAVORS for c in vectors.stream_cases()
                     for d in ("float64", "float32")}
    assert "loss_gradients" not in vectors.stream_cases()  # its gradients depend on the weights
    v = json.loads((exported / "mlperf.momentum_weight_decay.float64.json").read_text())
    arrays = np.load(exported / "mlperf.momentum_weight_decay.float64.npz")
    np.testing.assert_array_equal(arrays["3/weights/dense_weight"].reshape(-1),
                                  v["steps"][3]["weights"]["dense_weight"])
    assert arrays["initial/conv1_weight"].shape == (4, 3, 3, 3)
    # MLPerf's name rules, resolved: a consumer need not implement them.
    plans = {t["name"]: (t["weight_decay"], t["adapt"]) for t in v["tensors"]}
    assert plans["dense_bias"] == (0.0, False) and plans["dense_weight"] == (1e-2, True)


def test_float32_vectors_hold_float32_inputs(exported):
    v = json.loads((exported / "paper.magnitudes.float32.json").read_text())
    for values in (v["initial_weights"]["conv1_weight"], v["steps"][2]["grads"]["dense_weight"]):
        x = np.array(values)
        np.testing.assert_array_equal(x.astype(np.float32).astype(np.float64), x)
    assert v["tolerance"] == 1e-5


def test_the_files_follow_the_published_schema(exported):
    schema = json.loads(vectors.SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in sorted(exported.glob("*.json"))[::7]:
        jsonschema.validate(json.loads(path.read_text()), schema)


def test_the_reference_passes_its_own_vectors(exported, tmp_path):
    for path in exported.glob("*.json"):
        v = json.loads(path.read_text())
        write_results(tmp_path, path.name, results_of(v, Hyperparams.from_dict(v["hyperparams"])))
    grades = vectors.check(exported, tmp_path)
    assert len(grades) == 2 * len(FLAVORS) * len(vectors.stream_cases())
    assert all(g.passed for g in grades), [g.line() for g in grades if not g.passed][:5]


def test_a_one_axis_mutant_fails_at_the_step_and_tensor_where_it_parts(exported, tmp_path, capsys):
    # Heavy-ball and SGD-style momentum take the same first step, and part at step 2 only
    # because this case's lr changes between steps (the buffers differ from step 1: left out).
    v = json.loads((exported / "paper.warmup_poly_schedule.float64.json").read_text())
    mutant = Hyperparams.from_dict(v["hyperparams"]).replace(momentum_style="sgd")
    write_results(tmp_path, "paper.warmup_poly_schedule.float64.json", results_of(v, mutant, buffers=False))
    assert main(["vectors", "check", str(exported), str(tmp_path), "--flavor", "paper"]) == 1
    out = capsys.readouterr().out
    assert "FAIL paper.warmup_poly_schedule.float64: step 2, tensor conv1_weight: weights deviate" in out
    assert "FAIL paper.flavor_defaults.float64: no results" in out
    # The split denominator against the combined one: from the first step, in the first tensor.
    v = json.loads((exported / "paper.momentum_weight_decay.float64.json").read_text())
    grade = vectors.grade(v, results_of(v, Hyperparams.from_dict(v["hyperparams"]).replace(
        trust_denominator="combined")))
    assert not grade.passed and grade.failure is not None
    assert grade.failure.startswith("step 1, tensor conv1_weight: weights deviate")


def test_unreadable_results_fail_the_vector_and_bad_arguments_are_refused(exported, tmp_path, capsys):
    v = json.loads((exported / "yscv.nesterov.float64.json").read_text())
    assert vectors.grade(v, {"steps": []}).failure == "4 steps expected, results have 0"
    bad = results_of(v, Hyperparams.from_dict(v["hyperparams"]))
    bad["steps"][1]["weights"]["temperature"] = "x"
    assert vectors.grade(v, bad).failure == ("step 2, tensor temperature: weights deviate by inf "
                                             "(tolerance 1e-12)")
    del bad["steps"][1]["weights"]["bn_gamma"]
    assert vectors.grade(v, bad).failure == "step 2, tensor bn_gamma: no weights in the results"
    (tmp_path / "yscv.nesterov.float64.json").write_text("{not json")
    assert main(["vectors", "check", str(exported), str(tmp_path), "--flavor", "yscv"]) == 2
    assert "not a readable results file" in capsys.readouterr().err
    assert main(["vectors", "export", str(tmp_path / "x"), "--case", "loss_gradients"]) == 2
    assert main(["vectors", "export", str(tmp_path / "x"), "--steps", "0"]) == 2
    assert not (tmp_path / "x").exists()


def test_a_c_consumer_of_the_yscv_flavor_passes(exported, tmp_path):
    """vectors/c/lars_yscv.c: the yscv rule from the specification, in C99 with no dependency."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler (Debian's gcc) is needed: apt-get install gcc"
    binary = tmp_path / "lars_yscv"
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o", str(binary),
                    str(C_CONSUMER), "-lm"], check=True)
    results = tmp_path / "results"
    results.mkdir()
    for path in exported.glob("yscv.*.json"):
        subprocess.run([str(binary), str(path), str(results / path.name)], check=True)
    grades = vectors.check(exported, results, ["yscv"])
    assert len(grades) == 2 * len(vectors.stream_cases())
    assert all(g.passed for g in grades), [g.line() for g in grades if not g.passed]
    # It implements yscv, and says so when given another rule.
    refused = subprocess.run([str(binary), str(exported / "timm.dampening.float64.json"),
                              str(results / "timm.json")], capture_output=True, text=True)
    assert refused.returncode == 2 and "not yscv's: momentum_style" in refused.stderr
