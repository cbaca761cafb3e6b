"""The offline HTML page of `lars compare --html`: the verdict, then per layer how far each
recorded quantity of the two runs lies apart, step by step, against the tolerance."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import IO

import numpy as np

from lars.core.files import write_atomically
from lars.core.trace import QUANTITIES
from lars.parity.compare import Comparison, tensors_to_plot, text


def figure(result: Comparison, k: int) -> str:
    """One layer's relative differences per step, as an inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array(result.steps)
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=90)
    floor = result.tolerance(0) / 100
    for q in (*QUANTITIES, "lr"):
        d = result.differences[q][:, k]
        if np.any(d > 0):
            ax.plot(steps, np.maximum(d, floor), label=q, lw=1.2)
    ax.plot(steps, [result.tolerance(s) for s in result.steps], "k--", lw=1, label="tolerance")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("relative difference")
    ax.set_title(f"{result.tensors[k][0]}" + (f" / {result.tensors[k][1]}" if result.tensors[k][1] !=
                                             result.tensors[k][0] else ""), fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write(result: Comparison, path: str | os.PathLike[str]) -> Path:
    """The page, written atomically; every image inline (no network, no other file)."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>lars compare</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{background:#f4f4f4;"
             "padding:1em;white-space:pre-wrap}</style></head><body>",
             f"<h1>lars compare: {html.escape(result.a)} against {html.escape(result.b)}</h1>",
             f"<p><b>{'The runs agree.' if result.agree else 'The runs part.'}</b></p>",
             f"<pre>{html.escape(text(result))}</pre>", "<h2>Per layer</h2>",
             "<p>Relative difference of each recorded quantity, per step, against the tolerance (dashed); "
             "the layer where the runs part first comes first.</p>"]
    for k in tensors_to_plot(result):
        parts.append(f"<img alt='{html.escape(result.tensors[k][0])}' src='data:image/png;base64,"
                     f"{figure(result, k)}'>")
    parts.append("</body></html>")
    page = "\n".join(parts).encode("utf-8")
    def put(f: IO[bytes]) -> None:
        f.write(page)

    return write_atomically(path, put)
