"""MkDocs hook: the benchmark page's figures, drawn at build time from the page's own tables.

The tables of `benchmarks.md` are the results of one run of `nox -s bench` (pasted from its
`table.md`); this hook reads them back and replaces `<!-- bench-plots -->` with the run's
figures (`bench.plots`), so the page's plots cannot disagree with its tables and no generated
file is committed. The build fails if the tables cannot be read.
"""

from __future__ import annotations

import io
import re
from typing import Any

MARKER = "<!-- bench-plots -->"
SUFFIX = {"k": 1e3, "M": 1e6, "G": 1e9}


def count(label: str) -> float:
    """`99k` -> 99000, `10.0M` -> 1e7, `300` -> 300: the sweep tables' column labels."""
    match = re.fullmatch(r"([\d.]+)([kMG]?)", label.strip())
    if match is None:
        raise ValueError(f"benchmarks page: {label!r} is not a count like 99k or 10.0M")
    return float(match.group(1)) * SUFFIX.get(match.group(2), 1.0)


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """Each `#### heading` of the page with the rows (cells) of the table under it."""
    found: dict[str, list[list[str]]] = {}
    heading = None
    for line in markdown.splitlines():
        if line.startswith("#### "):
            heading = line[5:].strip()
            found[heading] = []
        elif heading is not None and line.startswith("|") and not line.startswith("|---"):
            found[heading].append([cell.strip() for cell in line.strip("|").split("|")])
    return found


def report(markdown: str) -> dict[str, Any]:
    """The rows `bench.plots` draws, from the page's set and sweep tables."""
    from bench.shapes import TITLES

    by_title = {title: name for name, title in TITLES.items()}
    rows: list[dict[str, Any]] = []
    for heading, cells in tables(markdown).items():
        title = heading.split(":")[0]
        if title in by_title:
            rows += [{"kind": "set", "set": by_title[title], "backend": b, "dtype": d, "variant": v,
                      "bound_fraction": float(fraction)}
                     for b, d, v, ms, _, fraction in cells[1:] if ms != "-"]
        elif heading.startswith("Step time against the"):
            kind = "parameters" if "parameter count" in heading else "tensors"
            fixed = int(count(re.search(r"about ([\d.]+[kMG]?) parameters", heading).group(1))) \
                if kind == "tensors" else int(re.search(r"\((\d+) equal tensors", heading).group(1))
            points = [count(label) for label in cells[0][1:]]
            bounds = next(row[1:] for row in cells if row[0].startswith("LARS bound"))
            for row in cells[1:]:
                if row[0].startswith("LARS bound"):
                    continue
                backend, variant = row[0].split(": ", 1)
                for point, ms, bound in zip(points, row[1:], bounds, strict=True):
                    if ms != "-":
                        rows.append({"kind": kind, "backend": backend, "variant": variant, "ms": float(ms),
                                     "bound_ms": float(bound), kind: point,
                                     "tensors" if kind == "parameters" else "parameters": fixed})
    if not any(r["kind"] == "set" for r in rows) or not any(r["kind"] != "set" for r in rows):
        raise RuntimeError("benchmarks page: no set or sweep tables found for the plots")
    return {"rows": rows}


def svg(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def figures(markdown: str) -> str:
    from bench import plots

    data = report(markdown)
    made = [plots.steps_figure(data), plots.scaling_figure(data, "parameters"),
            plots.scaling_figure(data, "tensors")]
    return "\n".join(f"<figure>{svg(f)}</figure>" for f in made if f is not None)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return markdown.replace(MARKER, figures(markdown)) if MARKER in markdown else markdown
