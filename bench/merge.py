"""The benchmark's report from its parts (one JSON file per backend, `bench.run`): the table on
the terminal, `bench.json`, `table.md` and the plots (`bench.plots`, when matplotlib is there).

    python -m bench.merge bench/results/parts/main bench/results/parts/mxnet --out bench/results

Every ratio compares two step times measured in the same process, minutes apart: compare
ratios, never absolute times across runs. NumPy-free (it runs in any environment).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.shapes import TITLES

BACKENDS = ("torch", "jax", "keras", "mxnet")
Table = tuple[list[str], list[list[str]]]


def load_parts(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Every part in the folders, in backend order; a folder holds one `<backend>.json` each."""
    parts = [json.loads(p.read_text()) for folder in folders for p in sorted(folder.glob("*.json"))]
    order = {b: i for i, b in enumerate(BACKENDS)}
    return sorted(parts, key=lambda p: order.get(p["backend"], len(order)))


def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report: a row per measured variant, why anything is missing, the targets."""
    ran = [p for p in parts if "unavailable" not in p]
    names = {p["backend"] for p in ran}
    unavailable = {p["backend"]: p["unavailable"] for p in parts
                   if "unavailable" in p and p["backend"] not in names}
    unavailable |= {b: "no part for it was given" for b in BACKENDS
                    if b not in names and b not in unavailable}
    rows, missing = [], []
    for part in ran:
        for m in part["measurements"]:
            where = {k: m[k] for k in ("kind", "set", "tensors", "parameters", "dtype")}
            for variant, ms in m["ms"].items():
                rows.append({"backend": part["backend"], **where, "variant": variant, "ms": ms,
                             "per_pass_ms": m["per_pass_ms"][variant], "triad_gbps": m["triad_gbps"],
                             "gbps": m.get("gbps", m["triad_gbps"]), "bound_ms": m["bound_ms"],
                             "bound_fraction": m["bound_ms"] / ms})
            missing += [{"backend": part["backend"], **where, "variant": v, "why": why}
                        for v, why in m["not_measured"].items()]
    return {
        "quick": sorted({bool(p.get("quick")) for p in parts}),
        "backends": {p["backend"]: {k: p[k] for k in ("versions", "machine", "python", "numpy")}
                     for p in ran},
        "unavailable": unavailable,
        "incomplete": {p["backend"]: p.get("stopped", "its process stopped before the end")
                       for p in ran if p.get("complete") is False},
        "unsupported": [{"backend": p["backend"], "dtype": d, "why": why}
                        for p in ran for d, why in p["unsupported"].items()],
        "rows": rows, "not_measured": missing, "targets": targets(ran, rows),
    }


def targets(parts: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of each backend, on each set and dtype where ours and an anchor ran (the fastest
    of the target's anchor and stand-ins that ran), with its floor:
    the ratio our step would have if it moved its bytes at the attained bandwidth (`bound_ms`)."""
    ms = {(r["backend"], r["set"], r["dtype"], r["variant"]): r["ms"] for r in rows if r["kind"] == "set"}
    out = []
    for part in parts:
        for m in (m for m in part["measurements"] if m["kind"] == "set"):
            for t in part["targets"]:
                key = (part["backend"], m["set"], m["dtype"])
                ran = {a: ms[(*key, a)] for a in (t["anchor"], *t.get("stand_ins", ())) if (*key, a) in ms}
                ours = ms.get((*key, t["ours"]))
                if ours is not None and ran:
                    name = min(ran, key=ran.__getitem__)  # the fastest of those that ran (were right)
                    anchor = ran[name]
                    out.append({"backend": part["backend"], "set": m["set"], "dtype": m["dtype"], **t,
                                "anchor": name, "ratio": ours / anchor, "met": ours / anchor <= t["limit"],
                                "floor": m["bound_ms"] / anchor, "at_bound": m["bound_ms"] / ours,
                                "gbps": m.get("gbps", m["triad_gbps"])})
    return out


def why_missed(t: dict[str, Any]) -> str:
    """What a missed target's own measurement says: unreachable at this bandwidth (the bytes our
    step must move take longer than the target allows), or time beyond moving them."""
    if t["met"]:
        return ""
    if t["floor"] > t["limit"]:
        return f"bytes: at {t['gbps']:.0f} GB/s our step's bytes alone are {t['floor']:.2f}x"
    return f"time beyond the bytes: our step runs at {t['at_bound']:.2f} of the bound"


def set_title(row: dict[str, Any]) -> str:
    return f"{TITLES.get(row['set'], row['set'])}: {row['tensors']} tensors, {row['parameters']:,} parameters"


def steps_table(report: dict[str, Any], set_name: str) -> Table:
    """One parameter set: every variant's step time and its fraction of the memory bound."""
    rows = [[r["backend"], r["dtype"], r["variant"], f"{r['ms']:.1f}", spread(r["per_pass_ms"]),
             f"{r['bound_fraction']:.2f}"]
            for r in report["rows"] if r["kind"] == "set" and r["set"] == set_name]
    rows += [[m["backend"], m["dtype"], m["variant"], "-", "-", m["why"]]
             for m in report["not_measured"] if m["kind"] == "set" and m["set"] == set_name]
    rows += [[u["backend"], u["dtype"], "(all)", "-", "-", f"not supported: {u['why']}"]
             for u in report["unsupported"]]
    order = {b: i for i, b in enumerate(BACKENDS)}
    rows.sort(key=lambda r: (order.get(r[0], len(order)), r[1] != "float32"))
    return ["backend", "dtype", "variant", "ms/step", "spread", "bound/step"], rows


def spread(per_pass: Sequence[float]) -> str:
    """The slowest pass over the fastest: how far the machine moved during the measurement."""
    return f"{max(per_pass) / min(per_pass):.1f}x" if per_pass and min(per_pass) > 0 else "-"


def targets_table(report: dict[str, Any]) -> Table:
    rows = [[TITLES.get(t["set"], t["set"]), t["backend"], t["dtype"], t["ours"], t["anchor"],
             f"{t['ratio']:.2f}", f"<= {t['limit']:g}", f"{t['floor']:.2f}", "met" if t["met"] else "MISSED",
             why_missed(t)] for t in report["targets"]]
    return ["set", "backend", "dtype", "ours", "anchor", "ratio", "target", "floor", "result", "why"], rows


def short(n: int) -> str:
    """A count in two significant digits: 99k, 1.0M, 100M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if n >= scale:
            value = n / scale
            return f"{value:.1f}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return str(n)


def sweep_table(report: dict[str, Any], kind: str) -> Table:
    """Step time (ms) of each swept variant at each point; the LARS bound as the last row."""
    swept = [r for r in report["rows"] if r["kind"] == kind]
    axis = "parameters" if kind == "parameters" else "tensors"
    points = sorted({r[axis] for r in swept})
    series: dict[str, dict[int, str]] = {}
    for r in swept:
        series.setdefault(f"{r['backend']}: {r['variant']}", {})[r[axis]] = f"{r['ms']:.1f}"
    bound = {p: min(r["bound_ms"] for r in swept if r[axis] == p) for p in points}
    rows = [[name, *(values.get(p, "-") for p in points)] for name, values in series.items()]
    rows.append(["LARS bound (28 B/param at the attained bandwidth)", *(f"{bound[p]:.1f}" for p in points)])
    return [f"ms/step at {axis}", *(short(p) for p in points)], rows


def sweep_note(report: dict[str, Any], kind: str) -> str:
    swept = [r for r in report["rows"] if r["kind"] == kind]
    if not swept:
        return ""
    if kind == "parameters":
        return f"against the parameter count ({swept[0]['tensors']} equal tensors, float32)"
    return f"against the tensor count (about {short(swept[0]['parameters'])} parameters, float32)"


def render(table: Table, markdown: bool = False) -> str:
    header, rows = table
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])
    columns = list(zip(header, *(r[:len(header)] for r in rows), strict=True))
    widths = [max(len(c) for c in column) for column in columns]
    widths[-1] = min(widths[-1], 12)  # the last column may hold a long reason: let it run on
    numeric = [any(c[:1].isdigit() for c in column[1:]) for column in columns]

    def line(cells: Sequence[str], head: bool = False) -> str:  # numbers right-aligned
        return "  ".join(c.rjust(w) if number and (head or c[:1].isdigit() or c == "-") else c.ljust(w)
                         for c, w, number in zip(cells, widths, numeric, strict=True)).rstrip()
    return "\n".join([line(header, True), "-" * len(line(header, True)), *(line(r) for r in rows)])


def text(report: dict[str, Any], markdown: bool = False) -> str:
    """The whole report as text (terminal) or Markdown (docs)."""
    heading = "### " if markdown else ""
    sections = []
    for set_name in dict.fromkeys(r["set"] for r in report["rows"] if r["kind"] == "set"):
        first = next(r for r in report["rows"] if r["set"] == set_name)
        sections.append(f"{heading}{set_title(first)}\n\n{render(steps_table(report, set_name), markdown)}")
    if report["targets"]:
        sections.append(f"{heading}Targets (ratio of step times, same process)\n\n"
                        f"{render(targets_table(report), markdown)}")
    for kind in ("parameters", "tensors"):
        if note := sweep_note(report, kind):
            sections.append(f"{heading}Step time {note}\n\n{render(sweep_table(report, kind), markdown)}")
    for m in report["not_measured"]:
        if m["kind"] != "set":
            sections.append(f"{m['backend']} {m['variant']} at {m['tensors']:,} tensors: "
                            f"not measured: {m['why']}")
    sections += [f"{b}: not in this report: {why}" for b, why in report["unavailable"].items()]
    sections += [f"{b}: only part of its measurements: {why}" for b, why in report["incomplete"].items()]
    if report["quick"] != [False]:
        sections.append("(a --quick run: one pass of two steps; smoke, not measurement)")
    return "\n\n".join(sections)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.merge", description=__doc__.splitlines()[0])
    parser.add_argument("parts", type=Path, nargs="+", help="folders of parts (bench.run --parts)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    report = combine(load_parts(args.parts))
    print(text(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2))
    (args.out / "table.md").write_text(text(report, markdown=True) + "\n")
    written = [args.out / "bench.json", args.out / "table.md"]
    if not args.no_plots:
        try:
            from bench import plots
        except ImportError as exc:
            print(f"\nplots: not made, matplotlib is not installed here ({exc})")
        else:
            written += plots.write_all(report, args.out)
    print("\nwritten: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
