"""The report in a real browser: headless Chromium opens report.html from a file:// URL; the
page must draw (not blank), log no error, fetch nothing but itself and show the worst-ranked
product first. Screenshots are left in the test's folder (MRHP_SCREENSHOTS=DIR copies them
there too)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headless_chromium import Browser, chromium_path
from mrhp_prep.views.report import ReportSettings, write_report

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="Chromium is not installed (apt-get install chromium); the report's browser test "
           "needs it")


def _keep(png: bytes, path: Path) -> np.ndarray:
    path.write_bytes(png)
    if os.environ.get("MRHP_SCREENSHOTS"):
        target = Path(os.environ["MRHP_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _drawn(pixels: np.ndarray) -> tuple[int, float]:
    """(distinct colours, share of pixels that are not white)."""
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    return colours, float((pixels < 245).any(axis=2).mean())


def test_report_renders_offline_without_errors_worst_product_first(views_run, tmp_path):
    from test_views_report import average_precision, ndcg_at_3, predicted_order

    report = write_report(views_run["run"], ReportSettings(max_products=6),
                          tmp_path / "report.html").path
    url = report.resolve().as_uri()
    with Browser.start(tmp_path / "profile") as browser:
        visit = browser.visit(url)
        order = browser.attribute_values("section.product", "data-product-id")
        top = _keep(browser.screenshot(), tmp_path / "report-top.png")
        first = _keep(browser.screenshot("section.product"), tmp_path / "report-product.png")
    assert visit.console_errors == []
    foreign = [u for u in visit.requests if u != url and not u.startswith("data:")]
    assert foreign == [] and url in visit.requests
    ranked = predicted_order(views_run["run"])
    worst = min(ranked, key=lambda p: (ndcg_at_3([r["label"] for r in ranked[p]]),
                                       average_precision([r["label"] for r in ranked[p]]), p))
    assert order[0] == worst and len(order) == 6
    colours, ink = _drawn(top)
    assert top.shape[1] == 1200 and top.shape[0] > 1000 and colours > 200 and ink > 0.03
    colours, ink = _drawn(first)                   # the product's photographs and text
    assert colours > 2000 and ink > 0.05


def test_probe_page_renders_offline_without_errors(views_run, tmp_path):
    from mrhp_prep.views.probes_page import ProbesPageSettings, write_probes_page

    page = write_probes_page(views_run["probes"], settings=ProbesPageSettings(split="test"),
                             out=tmp_path / "probes.html").path
    url = page.resolve().as_uri()
    with Browser.start(tmp_path / "profile") as browser:
        visit = browser.visit(url)
        marks = browser.attribute_values("mark.probe", "data-start")
        top = _keep(browser.screenshot(), tmp_path / "probes-top.png")
    assert visit.console_errors == []
    assert [u for u in visit.requests if u != url] == []
    assert marks == ["0", "21", "4"]                # HAND_MASKS, in page order
    colours, ink = _drawn(top)
    assert colours > 100 and ink > 0.03
