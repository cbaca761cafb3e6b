"""The parity report: every flavor on every available backend (and, on request, the real peer
libraries), against the core's reference.

Two problems:
- the synthetic conformance problem (`lars.conformance.cases`): every selected flavor x every
  case, per driver and dtype; a row is the worst deviation over the cases, pass/fail against the
  tolerance policy, time per step, and the worst deviation at each step (for the plots);
- the training problem (`lars.parity.digits`): the configured optimizer (default: MLPerf
  ResNet-50 LARS hyperparameters) trains the same MLP on the same digits batches in every
  framework, each with its own gradients and its own adapter; losses and per-layer trust ratios
  per step are laid over each other.

Each environment writes a part (`parity.json`); `merge` joins parts into one report, which
`lars.parity.html` turns into a page with plots.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from lars import __version__
from lars.conformance.cases import CASES
from lars.conformance.drivers import DRIVERS, get_driver
from lars.conformance.peers import PEERS
from lars.conformance.runner import CaseResult, run_case
from lars.core.config import Config, default_config
from lars.core.flavors import FLAVORS
from lars.parity.progress import Progress

FORMAT = "lars-parity-report"
VERSION = 2


@dataclass(frozen=True)
class Row:
    """One driver (or peer) in one dtype and flavor over all cases."""

    driver: str
    flavor: str
    dtype: str
    cases: int
    failed: list[str]
    refused: list[str]
    max_deviation: float
    tolerance: float
    ms_per_step: float
    kind: str = "adapter"
    deviation_per_step: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failed


def why_not(driver: str) -> str | None:
    """None if `driver` can run in this environment, else why not."""
    try:
        return get_driver(driver).unavailable_reason()
    except ImportError as exc:
        return f"its framework is not installed here ({exc})"


def unavailable(drivers: Iterable[str]) -> dict[str, str]:
    """driver, peer or backend -> why it is not in this report."""
    return {d: reason for d in drivers if (reason := why_not(d)) is not None}


def summarise(results: Sequence[CaseResult], kind: str) -> Row:
    first, ran = results[0], [r for r in results if not r.refused]
    steps = max((len(r.deviation_per_step) for r in ran), default=0)
    per_step = [max((r.deviation_per_step[t] for r in ran if t < len(r.deviation_per_step)), default=0.0)
                for t in range(steps)]
    return Row(
        driver=first.driver, flavor=first.flavor, dtype=first.dtype, cases=len(results),
        failed=[r.case for r in results if not r.passed and not r.refused],
        refused=[r.case for r in results if r.refused],
        max_deviation=max((r.max_deviation for r in ran), default=0.0),
        tolerance=first.tolerance,
        ms_per_step=1e3 * float(np.mean([r.seconds_per_step for r in ran])) if ran else 0.0,
        kind=kind, deviation_per_step=per_step,
    )


def plan_runs(drivers: Iterable[str], flavors: Sequence[str]) -> list[tuple[str, str, str]]:
    """(driver, dtype, flavor) for every driver that can run here; a peer only in its flavor."""
    runs = []
    for name in drivers:
        if why_not(name) is not None:
            continue
        driver = get_driver(name)
        own = getattr(driver, "flavor", None)
        for dtype in driver.dtypes:
            runs += [(name, dtype, f) for f in flavors if own is None or f == own]
    return runs


def run(drivers: Iterable[str], flavors: Sequence[str], cases: Sequence[str],
        progress: Progress | None = None) -> list[Row]:
    runs = plan_runs(drivers, flavors)
    bar = progress or Progress(len(runs) * len(cases))
    rows = []
    for name, dtype, flavor in runs:
        driver, results = get_driver(name), []
        for case in cases:
            results.append(run_case(driver, flavor, case, dtype))
            bar.advance(f"{name} {dtype} {flavor} {case}")
        rows.append(summarise(results, "peer" if name in PEERS else "adapter"))
    bar.close()
    return rows


def table(rows: Sequence[Row]) -> Table:
    out = Table("backend", "dtype", "flavor", Column("max deviation", justify="right"),
                Column("tolerance", justify="right"), "result", Column("ms/step", justify="right"), "notes",
                box=box.SIMPLE_HEAD, title="conformance problem")
    for r in rows:
        notes = "; ".join([*([f"refused {len(r.refused)}/{r.cases}"] if r.refused else []),
                           *([f"failed: {', '.join(r.failed)}"] if r.failed else [])])
        out.add_row(r.driver, r.dtype, r.flavor, f"{r.max_deviation:.3g}", f"{r.tolerance:.0e}",
                    "pass" if r.passed else "[bold red]FAIL[/]", f"{r.ms_per_step:.3f}", escape(notes))
    return out


def training_table(training: Mapping[str, Any]) -> Table | None:
    if not training.get("traces"):
        return None
    out = Table("backend", "dtype", *(Column(h, justify="right") for h in (
                "final loss", "test acc", "loss dev", "param dev", "tolerance")), "result",
                Column("ms/step", justify="right"), box=box.SIMPLE_HEAD,
                title=f"training problem: {escape(str(training['problem']))}")
    for t in training["traces"]:
        c = t.get("comparison") or {}
        out.add_row(t["backend"], t["dtype"], f"{t['losses'][-1]:.4f}", f"{t['test_accuracy']:.3f}",
                    f"{c.get('loss_deviation', 0.0):.2g}", f"{c.get('param_deviation', 0.0):.2g}",
                    f"{c.get('tolerance', 0.0):.0e}",
                    "pass" if c.get("passed", True) else "[bold red]FAIL[/]",
                    f"{1e3 * t['seconds_per_step']:.3f}")
    return out


def console() -> Console:
    """stdout; in a log (not a terminal), wide enough that a table's rows are not wrapped."""
    found = Console(highlight=False)
    if not found.is_terminal:
        found.width = max(found.width, 160)
    return found


def write_json(data: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    temporary.replace(path)
    return path


def read_json(folder: Path) -> dict[str, Any]:
    path = folder / "parity.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"{path}: no parity report there (run `lars parity --out {folder}` first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:  # one line, not a traceback
        raise SystemExit(f"{path} is not a parity report ({exc}): run `lars parity --out {folder}` "
                         "again; nothing was written") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path} is not a parity report (a JSON {type(data).__name__}, not an object): "
                         f"run `lars parity --out {folder}` again; nothing was written")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise SystemExit(f"{path}: format {data.get('format')!r} version {data.get('version')!r} is not "
                         f"{FORMAT!r} version {VERSION}: made by another lars; run it again with this one")
    return data


def passed(data: Mapping[str, Any]) -> bool:
    rows_ok = all(not r["failed"] for r in data["rows"])
    traces = data.get("training", {}).get("traces", [])
    return rows_ok and all((t.get("comparison") or {}).get("passed", True) for t in traces)


def finish(data: dict[str, Any], out: Path, note: str = "") -> int:
    """Prints the tables and the missing backends, writes the JSON and the page; 0 if all passed."""
    shown = console()
    shown.print(table([Row(**{k: v for k, v in r.items() if k != "passed"}) for r in data["rows"]]))
    training = training_table(data.get("training", {}))
    if training is not None:
        shown.print(training)
    for backend, reason in data["unavailable"].items():
        print(f"{backend}: not in this report: {reason}")
    path = write_json(data, out / "parity.json")
    from lars.parity import html

    page, why = html.write(data, out)
    print(f"\nreport: {path.resolve()}{note}")
    print(f"page:   {page.resolve()}" + (f" ({why})" if why else ""))
    return 0 if passed(data) else 1


def document(rows: Sequence[Row], reasons: Mapping[str, str], training: Mapping[str, Any],
             config: Mapping[str, Any], atlas: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report as JSON; `atlas` is `lars.parity.atlas.atlas()`'s matrices (absent: None)."""
    return {
        "format": FORMAT, "version": VERSION, "lars": __version__, "python": sys.version.split()[0],
        "numpy": np.__version__, "machine": platform.platform(), "cases": list(CASES),
        "config": dict(config), "rows": [{**asdict(r), "passed": r.passed} for r in rows],
        "training": dict(training), "unavailable": dict(reasons),
        "atlas": dict(atlas) if atlas else None,
    }


def merge(parts: Sequence[Path], out: Path) -> int:
    """One report from the reports of several environments (each backend runs in its own)."""
    reports = [read_json(p) for p in parts]
    rows = [r for rep in reports for r in rep["rows"]]
    # A driver is missing from the merged report only if it could run in none of the parts.
    missing = set.intersection(*(set(rep["unavailable"]) for rep in reports)) if reports else set()
    reasons = {k: v for rep in reports for k, v in rep["unavailable"].items() if k in missing}
    traces: dict[tuple[str, str], Any] = {}
    for rep in reports:  # every part trains the reference: keep one
        for t in rep.get("training", {}).get("traces", []):
            traces.setdefault((t["backend"], t["dtype"]), t)
    first = reports[0] if reports else {}
    training = {**first.get("training", {}), "traces": list(traces.values())}
    # The atlas runs on the NumPy reference only: every part measures the same one.
    atlas = next((rep["atlas"] for rep in reports if rep.get("atlas")), None)
    data = document([], reasons, training, first.get("config", {}), atlas)
    data["rows"] = rows
    return finish(data, out, f" (merged from {len(parts)} environments)")


def main(out: Path, flavors: Sequence[str] | None = None, *, peers: bool = False,
         config: Config | None = None, training: bool = True) -> int:
    config = default_config() if config is None else config
    drivers = [*DRIVERS, *(PEERS if peers else ())]
    reasons = unavailable(drivers)
    chosen = list(flavors or FLAVORS)
    print(f"lars {__version__} parity report: {len(CASES)} cases x {len(chosen)} flavors"
          + (" with the peer libraries" if peers else "") + f"; training problem with {config.source}")
    rows = run(drivers, chosen, list(CASES))
    trained: dict[str, Any] = {}
    if training:
        from lars.parity import training as training_problem

        try:
            trained = training_problem.run(config)
        except ImportError as exc:  # scikit-learn (the digits) is missing
            reasons["training problem"] = str(exc)
        else:
            reasons |= {f"training: {b}": why for b, why in trained.pop("unavailable").items()}
    found: dict[str, Any] | None = None
    print(f"atlas: every flavor against every other ({len(FLAVORS)} runs of the reference)", flush=True)
    try:
        from lars.parity.atlas import atlas

        found = atlas(config)
    except ImportError as exc:  # scikit-learn (the digits) is missing
        reasons["atlas"] = str(exc)
    print()
    described = {"source": str(config.source), "toml": config.to_toml()}
    return finish(document(rows, reasons, trained, described, found), out)
