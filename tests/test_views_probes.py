"""show-probes: the masks of a probe-masks output highlighted in the sample's review texts,
without a training run."""

from __future__ import annotations

import pandas as pd
import pytest

from feature_stores import write_probe_store
from mrhp_prep.cli import cli
from mrhp_prep.views.highlight import highlighted
from views_support import Page

# Written out by hand from the sample's review texts: (start, end, marked).
SAMPLE_MASKS = {
    # "Looks nicer than the photos. Pages are thinner than in my older album."
    "B00SAMP007-2": [(0, 28, False), (29, 70, True)],
    # "Sturdy card stock and the wheel turns smoothly. Bigger than I expected."
    "B00SAMP008-2": [(0, 47, True), (48, 71, True)],
}


@pytest.fixture(scope="module")
def probes(sample_manifest, tmp_path_factory):
    return write_probe_store(tmp_path_factory.mktemp("probes") / "masks", sample_manifest,
                             marked=lambda sentence, name: False, spans=SAMPLE_MASKS,
                             skip=["B00SAMP008-5"])


def test_hand_masks_fit_the_sample_texts(sample_manifest):
    reviews = pd.read_parquet(sample_manifest / "reviews.parquet").set_index("review_id")
    assert reviews.at["B00SAMP007-2", "text"][29:70] == "Pages are thinner than in my older album."
    assert reviews.at["B00SAMP008-2", "text"][48:71] == "Bigger than I expected."


def test_marked_sentences_are_highlighted_at_their_offsets(probes, sample_manifest, tmp_path,
                                                          runner):
    out = tmp_path / "probes.html"
    # no --manifest: the probe-masks folder recorded it
    result = runner.invoke(cli, ["show-probes", "--probes", str(probes), "--split", "test",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    text = out.read_text()
    page = Page(text)
    reviews = pd.read_parquet(sample_manifest / "reviews.parquet").set_index("review_id")
    assert page.products == ["B00SAMP007", "B00SAMP008"]
    assert page.marks["B00SAMP007-2"] == [(29, 70)]
    # two touching marked sentences [0, 47) and [48, 71) stay two marks
    assert page.marks["B00SAMP008-2"] == [(0, 47), (48, 71)]
    for review_id in page.review_text:
        assert page.review_text[review_id] == reviews.at[review_id, "text"]
    others = {r: m for r, m in page.marks.items() if r not in SAMPLE_MASKS}
    assert others and not any(others.values())
    assert "B00SAMP008-5</code> · no probe record" in text
    assert "<script" not in text.lower()
    assert "without a probe record" in result.stderr


def test_caps_leave_out_products_and_reviews(probes, tmp_path):
    from mrhp_prep.views.probes_page import ProbesPageSettings, write_probes_page

    result = write_probes_page(probes, settings=ProbesPageSettings(max_products=3, max_reviews=2),
                               out=tmp_path / "p.html")
    page = Page((tmp_path / "p.html").read_text())
    assert len(page.products) == 3 and result.products_total == 8
    assert result.left_out["products (over --max-products)"] == 5
    assert all(len(r) <= 2 for r in page.reviews.values())


def test_unknown_product_is_a_clear_error(probes, runner):
    result = runner.invoke(cli, ["show-probes", "--probes", str(probes), "--product", "B00X"])
    assert result.exit_code == 3 and "B00X" in result.output and "products.parquet" in result.output


def test_unfinished_probe_folder_is_refused(tmp_path, runner):
    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / "probe-00000.arrow").write_bytes(b"")
    result = runner.invoke(cli, ["show-probes", "--probes", str(folder)])
    assert result.exit_code == 3 and "no MANIFEST.json" in result.output
    assert "What to do" in result.output


@pytest.mark.parametrize("spans, expected", [
    ([(2, 5)], "ab<m>cde</m>fgh"),
    ([(0, 3), (3, 5)], "<m>abcde</m>fgh"),                 # touching: one mark
    ([(6, 99)], "abcdef<m>gh</m>"),                        # clipped to the text
    ([(4, 4)], "abcdefgh"),                                # empty: nothing
])
def test_spans_become_marks(spans, expected):
    rendered = highlighted("abcdefgh", spans)
    simplified = (rendered.replace('<mark class="probe" ', "<m ")
                  .replace("</mark>", "</m>"))
    import re

    assert re.sub(r'<m [^>]*>', "<m>", simplified) == expected


def test_text_is_escaped():
    assert highlighted("<b>&", [(0, 3)]).startswith('<mark class="probe" data-start="0" '
                                                    'data-end="3">&lt;b&gt;</mark>&amp;')
