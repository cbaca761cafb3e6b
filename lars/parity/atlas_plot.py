"""The atlas (`lars.parity.atlas`) drawn: two flavor x flavor heatmaps side by side, how far the
weights of two flavors end apart (log scale) and how many fields of the rule differ.

Every cell carries an SVG `<title>`: hovering it names the pair, the measurement, the fields that
differ and the `lars diff A B` that explains it. The same drawing serves the report's page and
the docs (`docs/hooks/atlas.py`).
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Divergences below this are drawn with its colour; measured ones lie between 1e-8 and 2.
FLOOR = 1e-9
#: `lars.parity.diff.DIVERGED`: the divergence of a pair where a run blew up.
DIVERGED = 2.0


def short(value: float | None) -> str:
    """A cell's label: "same" for an exact 0, else the divergence in two or three characters."""
    if value is None:
        return "?"
    if value == 0:
        return "same"
    if value >= DIVERGED:
        return "2"  # a run blew up
    if value >= 0.095:
        return f"{value:.1f}".removeprefix("0")
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def tooltip(atlas: Mapping[str, Any], i: int, j: int) -> str:
    """What a cell says when hovered: the pair, the measurement, the fields, the command."""
    names = atlas["flavors"]
    a, b = names[i], names[j]
    if i == j:
        return f"{a}: the same flavor"
    value, first = atlas["divergence"][i][j], atlas["first_step"][i][j]
    fields = atlas["axes"][i][j]
    steps = atlas["measured_with"]["steps"]
    if value is None or value >= DIVERGED:
        measured = "one of the two runs blew up"
    elif value == 0:
        measured = f"identical weights after {steps} steps"
    else:
        measured = (f"weights {value:.3g} apart (relative) after {steps} steps"
                    + (f", first apart at step {first}" if first is not None else ""))
    rule = f"the rule differs in {', '.join(fields)}" if fields else "the same rule"
    return f"{a} vs {b}: {measured}; {rule}. Explained by: lars diff {a} {b}"


def _cell_id(panel: str, i: int, j: int) -> str:
    return f"atlas-{panel}-{i}-{j}"


def _with_tooltips(svg: str, titles: Mapping[str, str]) -> str:
    """Puts each cell's `<title>` first in its group; a cell's label lets the pointer through to
    the cell beneath, so hovering the label shows the cell's title too."""

    def add(match: re.Match[str]) -> str:
        cell = match.group(1)
        if cell.endswith("-label"):
            return f'<g id="{cell}" style="pointer-events: none">'
        title = titles.get(cell)
        return match.group(0) + (f"<title>{html.escape(title)}</title>" if title else "")

    return re.sub(r'<g id="(atlas-[a-z]+-\d+-\d+(?:-label)?)">', add, svg)


def _label_colour(rgba: Sequence[float]) -> str:
    luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
    return "black" if luminance > 0.5 else "white"


def figure(atlas: Mapping[str, Any], width: float = 10.0, stacked: bool = False) -> str:
    """The two heatmaps as one inline SVG (matplotlib, no file, no network): side by side, or
    `stacked` one above the other for a narrow column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    names: list[str] = list(atlas["flavors"])
    n = len(names)
    counts = [[len(fields) for fields in row] for row in atlas["axes"]]
    most = max(max(row) for row in counts) or 1
    norm = LogNorm(vmin=FLOOR, vmax=DIVERGED)
    divergence_colours, count_colours = plt.get_cmap("magma_r"), plt.get_cmap("Blues")
    titles: dict[str, str] = {}
    # Text as text (not paths): smaller, and the labels stay readable at any zoom.
    with plt.rc_context({"svg.fonttype": "none", "font.size": 7, "font.sans-serif": ["DejaVu Sans"]}):
        shape, size = ((2, 1), (width, width * 1.9)) if stacked else ((1, 2), (width, width * 0.47))
        fig, (left, right) = plt.subplots(*shape, figsize=size, sharey=not stacked)
        for i in range(n):
            for j in range(n):
                value = atlas["divergence"][i][j]
                titles[_cell_id("d", i, j)] = titles[_cell_id("n", i, j)] = tooltip(atlas, i, j)
                same = value == 0
                colour = (1.0, 1.0, 1.0, 1.0) if same else divergence_colours(norm(max(value or DIVERGED,
                                                                                       FLOOR)))
                left.add_patch(Rectangle((j, i), 1, 1, facecolor=colour, edgecolor="#ddd", linewidth=0.3,
                                         gid=_cell_id("d", i, j)))
                left.text(j + 0.5, i + 0.5, short(value), ha="center", va="center",
                          fontsize=4.5 if same else 5.5, color="#2a7" if same else _label_colour(colour),
                          gid=_cell_id("d", i, j) + "-label")
                shade = (1.0, 1.0, 1.0, 1.0) if counts[i][j] == 0 else count_colours(
                    0.15 + 0.85 * counts[i][j] / most)
                right.add_patch(Rectangle((j, i), 1, 1, facecolor=shade, edgecolor="#ddd", linewidth=0.3,
                                          gid=_cell_id("n", i, j)))
                right.text(j + 0.5, i + 0.5, str(counts[i][j]), ha="center", va="center", fontsize=6,
                           color=_label_colour(shade), gid=_cell_id("n", i, j) + "-label")
        for axis, title in ((left, "how far the weights end apart (relative, log scale)"),
                            (right, "how many fields of the rule differ")):
            axis.set(xlim=(0, n), ylim=(n, 0), aspect="equal")
            axis.set_title(title, fontsize=9)
            axis.set_xticks([k + 0.5 for k in range(n)], names, rotation=90)
            axis.set_yticks([k + 0.5 for k in range(n)], names)
            axis.tick_params(length=0)
        if stacked:  # room for the upper heatmap's names below it
            fig.subplots_adjust(hspace=0.32)
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=divergence_colours), ax=left,
                           fraction=0.046, pad=0.02)
        bar.set_ticks([1e-8, 1e-6, 1e-4, 1e-2, 1], labels=["1e-8", "1e-6", "1e-4", "0.01", "1"])
        bar.ax.tick_params(labelsize=6)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", bbox_inches="tight")
        plt.close(fig)
    text = buffer.getvalue()
    # 450 cells: coordinates to a hundredth of a point (matplotlib writes six decimals) halve the page.
    text = re.sub(r"(\d+\.\d\d)\d+", r"\1", text[text.index("<svg"):])
    return _with_tooltips(text, titles)


def caption(atlas: Mapping[str, Any], stacked: bool = False) -> str:
    measured = atlas["measured_with"]
    first, second = ("Top", "Bottom") if stacked else ("Left", "Right")
    return (f"Every flavor against every other on the {atlas['problem']}, {measured['steps']} steps of the "
            f"NumPy reference in float64 with {measured['source']}. {first}: how far the weights end apart "
            f"(\"same\": bit-identical runs; 2: one run blew up). {second}: how many fields of the rule "
            "differ. Hover a cell for the fields; the command lars diff A B explains a pair.")
