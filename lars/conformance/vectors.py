"""Language-neutral test vectors: the reference on every flavor and stream-gradient case, for an
implementation in any language to check itself against (`lars vectors export` and `check`).

A vector is one (flavor, case, dtype): the hyperparameters, each tensor's name, shape, weight
decay and whether it is adapted (the flavor's exclusion rules resolved, so that a consumer need
not implement name rules), every step's learning rate, the initial weights and, per step, the
gradients fed and the reference's weights, momentum buffers and trust ratios after the step.
Arrays are flat lists in row-major order. Each vector is a JSON file, `FLAVOR.CASE.DTYPE.json`
(schema: `vectors.schema.json` beside this module), with the same arrays in a `.npz` beside it.

A float32 vector's inputs are float32 values and its outputs the float64 reference's from them,
graded at 1e-5; a float64 vector's at 1e-12 (the conformance policy, `runner.TOLERANCES`).
Deviations are measured as the conformance suite measures them: against the largest magnitude
the reference's tensor (or ratio, or buffer) has reached so far.
"""

from __future__ import annotations

import functools
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from lars.conformance.cases import CASES
from lars.conformance.drivers import ReferenceRun
from lars.conformance.runner import TOLERANCES, case_hyperparams, case_lr, magnitude, relative_deviation
from lars.core.errors import LarsError
from lars.core.files import write_atomically
from lars.core.flavors import FLAVORS
from lars.core.policy import plan

FORMAT, RESULTS_FORMAT, VERSION = "lars-test-vector", "lars-test-results", 1
SCHEMA = Path(__file__).with_name("vectors.schema.json")
#: Steps exported by default (of a case's 100): every flavor and case is then about 45 MB.
STEPS = 10


class VectorError(LarsError):
    """A vectors directory or a results file that cannot be read as one."""


def stream_cases() -> list[str]:
    """The cases whose gradients do not depend on the weights: the same for every implementation."""
    return [name for name, case in CASES.items() if case.gradients == "stream"]


def vector(flavor: str, case_name: str, dtype: str = "float64", steps: int = STEPS) -> dict[str, Any]:
    """One vector as a JSON-ready dict (see the module)."""
    case = CASES[case_name]
    hp = case_hyperparams(flavor, case)
    start = {n: w.astype(dtype).astype(np.float64) for n, w in case.initial_params().items()}
    run = ReferenceRun(hp, start)
    plans = plan(hp, [(t.name, t.shape) for t in case.tensors])
    records = []
    for t in range(min(steps, case.steps)):
        grads = {n: g.astype(dtype).astype(np.float64) for n, g in case.gradients_at(t, start).items()}
        lr = case_lr(hp, case, t)
        run.step(grads, lr)
        records.append({"lr": lr, "grads": flat(grads), "weights": flat(run.params()),
                        "buffers": flat(run.state().momentum_buffers), "trust_ratios": run.trust_ratios()})
    return {"format": FORMAT, "version": VERSION, "flavor": flavor, "case": case_name,
            "description": case.description, "dtype": dtype, "tolerance": TOLERANCES[dtype],
            "hyperparams": hp.to_dict(),
            "tensors": [{"name": p.name, "shape": list(p.shape), "weight_decay": p.weight_decay,
                         "adapt": p.adapt} for p in plans],
            "initial_weights": flat(start), "steps": records}


def flat(arrays: Mapping[str, Any]) -> dict[str, list[float]]:
    return {n: np.asarray(a, dtype=np.float64).reshape(-1).tolist() for n, a in arrays.items()}


def stem(flavor: str, case: str, dtype: str) -> str:
    return f"{flavor}.{case}.{dtype}"


def export(out: Path, flavors: Iterable[str] = FLAVORS, cases: Iterable[str] | None = None,
           dtypes: Sequence[str] = ("float64",), steps: int = STEPS) -> list[Path]:
    """Writes every (flavor, stream case, dtype) vector into `out`; returns the JSON files."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for flavor in flavors:
        for case in cases or stream_cases():
            for dtype in dtypes:
                v = vector(flavor, case, dtype, steps)
                path = out / f"{stem(flavor, case, dtype)}.json"
                for target, data in ((path, json.dumps(v, allow_nan=False).encode()),
                                     (path.with_suffix(".npz"), npz_bytes(v))):
                    write_atomically(target, functools.partial(write_bytes, data=data))
                written.append(path)
    return written


def write_bytes(f: IO[bytes], data: bytes) -> None:
    f.write(data)


def npz_bytes(v: Mapping[str, Any]) -> bytes:
    """The vector's arrays as `.npz`: `initial/NAME`, `STEP/grads/NAME`, `STEP/weights/NAME`,
    `STEP/buffers/NAME` (shaped), `STEP/trust_ratios` and `lr` (in the tensors' order)."""
    shapes = {t["name"]: tuple(t["shape"]) for t in v["tensors"]}
    arrays = {f"initial/{n}": np.reshape(x, shapes[n]) for n, x in v["initial_weights"].items()}
    arrays["lr"] = np.array([s["lr"] for s in v["steps"]])
    for k, s in enumerate(v["steps"]):
        for part in ("grads", "weights", "buffers"):
            arrays.update({f"{k}/{part}/{n}": np.reshape(x, shapes[n]) for n, x in s[part].items()})
        arrays[f"{k}/trust_ratios"] = np.array([s["trust_ratios"].get(n, np.nan) for n in shapes])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


@dataclass
class Grade:
    """How one implementation did on one vector: `failure` names the first step and tensor."""

    vector: str
    passed: bool
    failure: str | None = None

    def line(self) -> str:
        why = f": {self.failure}" if self.failure else ""
        return f"{'ok  ' if self.passed else 'FAIL'} {self.vector}{why}"


def grade(v: Mapping[str, Any], results: Mapping[str, Any]) -> Grade:
    """Grades `results` (`{"steps": [{"weights": ..., "trust_ratios"?: ..., "buffers"?: ...}]}`)
    against vector `v`, step by step: the first step, tensor and quantity beyond the tolerance."""
    name, tol = stem(v["flavor"], v["case"], v["dtype"]), float(v["tolerance"])
    got = results.get("steps")
    if not isinstance(got, list) or len(got) != len(v["steps"]):
        have = len(got) if isinstance(got, list) else "none"
        return Grade(name, False, f"{len(v['steps'])} steps expected, results have {have}")
    scales = {n: magnitude(np.asarray(w)) for n, w in v["initial_weights"].items()}
    ratio_scales: dict[str, float] = {}
    buffer_scales: dict[str, float] = {}
    for t, (want, have) in enumerate(zip(v["steps"], got, strict=True)):
        scales = {n: max(scales[n], magnitude(np.asarray(w))) for n, w in want["weights"].items()}
        ratio_scales = {n: max(ratio_scales.get(n, 0.0), abs(r)) for n, r in want["trust_ratios"].items()}
        for n, b in want["buffers"].items():
            buffer_scales[n] = max(buffer_scales.get(n, 0.0), magnitude(np.asarray(b)))
        checks = [("weights", want["weights"], scales, True), ("trust_ratios", want["trust_ratios"],
                                                               ratio_scales, False),
                  ("buffers", want["buffers"], buffer_scales, False)]
        for quantity, expected, scale, required in checks:
            given = have.get(quantity) if isinstance(have, Mapping) else None
            if given is None and not required:
                continue
            for n, x in expected.items():
                value = (given or {}).get(n) if isinstance(given, Mapping) else None
                if value is None:
                    return Grade(name, False, f"step {t + 1}, tensor {n}: no {quantity} in the results")
                d = deviation(value, x, scale[n])
                if not d <= tol:
                    return Grade(name, False, f"step {t + 1}, tensor {n}: {quantity} deviate by {d:.3g} "
                                              f"(tolerance {tol:g})")
    return Grade(name, True)


def deviation(value: Any, expected: Any, scale: float) -> float:
    try:
        have = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return math.inf
    want = np.asarray(expected, dtype=np.float64).reshape(-1)
    return relative_deviation(have, want, scale)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VectorError(f"{path}: not a readable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise VectorError(f"{path}: not a {what} (a JSON object expected)")
    return data


def check(vectors: Path, results: Path, flavors: Iterable[str] | None = None) -> list[Grade]:
    """Grades the results in `results` (one `STEM.json` per vector) against `vectors`; a vector
    of the selected flavors without results fails."""
    paths = sorted(vectors.glob("*.json"))
    wanted = set(flavors) if flavors else None
    grades = []
    for path in paths:
        v = read_json(path, "test vector")
        if v.get("format") != FORMAT or v.get("version") != VERSION:
            raise VectorError(f"{path}: not a {FORMAT} version {VERSION} file")
        if wanted is not None and v["flavor"] not in wanted:
            continue
        answer = results / path.name
        if not answer.exists():
            grades.append(Grade(path.stem, False, f"no results ({answer} is missing)"))
            continue
        r = read_json(answer, "results file")
        if r.get("format") != RESULTS_FORMAT:
            grades.append(Grade(path.stem, False, f"{answer}: format {r.get('format')!r}, "
                                                  f"expected {RESULTS_FORMAT!r}"))
            continue
        grades.append(grade(v, r))
    if not grades:
        among = f" of {', '.join(sorted(wanted))}" if wanted else ""
        raise VectorError(f"{vectors}: no test vectors{among}")
    return grades
