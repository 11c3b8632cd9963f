"""Bad release files walked through `mrhp-prep ingest` (the table promises: see bad_input_table)."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from bad_input_table import Case, ingest_argv, params, raw_json_cell, release, run_case
from mrhp_prep.cli import cli
from release_files import default_tables, write_release


def _rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def utf16_file(tmp):
    raw = release(tmp)
    path = raw / "Electronics.rvw.train"
    _rewrite(path, path.read_text().encode("utf-16"))
    return ingest_argv(raw, tmp)


def gzip_bytes(tmp):
    raw = release(tmp)
    path = raw / "Electronics.prd.dev"
    _rewrite(path, gzip.compress(path.read_bytes()))
    return ingest_argv(raw, tmp)


def not_utf8(tmp):
    raw = release(tmp)
    path = raw / "Electronics.rvw.test"
    _rewrite(path, path.read_bytes().replace(b"Review 1", b"Review \xe9"))
    return ingest_argv(raw, tmp)


def lone_surrogate_id(tmp):
    raw = raw_json_cell(tmp, ("rvw", "train"), 0, "review_id", '"P00-\\ud800"')
    return ingest_argv(raw, tmp)


def lone_surrogate_product_id(tmp):
    raw = raw_json_cell(tmp, ("prd", "dev"), 1, "product_id", '"P1\\udc80"')
    return ingest_argv(raw, tmp)


def product_rejected_with_reviews(tmp):
    raw = raw_json_cell(tmp, ("prd", "train"), 0, "img_url", "12")
    return ingest_argv(raw, tmp)


def image_url_number(tmp):
    raw = raw_json_cell(tmp, ("prd", "train"), 0, "img_url", "12")
    return ingest_argv(raw, tmp)


def image_url_number_skipped(tmp):
    raw = raw_json_cell(tmp, ("rvw", "dev"), 1, "img_url", "12")
    return ingest_argv(raw, tmp, "--on-error", "skip")


def huge_vote(tmp):
    raw = raw_json_cell(tmp, ("rel", "test"), 0, "upvotes", "1" + "0" * 30)
    return ingest_argv(raw, tmp, "--out", str(tmp / "out"))


def huge_vote_skipped(tmp):
    raw = raw_json_cell(tmp, ("rel", "test"), 0, "upvotes", "1e30")
    return ingest_argv(raw, tmp, "--on-error", "skip")


def stray_prefix_beside(tmp):
    raw = release(tmp)
    shutil.copy(raw / "Electronics.rel.train", raw / "Electronic.rel.train")
    return ingest_argv(raw, tmp)


def release_file_is_a_broken_link(target: str):
    def build(tmp):
        raw = release(tmp)
        (raw / "Electronics.rel.dev").unlink()
        os.symlink(target, raw / "Electronics.rel.dev")
        return ingest_argv(raw, tmp)
    return build


def two_copies_in_subfolders(tmp):
    write_release(tmp / "raw" / "a", default_tables())
    write_release(tmp / "raw" / "b", default_tables())
    return ingest_argv(tmp / "raw", tmp)


def json_and_plain_beside(tmp):
    raw = release(tmp)
    shutil.copy(raw / "Electronics.prd.test", raw / "Electronics.prd.test.json")
    return ingest_argv(raw, tmp)


def vote_nan(tmp):
    return ingest_argv(raw_json_cell(tmp, ("rel", "dev"), 2, "upvotes", "NaN"), tmp)


def vote_infinity(tmp):
    return ingest_argv(raw_json_cell(tmp, ("rel", "dev"), 2, "upvotes", "-Infinity"), tmp)


def release_is_a_number(tmp):
    raw = release(tmp)
    (raw / "Electronics.prd.train").write_text("42")
    return ingest_argv(raw, tmp)


CASES = [
    Case("ingest: UTF-16 file", utf16_file, refused=("Electronics.rvw.train", "UTF-16")),
    Case("ingest: gzip bytes under the plain name", gzip_bytes,
         refused=("Electronics.prd.dev", "gzip")),
    Case("ingest: not UTF-8", not_utf8, refused=("Electronics.rvw.test", "not UTF-8")),
    Case("ingest: lone surrogate in an id", lone_surrogate_id,
         refused=("Electronics.rvw.train", "row 0", "review_id", "'P00-\\ud800'",
                  "lone UTF-16 surrogate (\\ud800) at character 5")),
    Case("ingest: lone surrogate in a product id", lone_surrogate_product_id,
         refused=("Electronics.prd.dev", "row 1", "'product_id'", "'P1\\udc80'",
                  "lone UTF-16 surrogate")),
    Case("ingest: reviews of a rejected product", product_rejected_with_reviews,
         refused=("review 'P00-0' names product 'P00', which was rejected (Electronics.prd.train "
                  "row 0, field 'img_url': expected a URL or a list of URLs, got 12)",),
         absent=("not in Electronics.prd.train",)),
    Case("ingest: img_url 12", image_url_number, refused=("img_url", "12")),
    Case("ingest: img_url 12 with --on-error skip", image_url_number_skipped, listed=("P10-1",)),
    Case("ingest: vote 10^30", huge_vote, refused=("upvotes", "Electronics.rel.test")),
    Case("ingest: vote 1e30 with --on-error skip", huge_vote_skipped, listed=("P20-0",)),
    Case("ingest: vote NaN", vote_nan, refused=("upvotes", "row 2", "Electronics.rel.dev")),
    Case("ingest: vote -Infinity", vote_infinity, refused=("upvotes", "-inf")),
    Case("ingest: a file holding one number", release_is_a_number,
         refused=("Electronics.prd.train", "not a table")),
    Case("ingest: stray release of another spelling", stray_prefix_beside,
         refused=("Electronic.*", "Electronics.*", "ambiguous")),
    Case("ingest: a release file that is a link loop",
         release_file_is_a_broken_link("Electronics.rel.dev"),
         refused=("Electronics.rel.dev", "cannot be read", "symbolic links")),
    Case("ingest: a release file linking to a name too long",
         release_file_is_a_broken_link("z" * 300), refused=("Electronics.rel.dev", "too long")),
    Case("ingest: two copies in subfolders", two_copies_in_subfolders,
         refused=("a/Electronics", "b/Electronics", "ambiguous")),
    Case("ingest: X and X.json", json_and_plain_beside,
         refused=("Electronics.prd.test.json", "2 files")),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case, runner, tmp_path):
    run_case(runner, case, tmp_path)


# --- promises beside the table ------------------------------------------------------------------

def test_the_manifest_records_every_file_read(tmp_path):
    import hashlib

    from mrhp_prep.data.ingest import ingest

    raw = release(tmp_path)
    run = ingest(raw, dataset="amazon", category="electronics", cache_dir=tmp_path / "cache")
    files = run.manifest()["files_read"]
    assert sorted(Path(f["path"]).name for f in files) == sorted(p.name for p in raw.iterdir())
    for record in files:
        data = Path(record["path"]).read_bytes()
        assert record["size"] == len(data)
        assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_lone_surrogate_in_text_is_replaced_and_counted(runner, tmp_path):
    from mrhp_prep.data.manifest import Manifest

    raw = raw_json_cell(tmp_path, ("rvw", "dev"), 0, "content", '"bad \\udc80 text"')
    result = runner.invoke(cli, ingest_argv(raw, tmp_path))
    assert result.exit_code == 0, result.output
    manifest = Manifest(Path(result.stdout.strip().splitlines()[-1]))
    assert manifest.info["counts"]["cells_with_lone_surrogates"] == 1
    assert "bad \ufffd text" in set(manifest.reviews["text"])
    assert "lone UTF-16 surrogates" in result.output
