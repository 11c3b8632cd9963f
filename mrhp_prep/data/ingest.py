"""`ingest`: read one category of the raw MRHP release into a manifest (see `manifest.py`)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ..cache import StageRun, open_stage
from ..errors import InputError
from ..verify import file_record
from .manifest import FORMAT_VERSION, IMAGE_SCHEMA, PRODUCT_SCHEMA, REVIEW_SCHEMA, write_tables
from .raw_files import SPLITS, find_release_files, read_table
from .release_reader import Problems, _check_columns, _ReleaseReader, grade_votes

log = logging.getLogger(__name__)

# grade_votes: the label policy, also read from here (training groups votes the same way).
__all__ = ["build_manifest", "grade_votes", "ingest", "label_policy_warning"]

def build_manifest(raw_dir: Path, dataset: str, category: str, labels: str, product_text: str,
                   on_error: str, min_review_year: int | None = None
                   ) -> tuple[dict[str, pd.DataFrame], Problems, dict]:
    """Read, check and join the nine files of one category. Returns tables, problems, stats."""
    files = find_release_files(raw_dir, category)
    use_description = product_text == "name+description" or (
        product_text == "auto" and not (dataset == "lazada" and category == "clothing"))
    reader = _ReleaseReader(dataset, labels, use_description, min_review_year)
    products, reviews = [], []
    for split in SPLITS:
        tables = {}
        for kind in ("prd", "rvw", "rel"):
            tables[kind] = read_table(files[kind, split])
            _check_columns(tables[kind], kind, files[kind, split])
        prd_path, rvw_path, rel_path = (files[k, split] for k in ("prd", "rvw", "rel"))
        if min_review_year is not None and "time" not in tables["rvw"].columns:
            raise InputError("--min-review-year needs each review's date, and this file has no "
                             "'time' column", file=str(rvw_path), field="time",
                             hint="leave --min-review-year out (the Lazada release has no "
                                  "review dates)")
        split_products = reader.products(tables["prd"], prd_path, split)
        split_reviews, rejected = reader.reviews(tables["rvw"], rvw_path, split,
                                                 split_products, prd_path)
        labelled = reader.relations(tables["rel"], rel_path, split_reviews, rejected, rvw_path)
        reviews.extend(reader.kept_reviews(split_reviews, labelled, rvw_path, rel_path, split))
        products.extend(split_products.values())

    problems = reader.problems
    if problems.items and on_error == "fail":
        problems.raise_all()

    # Products left without any review cannot be ranked: keep them but say so.
    review_counts = Counter(r["product_id"] for r in reviews)
    no_reviews = [p["product_id"] for p in products if review_counts[p["product_id"]] == 0]
    stats = {"dropped_zero_vote_reviews": reader.dropped_zero_votes,
             "dropped_reviews_before_year": reader.dropped_before_year,
             "products_without_reviews": len(no_reviews),
             # Lone UTF-16 surrogates in text cells, each replaced by U+FFFD.
             "cells_with_lone_surrogates": reader.surrogate_cells,
             "files_read": [_file_record(files[kind, split]) for split in SPLITS
                            for kind in ("prd", "rvw", "rel")]}
    kept_items = {p["product_id"] for p in products} | {r["review_id"] for r in reviews}
    images = [im for im in reader.images if im["item_id"] in kept_items]
    tables = {
        "products": pd.DataFrame(products, columns=PRODUCT_SCHEMA.names),
        "reviews": pd.DataFrame(reviews, columns=REVIEW_SCHEMA.names),
        "images": pd.DataFrame(images, columns=IMAGE_SCHEMA.names),
    }
    return tables, problems, stats


def _file_record(path: Path) -> dict:
    """Where a release file was, its size and SHA-256: the manifest says what was read."""
    return {"path": str(path.resolve()), **file_record(path)}


def label_policy_warning(labels: str, upvotes: pd.Series) -> str | None:
    """A warning when the data suggests the other label policy."""
    if upvotes.empty:
        return None
    top = int(upvotes.max())
    if labels == "raw" and top > 4:
        return (f"--labels raw keeps vote counts up to {top} as labels: these look like raw "
                "counts; SANCL grades them into 0-4 (--labels graded)")
    if labels == "graded" and top <= 4:
        return (f"--labels graded, but the largest vote count is {top}: the release may already "
                "be graded, and grading again shifts the labels (consider --labels raw)")
    return None


def ingest(raw_dir: str | Path, *, dataset: str, category: str, labels: str = "raw",
           product_text: str = "auto", on_error: str = "fail", name: str | None = None,
           out: str | Path | None = None, cache_dir: str | Path = "cache",
           force: bool = False, min_review_year: int | None = None) -> StageRun:
    """Run the ingest stage; returns the finished StageRun (already finished runs are reused).

    `min_review_year` leaves out reviews dated before that year (SANCL's reader: 2016)."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise InputError("no such folder", file=str(raw_dir),
                         hint="pass the folder holding the release's .prd/.rvw/.rel files")
    dataset_name = name or f"{dataset}-{category}"
    settings = {"dataset": dataset, "category": category, "labels": labels,
                "product_text": product_text, "on_error": on_error}
    if min_review_year is not None:     # only when set: earlier manifests keep their fingerprint
        settings["min_review_year"] = int(min_review_year)
    run = open_stage("ingest", dataset=dataset_name, settings=settings,
                     inputs={"raw": raw_dir}, format_version=FORMAT_VERSION, out=out,
                     cache_dir=cache_dir, force=force)
    if run.complete:
        log.info("ingest: reusing the finished manifest in %s", run.path)
        return run
    with run.computing():
        try:
            tables, problems, stats = build_manifest(raw_dir, dataset, category, labels,
                                                     product_text, on_error, min_review_year)
        except InputError:
            run.discard()  # a refused release leaves no folder behind
            raise
        files_read = stats.pop("files_read")
        for problem in problems.items:
            run.add_failure(**problem)
        schemas = {"products": PRODUCT_SCHEMA, "reviews": REVIEW_SCHEMA, "images": IMAGE_SCHEMA}
        # Every table is converted before any is written: a value Arrow refuses leaves no file.
        try:
            arrow_tables = {name: pa.Table.from_pandas(frame, schema=schemas[name],
                                                       preserve_index=False)
                            for name, frame in tables.items()}
        except (pa.ArrowException, ValueError, OverflowError) as exc:
            run.discard()
            raise InputError(f"a value does not fit the manifest's tables: {exc}",
                             file=str(raw_dir),
                             hint="find the value in the release files and correct it") from exc
        files = write_tables(run.path, arrow_tables)
        reviews = tables["reviews"]
        warning = label_policy_warning(labels, reviews["upvotes"])
        if warning:
            log.warning(warning)
        per_split = {split: {"products": int((tables["products"]["split"] == split).sum()),
                             "reviews": int((reviews["split"] == split).sum())} for split in SPLITS}
        counts = {"products": len(tables["products"]), "reviews": len(reviews),
                  "images": len(tables["images"]), "skipped_rows": len(problems.items),
                  "per_split": per_split, **stats}
        label_range = ([int(reviews["label"].min()), int(reviews["label"].max())]
                       if len(reviews) else None)
        run.finish(counts, dataset_name=dataset_name, label_range=label_range,
                   label_histogram={str(k): int(v) for k, v in
                                    sorted(Counter(reviews["label"]).items())},
                   label_warning=warning, files_read=files_read, files=files)
    return run
