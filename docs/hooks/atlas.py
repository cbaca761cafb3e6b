"""MkDocs hook: the atlas page drawn at build time from a real run (`lars.parity.atlas`).

Replaces, in any page:

    <!-- atlas-heatmap -->   the report's own heatmaps (`lars.parity.atlas_plot`): every flavor against
                             every other, 100 steps of the NumPy reference on the digits MLP
    <!-- atlas-flavors -->   every flavor: what it reproduces and its quirks, the fields of the rule on
                             which it differs from `paper` (`lars.parity.diff.rule_differences`)

Nothing is committed: the page is made from the code at each build (a few seconds; the digits
come from scikit-learn). The build fails if a flavor has no notes in the specification.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

HEATMAP, FLAVORS_TABLE = "<!-- atlas-heatmap -->", "<!-- atlas-flavors -->"
SPECIFICATION = Path(__file__).resolve().parents[1] / "specification.md"


@cache
def measured() -> dict[str, Any]:
    from lars.parity.atlas import atlas

    return atlas()


def heatmap() -> str:
    from lars.parity import atlas_plot

    found = measured()
    # The page's column is narrow: the heatmaps one above the other, each as wide as the column.
    svg = atlas_plot.figure(found, width=6.5, stacked=True).replace(
        "<svg ", "<svg style='max-width: 100%; height: auto' ", 1)
    return f"<figure>{svg}<figcaption>{atlas_plot.caption(found, stacked=True)}</figcaption></figure>"


def _value(value: Any) -> str:
    return f"`{value}`".replace("|", r"\|")


def flavors_table() -> str:
    from lars.core.flavors import FLAVORS
    from lars.parity.diff import rule_differences, side

    notes = SPECIFICATION.read_text()
    paper = side("paper").hyperparams
    lines = ["| flavor | reproduces | its quirks: the fields of the rule that differ from `paper` |",
             "|---|---|---|"]
    for name, flavor in FLAVORS.items():
        if f"### `{name}`" not in notes:
            raise RuntimeError(f"specification.md has no notes (### `{name}`) for the flavor {name}")
        differences = rule_differences(paper, side(name).hyperparams)
        quirks = ", ".join(f"`{d['field']}` = {_value(d['b'])}" for d in differences) or "none"
        reproduces = flavor.reproduces.replace("|", r"\|").replace("\n", " ")
        lines.append(f"| [`{name}`](specification.md#{name}) | {reproduces} | {quirks} |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if HEATMAP in markdown:
        markdown = markdown.replace(HEATMAP, heatmap())
    if FLAVORS_TABLE in markdown:
        markdown = markdown.replace(FLAVORS_TABLE, flavors_table())
    return markdown
