"""The parity report as one self-contained HTML page: the tables, and plots drawn with
matplotlib as inline SVG (no file beside it, no network). Without matplotlib the page has the
tables and says why the plots are missing."""

from __future__ import annotations

import html
import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lars.parity import atlas_plot, summary

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0.5em auto; max-width: 1240px; padding: 0 1em;
       color: #222; }
header h1 { font-size: 1.3em; margin: 0.2em 0; } .note { font-size: 0.8em; color: #555; margin: 0.2em 0; }
#answers { display: grid; grid-template-columns: 2fr 1fr; gap: 0.4em 1.2em; }
#answers h2 { font-size: 1.05em; margin: 0.3em 0; }
#answer-same { grid-column: 1 / 3; padding: 0.2em 0.8em; border-radius: 4px; }
.answer svg { width: 100%; height: auto; } .verdict { font-size: 1.05em; margin: 0.2em 0; }
details { margin: 1em 0; } summary { cursor: pointer; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f2f2f2; } td.name { text-align: left; }
.pass { background: #e6f4ea; } .fail { background: #fce8e6; font-weight: bold; }
.refused { color: #777; } figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
"""


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def deviation_plot(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per dtype: each driver's worst deviation (over flavors and cases) at every step."""
    import matplotlib.pyplot as plt

    dtypes = sorted({r["dtype"] for r in rows})
    figure, axes = plt.subplots(1, len(dtypes), figsize=(5.5 * len(dtypes), 3.6), squeeze=False)
    for axis, dtype in zip(axes[0], dtypes, strict=True):
        worst: dict[str, list[float]] = defaultdict(list)
        tolerance = 0.0
        for r in rows:
            if r["dtype"] != dtype or not r["deviation_per_step"]:
                continue
            tolerance = r["tolerance"]
            series = worst[r["driver"]]
            for t, value in enumerate(r["deviation_per_step"]):
                if t < len(series):
                    series[t] = max(series[t], value)
                else:
                    series.append(value)
        for driver, series in sorted(worst.items()):
            axis.semilogy(range(1, len(series) + 1), [max(v, 1e-18) for v in series], label=driver,
                          linestyle="--" if "." in driver else "-")
        axis.axhline(tolerance, color="red", linewidth=1, linestyle=":", label="tolerance")
        axis.set(title=dtype, xlabel="step", ylabel="max relative deviation")
        axis.legend(fontsize=7)
    svg = _svg(figure)
    plt.close(figure)
    return _figure(svg, "Deviation from the float64 reference after every step: for each backend, the "
                   "worst over every flavor, case and tensor (dashed: peer libraries).")


def loss_plot(traces: Sequence[Mapping[str, Any]], stacked: bool = False) -> str:
    """A panel per dtype, side by side (or `stacked`, one above the other, for a narrow column)."""
    import matplotlib.pyplot as plt

    dtypes = sorted({t["dtype"] for t in traces})
    shape, size = ((len(dtypes), 1), (4.6, 2.4 * len(dtypes))) if stacked else \
        ((1, len(dtypes)), (5.5 * len(dtypes), 3.6))
    figure, axes = plt.subplots(*shape, figsize=size, squeeze=False)
    for axis, dtype in zip(axes.flat, dtypes, strict=True):
        for t in traces:
            if t["dtype"] == dtype:
                axis.plot(range(len(t["losses"])), t["losses"], label=t["backend"], linewidth=1,
                          linestyle=":" if t["backend"] == "reference" else "-")
        axis.set(title=f"{dtype}", xlabel="step", ylabel="training loss", yscale="log")
        axis.legend(fontsize=7)
    figure.tight_layout()
    svg = _svg(figure)
    plt.close(figure)
    return _figure(svg, "Training loss of the same MLP on the same digits batches, each framework with "
                   "its own gradients and its own adapter (the curves lie on top of each other).")


def trust_ratio_plot(traces: Sequence[Mapping[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    chosen = [t for t in traces if t["dtype"] == "float32" and t["trust_ratios"]] or \
        [t for t in traces if t["trust_ratios"]]
    # Tensors excluded from adaptation keep r = 1 at every step: nothing to see.
    layers = sorted({name for t in chosen for step in t["trust_ratios"]
                     for name, r in step.items() if r != 1.0})
    if not layers:
        return ""
    columns = min(3, len(layers))
    rows = -(-len(layers) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), squeeze=False)
    for axis, layer in zip(axes.flat, layers, strict=False):
        for t in chosen:
            values = [step.get(layer, float("nan")) for step in t["trust_ratios"]]
            axis.plot(range(1, len(values) + 1), values, label=f"{t['backend']} {t['dtype']}", linewidth=1,
                      linestyle=":" if t["backend"] == "reference" else "-")
        axis.set(title=layer, xlabel="step", ylabel="trust ratio")
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(layers):]:
        axis.set_visible(False)
    figure.tight_layout()
    svg = _svg(figure)
    plt.close(figure)
    return _figure(svg, "Per-layer trust ratios of the training problem over the steps, per backend "
                   "(tensors excluded from adaptation, at 1 throughout, are left out).")


def _row_html(r: Mapping[str, Any]) -> str:
    status = "pass" if not r["failed"] else "fail"
    note = f"refused {len(r['refused'])}/{r['cases']}" if r["refused"] else ""
    failed = ", ".join(r["failed"])
    cells = [r["driver"], r["dtype"], r["flavor"]]
    return (f"<tr class='{status}'>" + "".join(f"<td class='name'>{html.escape(c)}</td>" for c in cells)
            + f"<td>{r['max_deviation']:.3g}</td><td>{r['tolerance']:.0e}</td><td>{status}</td>"
            f"<td>{r['ms_per_step']:.3f}</td><td class='refused'>{html.escape(note)}</td>"
            f"<td class='name'>{html.escape(failed)}</td></tr>")


def _training_html(training: Mapping[str, Any]) -> str:
    traces = training.get("traces", [])
    if not traces:
        return ""
    lines = ["<h2>Training problem</h2>", f"<p>{html.escape(str(training.get('problem', '')))}</p>",
             "<table><tr><th>backend</th><th>dtype</th><th>final loss</th><th>test accuracy</th>"
             "<th>loss deviation</th><th>param deviation</th><th>tolerance</th><th>result</th>"
             "<th>ms/step</th></tr>"]
    for t in traces:
        c = t.get("comparison") or {}
        ok = c.get("passed", True)
        lines.append(f"<tr class='{'pass' if ok else 'fail'}'>"
                     f"<td class='name'>{html.escape(t['backend'])}</td>"
                     f"<td class='name'>{t['dtype']}</td><td>{t['losses'][-1]:.4f}</td>"
                     f"<td>{t['test_accuracy']:.3f}</td><td>{c.get('loss_deviation', 0.0):.2g}</td>"
                     f"<td>{c.get('param_deviation', 0.0):.2g}</td><td>{c.get('tolerance', 0.0):.0e}</td>"
                     f"<td>{'pass' if ok else 'fail'}</td><td>{1e3 * t['seconds_per_step']:.3f}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _why_no_plots() -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return "no plots: matplotlib is not installed (pip install '.[report]' in a clone of lars)"
    return None


def plots(data: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """The figures as HTML, or why there are none."""
    why = _why_no_plots()
    if why is not None:
        return [], why
    figures = [deviation_plot(data["rows"])] if data["rows"] else []
    traces = data.get("training", {}).get("traces", [])
    if traces:
        figures += [loss_plot(traces), trust_ratio_plot(traces)]
    return [f for f in figures if f], None


def _worst_text(worst: summary.Worst | None) -> str:
    if worst is None:
        return ""
    return (f"worst deviation {worst.ratio:.2g} of its tolerance ({worst.deviation:.2g} against "
            f"{worst.tolerance:.0e}), {worst.where}")


def _answer_same(data: Mapping[str, Any]) -> str:
    found = summary.verdict(data)
    if not found.backends:
        answer, detail = "Not measured", "no backend ran in this report."
    elif found.same:
        answer = "Yes"
        count = f"{len(found.backends)} backend{'s' if len(found.backends) > 1 else ''}"
        detail = (f"{count} ({', '.join(found.backends)}) within tolerance"
                  + (f"; {_worst_text(found.worst)}." if found.worst else "."))
    else:
        answer = "No"
        detail = (f"{len(found.failed)} beyond tolerance: {', '.join(found.failed)}"
                  + (f"; {_worst_text(found.worst)}." if found.worst else "."))
    missing = ", ".join(data["unavailable"])
    return (f"<div id='answer-same' class='answer {'pass' if found.same else 'fail'}'>"
            "<h2>Same optimizer in every framework here?</h2>"
            f"<p class='verdict'><b>{answer}</b>: {html.escape(detail)}</p>"
            + (f"<p class='note'>Not here: {html.escape(missing)} (<a href='#missing'>why</a>).</p>"
               if missing else "") + "</div>")


def _answer_atlas(data: Mapping[str, Any], why: str | None) -> str:
    found = data.get("atlas")
    if not found:
        body = "<p>Not measured in this report (it needs scikit-learn for the digits).</p>"
    elif why is not None:
        body = f"<p>{html.escape(why)}</p>"
    else:
        body = _figure(atlas_plot.figure(found), atlas_plot.caption(found))
    return f"<div id='atlas' class='answer'><h2>How do the libraries differ?</h2>{body}</div>"


def _answer_training(data: Mapping[str, Any], why: str | None) -> str:
    training = data.get("training", {})
    traces = training.get("traces", [])
    if not traces:
        body = "<p>Not run in this report.</p>"
    elif why is not None:
        body = f"<p>{html.escape(why)}</p>"
    else:
        body = loss_plot(traces, stacked=True)
    return ("<div id='answer-training' class='answer'><h2>The training problem in every framework</h2>"
            f"{body}</div>")


def _summary_html(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = ["<table id='summary'><tr><th>backend</th><th>kind</th><th>rows</th><th>passed</th>"
             "<th>refused cases</th><th>worst deviation / tolerance</th><th>where</th></tr>"]
    for b in summary.per_backend(rows):
        status = "pass" if b.passed == b.rows else "fail"
        ratio, where = (f"{b.worst.ratio:.2g}", b.worst.where) if b.worst else ("", "")
        lines.append(f"<tr class='{status}'><td class='name'>{html.escape(b.backend)}</td>"
                     f"<td class='name'>{b.kind}</td><td>{b.rows}</td><td>{b.passed}</td>"
                     f"<td>{b.refused_cases}</td><td>{ratio}</td>"
                     f"<td class='name'>{html.escape(where)}</td></tr>")
    return "\n".join([*lines, "</table>"])


def render(data: Mapping[str, Any]) -> tuple[str, str | None]:
    why = _why_no_plots()
    rows, traces = data["rows"], data.get("training", {}).get("traces", [])
    # The loss plot is an answer at the top; the other plots follow the tables.
    figures = [] if why is not None else [f for f in (deviation_plot(rows) if rows else "",
                                                      trust_ratio_plot(traces) if traces else "") if f]
    config = data.get("config") or {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lars parity report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<header><h1>lars parity report</h1>"
        f"<p class='note'>lars {html.escape(str(data.get('lars')))}, "
        f"Python {html.escape(str(data.get('python')))}, "
        f"NumPy {html.escape(str(data.get('numpy')))}, {html.escape(str(data.get('machine')))}"
        + (f"; configuration <code>{html.escape(str(config.get('source', '')))}</code>" if config else "")
        + ".</p></header>",
        "<section id='answers'>", _answer_same(data), _answer_atlas(data, why), _answer_training(data, why),
        "</section>",
    ]
    if data["unavailable"]:
        parts.append("<h2 id='missing'>Not in this report</h2><ul>" + "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in data["unavailable"].items())
                     + "</ul>")
    parts.append("<h2>Conformance problem</h2><p>Every flavor on the seeded cases "
                 f"({html.escape(', '.join(data.get('cases', [])))}), 100 steps each, per backend:</p>"
                 + _summary_html(rows)
                 + f"<details><summary>Every row ({len(rows)}: backend, dtype, flavor)</summary>"
                 "<table id='rows'><tr><th>backend</th><th>dtype</th><th>flavor</th><th>max deviation</th>"
                 "<th>tolerance</th><th>result</th><th>ms/step</th><th></th><th>failed cases</th></tr>"
                 + "".join(_row_html(r) for r in rows) + "</table></details>")
    parts.append(_training_html(data.get("training", {})))
    if figures:
        parts.append("<h2>Plots</h2>" + "".join(figures))
    parts.append("</body></html>")
    return "\n".join(parts), why


def write(data: Mapping[str, Any], out: Path) -> tuple[Path, str | None]:
    """Writes `out/index.html` (atomically); returns its path and why plots are missing, if so."""
    page, why = render(data)
    path = out / "index.html"
    out.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(path)
    return path, why
