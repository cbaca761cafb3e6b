"""The report's first screen in a real browser: headless Chromium at 1280x800 shows the three
answers (same optimizer?, the atlas heatmap, the training loss) without scrolling.

Runs in the docs session, which installs Chromium (Debian's, with its chromedriver) and selenium;
the core session leaves it out. The screenshot is kept in reports/screens/ (gitignored) to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from lars.core.config import default_config
from lars.core.flavors import FLAVORS
from lars.parity import html, report, training
from lars.parity.atlas import atlas

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1280, 800
SCREENS = Path(__file__).resolve().parents[1] / "reports" / "screens"
ANSWERS = ("answer-same", "atlas", "answer-training")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, small report: two flavors on the reference driver, the training problem on the
    reference, the atlas of every flavor over 20 steps."""
    rows = report.run(["reference"], ["mlperf", "optax"], ["flavor_defaults", "nesterov"])
    trained = training.run(default_config(), backends=("reference",))
    trained.pop("unavailable")
    data = report.document(rows, {"mxnet": "not installed here"}, trained, {"source": "default"},
                           atlas(steps=20))
    path, why = html.write(data, tmp_path_factory.mktemp("report"))
    assert why is None
    return path


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The viewport itself at 1280x800, whatever the window's frame takes.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


def box(browser, selector: str) -> dict[str, float]:
    found: dict[str, float] = browser.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width,"
        " height: r.height};", selector)
    return found


def test_the_three_answers_and_the_heatmap_fill_the_first_screen(page, browser):
    browser.get(page.as_uri())
    SCREENS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENS / "report-first-screen.png"))
    assert browser.execute_script("return [window.innerWidth, window.innerHeight]") == [WIDTH, HEIGHT]
    for selector in [*(f"#{a}" for a in ANSWERS), "#atlas svg", "#answer-training svg"]:
        b = box(browser, selector)
        assert b["width"] > 0 and b["height"] > 0, selector
        inside = b["left"] >= 0 and b["top"] >= 0 and b["right"] <= WIDTH and b["bottom"] <= HEIGHT
        assert inside, (selector, b)
    heatmap = box(browser, "#atlas svg")
    # Every flavor by every flavor, two heatmaps: readable only if the figure is given most of the width.
    assert heatmap["width"] >= 0.55 * WIDTH, heatmap
    assert browser.find_element("css selector", "#answer-same .verdict").text.startswith("Yes:")


def test_hovering_a_cell_names_the_fields_and_the_command(page, browser):
    browser.get(page.as_uri())
    titles = browser.execute_script(
        "return Array.from(document.querySelectorAll('#atlas svg title'), t => t.textContent)")
    assert len(titles) == 2 * len(FLAVORS) ** 2  # a cell per pair, on each heatmap
    assert any(t.startswith("mlperf vs optax: ") and t.endswith("Explained by: lars diff mlperf optax")
               for t in titles)
