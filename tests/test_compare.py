"""`lars compare` (issue 19): two runs of the digits MLP recorded by the core's rule on NumPy;
the same run agrees, and each injected difference is found at its first step with its cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lars
from lars import Exclude
from lars.cli import main
from lars.core.trace import load_trace
from lars.parity.compare import compare
from lars.parity.digits import Problem, default_hyperparams
from lars.parity.traces import record_numpy

STEPS = 12
PROBLEM = Problem(steps=STEPS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("traces")
    no_bias_rule = default_hyperparams().replace(exclude_from_weight_decay=Exclude(),
                                                 exclude_from_adaptation=Exclude())
    variants = {
        "base": {}, "again": {},
        "flavor": {"hp": lars.hyperparams("optax", lr=3.0, weight_decay=1e-4)},
        "bias_not_excluded": {"hp": no_bias_rule},
        "data_order": {"batches": PROBLEM.batches()[::-1]},
        "init": {"params": Problem(seed=1, steps=STEPS).initial_params()},
        "nesterov": {"hp": default_hyperparams().replace(nesterov=True)},
        "float32": {"dtype": "float32"},
    }
    return {name: record_numpy(folder / f"{name}.npz", problem=PROBLEM, **kw)
            for name, kw in variants.items()}


def test_the_same_run_agrees(runs):  # type: ignore[no-untyped-def]
    result = compare(load_trace(runs["base"]), load_trace(runs["again"]))
    assert result.agree and len(result.steps) == STEPS and len(result.tensors) == 6


@pytest.mark.parametrize("variant,step,tensor,cause,setting", [
    ("flavor", 0, "dense1/kernel", "settings", "trust_denominator"),  # optax: combined denominator
    ("bias_not_excluded", 0, "dense1/bias", "exclusions", "exclude_from_adaptation"),
    ("data_order", 0, "dense1/kernel", "gradients", None),
    ("init", 0, "dense1/kernel", "initialisation", None),
    ("nesterov", 1, "dense1/kernel", "update rule", "nesterov"),  # the warm-up's lr is 0 at step 0
])
def test_an_injected_difference_is_found_at_its_step_with_its_cause(runs, variant, step, tensor, cause,
                                                                    setting):  # type: ignore[no-untyped-def]
    d = compare(load_trace(runs["base"]), load_trace(runs[variant])).divergence
    assert d is not None
    assert (d["step"], d["tensor"], d["cause"]) == (step, tensor, cause), d
    if setting is not None:
        assert setting in d["settings"], d["settings"]


def test_the_tolerance_follows_the_coarser_dtype(runs):  # type: ignore[no-untyped-def]
    result = compare(load_trace(runs["base"]), load_trace(runs["float32"]))
    assert result.rounding == 2.0**-24
    assert result.operations == 2 * 12 + 16  # the largest tensor: 64 x 64 = 4096 = 2^12 elements
    assert result.tolerance(0) == pytest.approx(40 * 2.0**-24)
    # The float32 run of the same rule lies within float32's rounding of the float64 one.
    assert result.agree, result.divergence


def test_a_name_map_lines_up_renamed_tensors(runs, tmp_path):  # type: ignore[no-untyped-def]
    trace = load_trace(runs["base"])
    renamed = {n: n.replace("/", ".").replace("kernel", "weight") for n in trace.names}
    other = lars.core.trace.Trace(trace.framework, trace.dtype, tuple(renamed[n] for n in trace.names),
                                  trace.shapes, trace.hyperparams, trace.step, trace.lr, trace.loss,
                                  trace.columns)
    path = lars.core.trace.save_trace(tmp_path / "renamed.npz", other)
    names = tmp_path / "names.toml"
    names.write_text("[tensors]\n" + "".join(f'"{a}" = "{b}"\n' for a, b in renamed.items()))
    assert main(["compare", str(runs["base"]), str(path), "--names", str(names)]) == 0
    with pytest.raises(lars.core.trace.TraceError, match="no tensor of A has a counterpart"):
        compare(trace, other)


def test_the_command_exits_0_1_2_and_writes_an_offline_page(runs, tmp_path, capsys):  # type: ignore
    assert main(["compare", str(runs["base"]), str(runs["again"])]) == 0
    assert "the runs agree" in capsys.readouterr().out
    page = tmp_path / "compare.html"
    assert main(["compare", str(runs["base"]), str(runs["bias_not_excluded"]), "--html", str(page)]) == 1
    out = capsys.readouterr().out
    assert "the runs part at step 0, tensor dense1/bias" in out and "exclude_from_adaptation" in out
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 6 and "http" not in text.replace("http-equiv", "")
    assert main(["compare", str(runs["base"]), str(tmp_path / "missing.npz")]) == 2
    assert "not a lars trace" in capsys.readouterr().err


def test_a_nan_against_a_number_is_a_divergence(runs, tmp_path):  # type: ignore[no-untyped-def]
    trace = load_trace(runs["base"])
    columns = {q: c.copy() for q, c in trace.columns.items()}
    columns["grad_norm"][3, 2] = np.nan
    broken = lars.core.trace.Trace(trace.framework, trace.dtype, trace.names, trace.shapes, trace.hyperparams,
                                   trace.step, trace.lr, trace.loss, columns)
    d = compare(trace, broken).divergence
    assert d is not None and (d["step"], d["tensor"], d["cause"]) == (3, trace.names[2], "gradients")
