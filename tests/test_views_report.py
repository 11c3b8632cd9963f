"""report RUN: a self-contained page with the products worst-ranked first, reviews in the
model's order, the probe masks highlighted at their offsets, caps and what they left out."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mrhp_prep.cli import cli
from mrhp_prep.errors import InputError
from views_support import HAND_MASKS, Page


def ndcg_at_3(labels_in_ranked_order, threshold=1.0):
    """NDCG@3 written out: gain 2^y - 1 for y above the threshold, discount 1 / ln(2 + i)."""
    def dcg(labels):
        return sum((2.0 ** y - 1) / math.log(2 + i)
                   for i, y in enumerate(labels[:3]) if y > threshold)
    ideal = dcg(sorted(labels_in_ranked_order, reverse=True))
    return dcg(labels_in_ranked_order) / ideal if ideal else 0.0


def average_precision(labels_in_ranked_order, threshold=1.0):
    hits, total = 0, 0.0
    for i, y in enumerate(labels_in_ranked_order, start=1):
        if y > threshold:
            hits += 1
            total += hits / i
    return total / hits if hits else 0.0


def predicted_order(run: Path) -> dict[str, list[dict]]:
    """Each product's predictions from highest to lowest score, ties in file order."""
    rows = [json.loads(line) for line in (run / "predictions-test.jsonl").open()]
    by_product: dict[str, list[dict]] = {}
    for row in rows:
        by_product.setdefault(row["product_id"], []).append(row)
    return {p: sorted(r, key=lambda row: -row["score"]) for p, r in by_product.items()}


@pytest.fixture(scope="module")
def report(views_run, tmp_path_factory, runner_module):
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = runner_module.invoke(cli, ["report", str(views_run["run"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    return {"path": out, "text": out.read_text(encoding="utf-8"), "stderr": result.stderr}


@pytest.fixture(scope="module")
def runner_module():
    from click.testing import CliRunner

    return CliRunner()


def test_products_are_shown_worst_ranked_first(views_run, report):
    ranked = predicted_order(views_run["run"])
    worst_first = sorted(ranked, key=lambda p: (
        ndcg_at_3([r["label"] for r in ranked[p]]),
        average_precision([r["label"] for r in ranked[p]]), p))
    page = Page(report["text"])
    assert page.products == worst_first
    assert len({round(ndcg_at_3([r["label"] for r in ranked[p]]), 6) for p in ranked}) > 2
    assert "lowest NDCG@3 first, ties broken by the lowest MAP" in report["text"]


def test_reviews_are_in_predicted_order_with_score_and_label(views_run, report):
    page = Page(report["text"])
    reviews = pd.read_parquet(views_run["manifest"] / "reviews.parquet").set_index("review_id")
    for product, rows in predicted_order(views_run["run"]).items():
        assert page.reviews[product] == [r["review_id"] for r in rows]
        for row in rows:
            assert page.review_text[row["review_id"]] == reviews.at[row["review_id"], "text"]
            assert f"score {row['score']:.4f} · gold label {row['label']:g}" in report["text"]


def test_probe_sentences_are_highlighted_at_the_mask_offsets(views_run, report):
    page = Page(report["text"])
    reviews = pd.read_parquet(views_run["manifest"] / "reviews.parquet").set_index("review_id")
    for review_id, sentences in HAND_MASKS.items():
        expected = [(start, end) for start, end, marked in sentences if marked]
        assert page.marks[review_id] == expected
        text = reviews.at[review_id, "text"]
        for start, end in expected:
            assert f'data-start="{start}" data-end="{end}"' in report["text"]
            assert text[start:end] in report["text"]
    # the other reviews' masks mark nothing (the fixture's rule finds no core word)
    assert sum(len(m) for m in page.marks.values()) == sum(
        marked for sentences in HAND_MASKS.values() for _, _, marked in sentences)


def test_page_is_self_contained(report):
    page = Page(report["text"])
    assert page.scripts == 0 and "<script" not in report["text"].lower()
    assert page.sources and all(src.startswith("data:image/") for src in page.sources)
    for url in page.sources + page.links:
        assert not re.match(r"^(https?:)?//", url), url
    assert all(link.startswith(("#", "data:")) for link in page.links)
    assert "default-src 'none'" in report["text"]


def test_report_holds_config_metrics_paper_row_and_plots(views_run, report):
    metrics = json.loads((views_run["run"] / "metrics.json").read_text())
    text = report["text"]
    assert f"{100 * metrics['test']['map']:.2f}" in text
    assert f"{100 * metrics['test']['ndcg@3']:.2f}" in text
    # SANCL, Amazon Home, multimodal, GloVe-style static vectors: Table 1's row
    assert "sancl paper, Table 1 (full), test" in text
    assert ">63.35<" in text and ">54.28<" in text and ">57.40<" in text
    assert text.count("data:image/png;base64,") == 3      # curves, scores, per-product spread
    assert "glove-home" in text and str(views_run["rois"]) in text
    assert "visual-genome" in text                           # region labels
    assert text.count("data:image/jpeg;base64,") > 12        # product and review photos


def test_caps_are_respected_and_what_was_left_out_is_said(views_run, tmp_path):
    from mrhp_prep.views.report import ReportSettings, write_report

    out = tmp_path / "capped.html"
    result = write_report(views_run["run"], ReportSettings(max_products=2, max_reviews=3,
                                                           max_thumbnails=1), out)
    text = out.read_text()
    page = Page(text)
    assert len(page.products) == 2 and all(len(r) == 3 for r in page.reviews.values())
    assert text.count("data:image/jpeg;base64,") == 1 and result.thumbnails == 1
    assert result.left_out["products (over --max-products)"] == 10
    assert result.left_out["reviews of shown products (over --max-reviews)"] == 2 * (6 - 3)
    assert result.left_out["photos: over the --max-thumbnails cap"] >= 1
    left_out = text[text.index('id="left-out"'):]
    assert "products (over --max-products)</td><td class=\"num\">10<" in left_out
    assert "--max-thumbnails 1" in left_out


def test_a_missing_photo_is_listed_not_fatal(views_run, tmp_path):
    from mrhp_prep.views.report import ReportSettings, write_report

    images = tmp_path / "images"
    shutil.copytree(views_run["images"], images)
    removed = min((images / "test" / "rvw").rglob("*.jpg"))
    removed.unlink()
    image_id = f"{removed.parent.name}/{removed.name}"
    out = tmp_path / "report.html"
    result = write_report(views_run["run"], ReportSettings(images_root=images), out)
    assert result.left_out == {"photos: image file missing": 1}
    text = out.read_text()
    assert f"{image_id}: image file missing" in text                 # in place
    assert f"{image_id}: {removed}" in text[text.index('id="left-out"'):]   # and listed


def test_an_unfinished_run_is_refused_clearly(views_run, tmp_path, runner):
    run = tmp_path / "run"
    shutil.copytree(views_run["run"], run)
    (run / "MANIFEST.json").unlink()
    result = runner.invoke(cli, ["report", str(run)])
    assert result.exit_code == 3 and "not a finished training run" in result.output
    assert "What to do" in result.output and "Traceback" not in result.output
    assert not (run / "report.html").exists()


def test_report_defaults_to_the_run_folder(views_run, tmp_path, runner):
    run = tmp_path / "run"
    shutil.copytree(views_run["run"], run)
    settings = tmp_path / "report.yaml"
    settings.write_text("max-products: 1\nmax_thumbnails: 0\n")
    result = runner.invoke(cli, ["report", str(run), "--config", str(settings),
                                 "--max-products", "2"])          # the command line wins
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(run / "report.html")
    text = (run / "report.html").read_text()
    assert len(Page(text).products) == 2 and "data:image/jpeg" not in text


def test_a_score_that_is_not_a_number_never_reaches_the_plot():
    from mrhp_prep.views.plots import per_product_histogram

    frame = pd.DataFrame({"product_id": ["a", "b"], "ndcg@3": [0.5, float("nan")],
                          "map": [0.5, 0.4]})
    with pytest.raises(InputError, match="product 'b'"):
        per_product_histogram(frame, "test", "predictions-test.jsonl")


def test_a_text_only_run_without_probes_shows_plain_photos(views_run, tmp_path):
    import yaml

    from mrhp_prep.views.report import ReportSettings, write_report

    run = tmp_path / "run"
    shutil.copytree(views_run["run"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["inputs"].update(rois=None, probes=None)         # as a text-only run records it
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = write_report(run, ReportSettings(images_root=views_run["images"], max_products=2))
    text = result.path.read_text()
    page = Page(text)
    assert "trained without region features" in text and "without probe masks" in text
    assert not any(page.marks.values())
    assert result.thumbnails > 0 and "<ol>" not in text.split('id="products"')[1]
