"""ingest: both release flavours, every table layout, labels, and every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mrhp_prep.cli import cli
from mrhp_prep.data.cells import image_urls, review_year
from mrhp_prep.data.ingest import grade_votes, ingest
from mrhp_prep.data.manifest import Manifest, path_component
from mrhp_prep.errors import InputError

from release_files import default_tables, product, relation, review, write_release


def _ingest(raw, tmp_path, **kwargs):
    options = {"dataset": "amazon", "category": "electronics", "cache_dir": tmp_path / "cache"}
    options.update(kwargs)
    return Manifest(ingest(raw, **options).path)


@pytest.mark.parametrize("orient", ["columns", "records", "index", "split", "table", "lines"])
def test_every_pandas_layout_gives_the_same_manifest(tmp_path, orient):
    raw = write_release(tmp_path / "raw", default_tables(), orient=orient)
    manifest = _ingest(raw, tmp_path)
    reviews = manifest.reviews.sort_values("review_id")
    assert list(reviews["review_id"])[:3] == ["P00-0", "P00-1", "P00-2"]
    assert len(manifest.products) == 6 and len(reviews) == 18
    assert dict(zip(reviews["review_id"], reviews["label"]))["P11-2"] == 4
    assert set(reviews["split"]) == {"train", "dev", "test"}


@pytest.mark.parametrize("prefix,category", [
    ("Clothing_Shoes_and_Jewelry", "clothing"), ("clothing", "clothing"),
    ("Home_and_Kitchen", "home"), ("Home & Kitchen", "home"), ("electronics", "electronics")])
def test_category_prefix_spellings(tmp_path, prefix, category):
    raw = write_release(tmp_path / "raw", default_tables(), prefix=prefix)
    assert len(_ingest(raw, tmp_path, category=category).reviews) == 18


def test_numeric_looking_ids_stay_strings(tmp_path):
    tables = default_tables()
    tables["prd", "train"][0]["product_id"] = "0012345"
    for row in tables["rvw", "train"][:3] + tables["rel", "train"][:3]:
        row["product_id"] = "0012345"
    raw = write_release(tmp_path / "raw", tables, orient="raw-records")
    manifest = _ingest(raw, tmp_path)
    assert "0012345" in set(manifest.products["product_id"])


def test_amazon_flavour_text_and_full_size_image_urls(tmp_path):
    tables = default_tables()
    tables["prd", "train"][0]["img_url"] = [
        "https://images-na.ssl-images-amazon.com/images/I/71abc._SX38_SY50_CR,0,0,38,50_.jpg"]
    tables["rvw", "train"][0]["img_url"] = ["https://images-na.ssl-images-amazon.com/images/I/5x._SY88.jpg"]
    manifest = _ingest(write_release(tmp_path / "raw", tables), tmp_path)
    urls = dict(zip(manifest.images["image_id"], manifest.images["url"]))
    assert urls["P00/pic_0.jpg"] == "https://images-na.ssl-images-amazon.com/images/I/71abc.jpg"
    assert urls["P00-0/pic_0.jpg"] == "https://images-na.ssl-images-amazon.com/images/I/5x.jpg"
    paths = dict(zip(manifest.images["image_id"], manifest.images["path"]))
    assert paths["P00-0/pic_0.jpg"] == "train/rvw/P00-0/pic_0.jpg"
    products = manifest.products.set_index("product_id")
    assert products.loc["P00", "text"] == "Steel Water Bottle Keeps drinks cold."
    assert products.loc["P00", "num_images"] == 1


def test_lazada_flavour_image_dicts_and_name_only_clothing(tmp_path):
    tables = default_tables()
    tables["rvw", "dev"][0]["img_url"] = json.dumps(
        [{"url": "https://id-live.slatic.net/p/a.jpg"}, {"url": "https://id-live.slatic.net/p/b.jpg"}])
    tables["prd", "dev"][0]["img_url"] = [{"url": "https://id-live.slatic.net/p/c.jpg"}]
    raw = write_release(tmp_path / "raw", tables, prefix="Clothing")
    manifest = _ingest(raw, tmp_path, dataset="lazada", category="clothing")
    images = manifest.images.set_index("image_id")
    assert images.loc["P10-0/pic_1.jpg", "url"] == "https://id-live.slatic.net/p/b.jpg"
    assert images.loc["P10/pic_0.jpg", "role"] == "prd"
    assert set(manifest.products["text"]) == {"Steel Water Bottle"}
    assert manifest.relevance_threshold == 0


def test_image_url_cells_of_every_shape():
    assert image_urls(None, "lazada") == []
    assert image_urls("", "lazada") == []
    assert image_urls("http://x/a.jpg", "lazada") == ["http://x/a.jpg"]
    assert image_urls('[{"url": "http://x/a.jpg"}]', "lazada") == ["http://x/a.jpg"]
    assert image_urls([{"url": "http://x/a.jpg"}, {"url": ""}], "lazada") == ["http://x/a.jpg"]


def test_graded_labels_follow_sancl_and_drop_zero_votes(tmp_path):
    assert [grade_votes(v) for v in (0, 1, 2, 3, 4, 7, 8, 15, 16, 400)] == \
        [None, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    manifest = _ingest(write_release(tmp_path / "raw", default_tables()), tmp_path, labels="graded")
    reviews = manifest.reviews.set_index("review_id")
    assert "P00-0" not in reviews.index  # 0 votes
    assert reviews.loc["P01-2", "upvotes"] == 4 and reviews.loc["P01-2", "label"] == 2
    assert manifest.info["counts"]["dropped_zero_vote_reviews"] == 3


def test_review_years_in_the_release_formats():
    assert [review_year(v) for v in ("2017-01-10", "09 1, 2016", "12 31, 2015", "2016",
                                     "2016-03-04T10:00:00")] == [2017, 2016, 2015, 2016, 2016]
    assert [review_year(v) for v in (None, "", "last week", "1458000000")] == [None] * 4


def test_min_review_year_leaves_out_older_reviews_as_sancls_reader(tmp_path, runner):
    """SANCL's Amazon reader: graded labels, 0-vote reviews and reviews of 2015 or earlier
    left out (`--labels graded --min-review-year 2016`); dates in the release's own form."""
    tables = default_tables()
    tables["rvw", "train"][1]["time"] = "12 31, 2015"     # P00-1, 1 vote
    tables["rvw", "train"][4]["time"] = "01 2, 2016"      # P01-1, 3 votes
    tables["rvw", "test"][5]["time"] = "2014-06-01"       # P21-2, 4 votes
    raw = write_release(tmp_path / "raw", tables)
    result = runner.invoke(cli, ["ingest", str(raw), "--dataset", "amazon", "--category",
                                 "electronics", "--labels", "graded", "--min-review-year", "2016",
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    manifest = Manifest(result.stdout.strip().splitlines()[-1])
    kept = set(manifest.reviews["review_id"])
    assert {"P00-1", "P21-2"}.isdisjoint(kept) and "P01-1" in kept
    assert "P00-0" not in kept                            # 0 votes, as before
    counts = manifest.info["counts"]
    assert (counts["dropped_reviews_before_year"], counts["dropped_zero_vote_reviews"]) == (2, 3)
    assert manifest.info["settings"]["min_review_year"] == 2016
    assert not (Path(manifest.path) / "failures.jsonl").read_text().strip()
    assert "2 review(s) left out" in result.output
    # without the option the fingerprint (and manifest) of earlier runs is unchanged
    plain = _ingest(raw, tmp_path, labels="graded")
    assert "min_review_year" not in plain.info["settings"]
    assert {"P00-1", "P21-2"} <= set(plain.reviews["review_id"])


def test_min_review_year_needs_readable_dates(tmp_path):
    tables = default_tables()
    tables["rvw", "dev"][2]["time"] = "sometime"
    raw = write_release(tmp_path / "raw", tables)
    with pytest.raises(InputError, match="no readable date") as error:
        _ingest(raw, tmp_path, min_review_year=2016)
    assert "Electronics.rvw.dev" in str(error.value)
    for rows in tables.values():
        for row in rows:
            row.pop("time", None)
    undated = write_release(tmp_path / "undated", tables)
    with pytest.raises(InputError, match="no 'time' column"):
        _ingest(undated, tmp_path, min_review_year=2016)


def test_label_policy_warning_when_raw_counts_look_ungraded(tmp_path, caplog):
    tables = default_tables()
    tables["rel", "train"][0]["upvotes"] = 57
    manifest = _ingest(write_release(tmp_path / "raw", tables), tmp_path, labels="raw")
    assert "raw counts" in manifest.info["label_warning"]
    assert manifest.info["label_range"] == [0, 57]


def test_unsafe_ids_are_escaped_in_image_paths(tmp_path):
    tables = default_tables()
    for bad in ("../../etc", "/abs/path"):
        tables["prd", "train"].append(product(bad, img_url=["http://x/a.jpg"]))
        tables["rvw", "train"].append(review(bad, 0))
        tables["rel", "train"].append(relation(bad, 0, 3))
    manifest = _ingest(write_release(tmp_path / "raw", tables), tmp_path)
    for rel in manifest.images["path"]:
        resolved = (tmp_path / "images" / rel).resolve()
        assert resolved.is_relative_to(tmp_path / "images"), rel
        assert len(Path(rel).parts) == 4
    assert path_component("..") != ".." and "/" not in path_component("a/b")


# ---- bad input: a clear error, exit code 3, nothing written ----------------------------------

def _expect_refusal(runner, raw, tmp_path, *needles, extra=()):
    out = tmp_path / "out"
    result = runner.invoke(cli, ["ingest", str(raw), "--dataset", "amazon", "--category",
                                 "electronics", "--out", str(out), *extra])
    assert result.exit_code == 3, result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert not out.exists() or not any(out.iterdir()), "a refused release must leave nothing"
    return result.output


def test_malformed_file_names_the_file(runner, tmp_path):
    raw = write_release(tmp_path / "raw", default_tables())
    path = raw / "Electronics.rvw.dev"
    path.write_text(path.read_text()[:-40])
    _expect_refusal(runner, raw, tmp_path, "Electronics.rvw.dev", "not valid JSON")


def test_missing_split_file(runner, tmp_path):
    raw = write_release(tmp_path / "raw", default_tables())
    (raw / "Electronics.rel.test").unlink()
    _expect_refusal(runner, raw, tmp_path, "rel.test", "missing release files")


def test_missing_required_column(runner, tmp_path):
    tables = default_tables()
    for row in tables["rel", "train"]:
        del row["upvotes"]
    raw = write_release(tmp_path / "raw", tables)
    _expect_refusal(runner, raw, tmp_path, "Electronics.rel.train", "upvotes")


@pytest.mark.parametrize("mutate,needles", [
    (lambda t: t["rel", "train"].append(relation("P00", 9, 1)), ["rel.train", "P00-9"]),
    (lambda t: t["rvw", "train"].append(review("NOPE", 0)), ["rvw.train", "NOPE"]),
    (lambda t: t["rel", "dev"].__setitem__(0, {**t["rel", "dev"][0], "product_id": "P11"}),
     ["rel.dev", "belongs to"]),
    (lambda t: t["rvw", "test"].append(review("P20", 0)), ["duplicate review id", "P20-0"]),
    (lambda t: t["prd", "test"].append(product("P21")), ["duplicate product id", "P21"]),
    (lambda t: t["rel", "train"].__setitem__(1, relation("P00", 1, "many")),
     ["upvotes", "'many'"]),
    (lambda t: t["rel", "train"].__setitem__(1, relation("P00", 1, 2.5)), ["upvotes", "2.5"]),
    (lambda t: t["rvw", "dev"].__setitem__(2, review("P10", 2, content="   ")),
     ["content", "empty text"]),
])
def test_bad_rows_are_refused_with_file_row_and_field(runner, tmp_path, mutate, needles):
    tables = default_tables()
    mutate(tables)
    raw = write_release(tmp_path / "raw", tables)
    output = _expect_refusal(runner, raw, tmp_path, *needles)
    assert "row" in output and "--on-error skip" in output


def test_skip_mode_lists_every_skipped_row(tmp_path):
    tables = default_tables()
    tables["rel", "train"][1] = relation("P00", 1, "many")
    tables["rvw", "dev"][2] = review("P10", 2, content="")
    raw = write_release(tmp_path / "raw", tables)
    manifest = _ingest(raw, tmp_path, on_error="skip")
    assert len(manifest.reviews) == 16
    failures = [json.loads(line)
                for line in (manifest.path / "failures.jsonl").read_text().splitlines()]
    assert {(f["item"], f["field"]) for f in failures} == {("P00-1", "upvotes"),
                                                           ("P10-2", "content")}
    assert manifest.info["counts"]["skipped_rows"] == 2


def test_library_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        ingest(tmp_path / "absent", dataset="amazon", category="home", cache_dir=tmp_path)


def test_sample_dataset_ingests(sample_manifest):
    manifest = Manifest(sample_manifest)
    assert len(manifest.products) == 8
    assert set(manifest.reviews["split"]) == {"train", "dev", "test"}
    from mrhp_prep.data.sample import SAMPLE_IMAGES
    present = [(SAMPLE_IMAGES / p).is_file() for p in manifest.images["path"]]
    assert all(present) and len(present) > 20


def test_console_script_exit_codes_and_last_line(tmp_path):
    raw = write_release(tmp_path / "raw", default_tables())
    script = Path(sys.executable).with_name("mrhp-prep")
    args = [str(script), "ingest", str(raw), "--dataset", "amazon", "--category", "electronics",
            "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert (folder / "MANIFEST.json").is_file() and folder.is_relative_to(tmp_path / "cache")
    assert "reviews" in done.stderr
    (raw / "Electronics.prd.dev").write_text("{")
    refused = subprocess.run(args + ["--force"], capture_output=True, text=True, check=False)
    assert refused.returncode == 3 and "Electronics.prd.dev" in refused.stderr
    usage = subprocess.run([str(script), "ingest", "--bogus"], capture_output=True, text=True)
    assert usage.returncode == 2
