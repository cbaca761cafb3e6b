"""Runs the conformance cases on every available driver and summarises them per flavor.

This is the first form of the parity report: a terminal table (driver x flavor: worst
deviation from the reference over the cases, pass/fail against the tolerance policy, time
per step), one line per backend that cannot run here and why, and a JSON file. Backends
join as their drivers land in `lars.conformance.drivers.DRIVERS`.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lars import __version__
from lars.backends import BACKENDS
from lars.conformance.cases import CASES
from lars.conformance.drivers import DRIVERS, get_driver
from lars.conformance.runner import CaseResult, run_case
from lars.core.flavors import FLAVORS


@dataclass(frozen=True)
class Row:
    driver: str
    flavor: str
    dtype: str
    cases: int
    failed: list[str]
    refused: list[str]
    max_deviation: float
    tolerance: float
    ms_per_step: float

    @property
    def passed(self) -> bool:
        return not self.failed


def why_not(driver: str) -> str | None:
    """None if `driver` can run in this environment, else why not."""
    try:
        return get_driver(driver).unavailable_reason()
    except ImportError as exc:
        return f"its framework is not installed here ({exc})"


def unavailable() -> dict[str, str]:
    """driver or backend -> why it is not in this report."""
    reasons = {b: "no adapter yet: its driver has not landed" for b in BACKENDS if b not in DRIVERS}
    reasons |= {d: reason for d in DRIVERS if (reason := why_not(d)) is not None}
    return reasons


def summarise(results: Sequence[CaseResult]) -> Row:
    first = results[0]
    return Row(
        driver=first.driver, flavor=first.flavor, dtype=first.dtype, cases=len(results),
        failed=[r.case for r in results if not r.passed and not r.refused],
        refused=[r.case for r in results if r.refused],
        max_deviation=max((r.max_deviation for r in results if not r.refused), default=0.0),
        tolerance=first.tolerance,
        ms_per_step=1e3 * float(np.mean([r.seconds_per_step for r in results])),
    )


def run(drivers: Iterable[str], flavors: Iterable[str], cases: Sequence[str],
        progress: Callable[[str], None] = print) -> list[Row]:
    rows = []
    for name in drivers:
        if why_not(name) is not None:
            continue
        driver = get_driver(name)
        for dtype in driver.dtypes:
            for flavor in flavors:
                rows.append(summarise([run_case(driver, flavor, c, dtype) for c in cases]))
                progress(f"  {name:<10} {dtype:<8} {flavor:<18} {'ok' if rows[-1].passed else 'FAIL'}")
    return rows


def table(rows: Sequence[Row]) -> str:
    head = f"{'backend':<10} {'dtype':<8} {'flavor':<18} {'max deviation':>13} {'tolerance':>9} " \
           f"{'result':<6} {'ms/step':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.driver:<10} {r.dtype:<8} {r.flavor:<18} {r.max_deviation:>13.3g} "
                     f"{r.tolerance:>9.0e} {'pass' if r.passed else 'FAIL':<6} {r.ms_per_step:>8.3f}"
                     + (f"  refused: {', '.join(r.refused)}" if r.refused else "")
                     + (f"  failed: {', '.join(r.failed)}" if r.failed else ""))
    return "\n".join(lines)


def write_json(rows: Sequence[Row], reasons: dict[str, str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "lars": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
        "machine": platform.platform(), "cases": list(CASES),
        "rows": [{**asdict(r), "passed": r.passed} for r in rows],
        "unavailable": reasons,
    }
    path.write_text(json.dumps(data, indent=2))
    return path


def finish(rows: Sequence[Row], reasons: dict[str, str], out: Path, note: str = "") -> int:
    """Prints the table and the missing backends, writes the JSON; 0 if every row passed."""
    print(table(rows))
    for backend, reason in reasons.items():
        print(f"{backend}: not in this report: {reason}")
    path = write_json(rows, reasons, out / "parity.json")
    print(f"\nreport: {path.resolve()}{note}")
    return 0 if all(r.passed for r in rows) else 1


def merge(parts: Sequence[Path], out: Path) -> int:
    """One report from the reports of several environments (each backend runs in its own)."""
    reports = [json.loads((p / "parity.json").read_text()) for p in parts]
    rows = [Row(**{k: v for k, v in r.items() if k != "passed"}) for rep in reports for r in rep["rows"]]
    # A driver is missing from the merged report only if it could run in none of the parts.
    missing = set.intersection(*(set(rep["unavailable"]) for rep in reports)) if reports else set()
    reasons = {k: v for rep in reports for k, v in rep["unavailable"].items() if k in missing}
    return finish(rows, reasons, out, f" (merged from {len(parts)} environments)")


def main(out: Path, flavors: Sequence[str] | None = None) -> int:
    reasons = unavailable()
    print(f"lars {__version__} parity report: {len(CASES)} cases x {len(flavors or FLAVORS)} flavors")
    rows = run(DRIVERS, flavors or list(FLAVORS), list(CASES))
    print()
    return finish(rows, reasons, out)
