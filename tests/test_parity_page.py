"""The report's HTML page, from a real (reference-driver) run: self-contained, with the plots."""

import html.parser

import pytest

from lars.parity import html as page
from lars.parity import report
from lars.parity.atlas import atlas


class Parser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.stack = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in {"meta", "br", "img", "path", "use", "rect", "line", "circle", "stop", "polyline"}:
            self.stack.append(tag)


@pytest.fixture(scope="module")
def data():
    rows = report.run(["reference"], ["paper", "optax"], ["flavor_defaults", "nesterov"])
    return report.document(rows, {"mxnet": "not installed here"}, {}, {"source": "default"})


def test_rows_carry_the_worst_deviation_of_every_step(data):
    for r in data["rows"]:
        assert len(r["deviation_per_step"]) == 100
        # the row's worst also counts buffers and trust ratios, so it bounds every step's
        assert 0 < max(r["deviation_per_step"]) <= r["max_deviation"] <= r["tolerance"]


def test_the_page_has_the_table_the_missing_backends_and_inline_plots(data, tmp_path):
    path, why = page.write(data, tmp_path)
    text = path.read_text()
    assert why is None
    parser = Parser()
    parser.feed(text)
    assert parser.tags.count("svg") == 1  # the deviation plot (no training traces, no atlas here)
    assert "http" not in text.split("<svg")[0]  # nothing fetched from anywhere
    every_row = text[text.index("<table id='rows'>"):]
    assert every_row.count("<tr class='pass'>") == len(data["rows"]) == 2
    assert "<b>mxnet</b>: not installed here" in text and "Not here: mxnet" in text


def test_the_summary_has_a_line_per_backend_with_its_worst_deviation(data, tmp_path):
    text = page.write(data, tmp_path)[0].read_text()
    start = text.index("<table id='summary'>")
    summary = text[start:text.index("</table>", start)]
    worst = max(data["rows"], key=lambda r: r["max_deviation"] / r["tolerance"])
    ratio = worst["max_deviation"] / worst["tolerance"]
    assert summary.count("<tr class='pass'>") == 1  # one backend: the reference driver
    assert f"<td>2</td><td>2</td><td>0</td><td>{ratio:.2g}</td>" in summary
    assert f"flavor {worst['flavor']}" in summary


def test_the_first_answer_says_yes_and_the_worst_deviation_against_its_tolerance(data, tmp_path):
    text = page.write(data, tmp_path)[0].read_text()
    answer = text[text.index("<div id='answer-same'"):]
    worst = max(data["rows"], key=lambda r: r["max_deviation"] / r["tolerance"])
    assert answer.startswith("<div id='answer-same' class='answer pass'>")
    assert "<b>Yes</b>: 1 backend (reference) within tolerance; worst deviation " in answer
    assert f"reference float32, flavor {worst['flavor']}." in answer.split("</div>")[0]


def test_a_failed_row_is_marked_and_named(data, tmp_path):
    failing = dict(data, rows=[dict(data["rows"][0], failed=["nesterov"])])
    text = page.write(failing, tmp_path)[0].read_text()
    assert "<tr class='fail'>" in text and "nesterov" in text
    assert "<b>No</b>: 1 beyond tolerance: reference float32 paper;" in text


def test_the_atlas_is_drawn_with_a_tooltip_per_cell(data, tmp_path):
    found = atlas(steps=20, flavors=["paper", "yscv", "mlperf"])
    text = page.write(dict(data, atlas=found), tmp_path)[0].read_text()
    drawn = text[text.index("<div id='atlas'"):text.index("</div>", text.index("<div id='atlas'"))]
    assert drawn.count("<title>") == 2 * 9  # both heatmaps, every cell
    assert "paper vs yscv: identical weights after 20 steps; the same rule." in drawn
    fields = ", ".join(found["axes"][0][2])
    assert fields and f"the rule differs in {fields}. Explained by: lars diff paper mlperf" in drawn


def test_without_matplotlib_the_page_says_why(data, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    path, why = page.write(data, tmp_path)
    assert "matplotlib is not installed" in why and "<svg" not in path.read_text()
