"""Reading one category's release files into manifest rows for `ingest`: ids checked and
deduplicated, rows that refer to rejected ones followed up, labels graded, problems listed.

`_ReleaseReader` holds what reading one category shares across its splits and file kinds;
`Problems` lists the bad rows (fatal under --on-error fail, skipped and listed under skip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import InputError
from .cells import (cell_text, count_surrogates, id_problem, image_urls, printable,
                    review_year, valid_id, vote_count)
from .manifest import image_relpath
from .raw_files import ROW_KEY

REQUIRED = {
    "prd": ("product_id", "name"),
    "rvw": ("product_id", "review_id", "content"),
    "rel": ("product_id", "review_id", "upvotes"),
}


def grade_votes(votes: int) -> int | None:
    """SANCL's grading of raw votes: 1→0, 2–3→1, 4–7→2, 8–15→3, ≥16→4; 0 votes → dropped."""
    if votes <= 0:
        return None
    return min(int(math.log2(votes)), 4)


def _image_rows(item_id: str, role: str, split: str, urls: list[str]) -> list[dict]:
    return [{"image_id": f"{item_id}/pic_{k}.jpg", "item_id": item_id, "role": role,
             "split": split, "k": k, "url": url, "path": image_relpath(split, role, item_id, k)}
            for k, url in enumerate(urls)]


@dataclass
class Problems:
    """Row-level problems: fatal under --on-error fail, skipped and listed under skip."""

    items: list[dict] = field(default_factory=list)

    def add(self, file: Path, row: object, field_name: str | None, message: str, item: str) -> None:
        self.items.append({"item": item, "file": str(file), "row": row, "field": field_name,
                           "reason": message})

    def raise_all(self) -> None:
        first = self.items[0]
        listing = "\n".join(f"  - {p['file']}, row {p['row']}"
                            + (f", field '{p['field']}'" if p["field"] else "")
                            + f": {p['reason']}" for p in self.items[:20])
        more = f"\n  ... and {len(self.items) - 20} more" if len(self.items) > 20 else ""
        raise InputError(
            f"{len(self.items)} bad row(s); nothing was written:\n{listing}{more}",
            file=first["file"], row=first["row"], field=first["field"],
            hint="fix the rows, or pass --on-error skip to leave them out (they are listed in "
                 "the stage's failures.jsonl)")


def _new_id(row: dict, column: str, path: Path, seen: dict[str, str],
            problems: Problems) -> str | None:
    """The row's id in `column` when it is usable and not in `seen` (id -> where it was
    first seen); otherwise None, with the problem noted against the row."""
    item_id = valid_id(row.get(column))
    if item_id is None:
        problems.add(path, row[ROW_KEY], column, id_problem(row.get(column)),
                     item=printable(str(row.get(column))))
    elif item_id in seen:
        kind = column.removesuffix("_id")
        problems.add(path, row[ROW_KEY], column,
                     f"duplicate {kind} id '{item_id}' (first seen in {seen[item_id]})",
                     item=item_id)
        item_id = None
    return item_id


def _check_columns(frame: pd.DataFrame, kind: str, path: Path) -> None:
    missing = [c for c in REQUIRED[kind] if c not in frame.columns]
    if missing:
        have = ", ".join(c for c in frame.columns if c != ROW_KEY) or "none"
        raise InputError(f"missing required column(s) {', '.join(missing)} (columns: {have})",
                         file=str(path), field=missing[0],
                         hint=f"a .{kind} file needs {', '.join(REQUIRED[kind])}")


@dataclass
class _ReleaseReader:
    """What reading one category's files shares across its splits and file kinds: the ids
    seen so far (duplicates are problems), the problems, the image rows and the counts of
    reviews left out by policy. With `min_review_year`, reviews dated before that year (their
    `time` cell) are left out and counted, as SANCL's Amazon reader drops reviews of 2015 and
    earlier."""

    dataset: str
    labels: str
    use_description: bool
    min_review_year: int | None = None
    problems: Problems = field(default_factory=Problems)
    seen_products: dict[str, str] = field(default_factory=dict)
    seen_reviews: dict[str, str] = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)
    surrogate_cells: int = 0
    dropped_zero_votes: int = 0
    dropped_before_year: int = 0
    # Of the split being read, for the rows that follow from a rejected one: product id ->
    # where and why its row was rejected, review id seen before -> where its row was refused.
    rejected_products: dict[str, str] = field(default_factory=dict)
    duplicate_reviews: dict[str, str] = field(default_factory=dict)

    def _reject_product(self, path: Path, row: dict, column: str, pid: str,
                        message: str) -> None:
        self.problems.add(path, row[ROW_KEY], column, message, item=pid)
        self.rejected_products[pid] = f"{path.name} row {row[ROW_KEY]}, field '{column}': {message}"

    def products(self, table: pd.DataFrame, path: Path, split: str) -> dict[str, dict]:
        """The usable products of one .prd file, by id (their image rows are kept)."""
        split_products: dict[str, dict] = {}
        self.rejected_products = {}
        for row in table.to_dict("records"):
            self.surrogate_cells += count_surrogates(row)
            pid = _new_id(row, "product_id", path, self.seen_products, self.problems)
            if pid is None:
                continue
            name, description = cell_text(row.get("name")), cell_text(row.get("description"))
            text = f"{name} {description}".strip() if self.use_description else name
            if not text:
                self._reject_product(path, row, "name", pid,
                                     "empty product name and description")
                continue
            try:
                urls = image_urls(row.get("img_url"), self.dataset)
            except ValueError as exc:
                self._reject_product(path, row, "img_url", pid, str(exc))
                continue
            self.seen_products[pid] = f"{path.name} row {row[ROW_KEY]}"
            split_products[pid] = {
                "product_id": pid, "split": split, "name": name, "description": description,
                "keyword": cell_text(row.get("keyword")),
                "brand_name": cell_text(row.get("brand_name")),
                "text": text, "num_images": len(urls)}
            self.images.extend(_image_rows(pid, "prd", split, urls))
        return split_products

    def reviews(self, table: pd.DataFrame, path: Path, split: str,
                split_products: dict[str, dict], prd_path: Path) -> tuple[dict, set[str]]:
        """The usable reviews of one .rvw file by id (still without labels), and the ids of
        those rejected (their relation rows are not reported a second time)."""
        split_reviews: dict[str, dict] = {}
        rejected: set[str] = set()
        self.duplicate_reviews = {}
        for row in table.to_dict("records"):
            self.surrogate_cells += count_surrogates(row)
            rid = _new_id(row, "review_id", path, self.seen_reviews, self.problems)
            if rid is None:
                if valid_id(row.get("review_id")) is not None:
                    self.duplicate_reviews[valid_id(row.get("review_id"))] = (
                        f"{path.name} row {row[ROW_KEY]}: {self.problems.items[-1]['reason']}")
                continue
            pid = valid_id(row.get("product_id"))
            if pid not in split_products:
                rejected.add(rid)
                why = (f"which was rejected ({self.rejected_products[pid]})"
                       if pid in self.rejected_products else f"which is not in {prd_path.name}")
                self.problems.add(path, row[ROW_KEY], "product_id",
                                  f"review '{rid}' names product '{pid}', {why}", item=rid)
                continue
            content = cell_text(row.get("content"))
            if not content:
                rejected.add(rid)
                self.problems.add(path, row[ROW_KEY], "content",
                                  f"review '{rid}' has empty text", item=rid)
                continue
            try:
                urls = image_urls(row.get("img_url"), self.dataset)
            except ValueError as exc:
                rejected.add(rid)
                self.problems.add(path, row[ROW_KEY], "img_url", str(exc), item=rid)
                continue
            self.seen_reviews[rid] = f"{path.name} row {row[ROW_KEY]}"
            time_value = row.get("time")
            if self.min_review_year is not None:
                year = review_year(time_value)
                if year is None:
                    rejected.add(rid)
                    shown = cell_text(time_value)
                    self.problems.add(path, row[ROW_KEY], "time",
                                      f"review '{rid}' has no readable date ({shown!r:.40}), "
                                      "which --min-review-year needs", item=rid)
                    continue
                if year < self.min_review_year:
                    rejected.add(rid)        # left out by policy, not a problem
                    self.dropped_before_year += 1
                    continue
            split_reviews[rid] = {
                "review_id": rid, "product_id": pid, "split": split,
                "title": cell_text(row.get("title")), "content": content, "text": content,
                "upvotes": None, "label": None,
                "time": None if time_value is None else cell_text(time_value),
                "_urls": urls, "_row": row[ROW_KEY]}
        return split_reviews, rejected

    def relations(self, table: pd.DataFrame, path: Path, split_reviews: dict[str, dict],
                  rejected: set[str], rvw_path: Path) -> set[str]:
        """Label the reviews of one .rel file (votes and label set in place); returns the
        ids labelled."""
        labelled = set()
        for row in table.to_dict("records"):
            rid, pid = valid_id(row.get("review_id")), valid_id(row.get("product_id"))
            review = split_reviews.get(rid)
            if rid in rejected:
                continue
            if rid is None:
                self.problems.add(path, row[ROW_KEY], "review_id",
                                  id_problem(row.get("review_id")),
                                  item=printable(str(row.get("review_id"))))
                continue
            if review is None:
                why = (f"whose row was rejected ({self.duplicate_reviews[rid]})"
                       if rid in self.duplicate_reviews else f"which is not in {rvw_path.name}")
                self.problems.add(path, row[ROW_KEY], "review_id",
                                  f"relation names review '{rid}', {why}", item=rid)
                continue
            if pid != review["product_id"]:
                self.problems.add(path, row[ROW_KEY], "product_id",
                                  f"relation pairs review '{rid}' with product '{pid}', but the "
                                  f"review belongs to '{review['product_id']}'", item=rid)
                continue
            if rid in labelled:
                self.problems.add(path, row[ROW_KEY], "review_id",
                                  f"duplicate relation row for review '{rid}'", item=rid)
                continue
            votes = vote_count(row.get("upvotes"))
            if votes is None:
                self.problems.add(path, row[ROW_KEY], "upvotes",
                                  f"votes must be an integer from 0 to 2^63-1, got "
                                  f"{row.get('upvotes')!r:.40}", item=rid)
                continue
            labelled.add(rid)
            review["upvotes"] = votes
            review["label"] = votes if self.labels == "raw" else grade_votes(votes)
        return labelled

    def kept_reviews(self, split_reviews: dict[str, dict], labelled: set[str], rvw_path: Path,
                     rel_path: Path, split: str) -> list[dict]:
        """The labelled reviews (their image rows are kept); a review without a relation
        row is a problem, a 0-vote review under the graded policy is dropped and counted."""
        flagged = {p["item"] for p in self.problems.items}
        kept = []
        for rid, review in split_reviews.items():
            if rid not in labelled:
                if review["upvotes"] is None and rid not in flagged:
                    self.problems.add(rvw_path, review["_row"], "review_id",
                                      f"review '{rid}' has no row in {rel_path.name}", item=rid)
                continue
            if review["label"] is None:  # graded policy drops 0-vote reviews
                self.dropped_zero_votes += 1
                continue
            self.images.extend(_image_rows(rid, "rvw", split, review.pop("_urls")))
            review.pop("_row")
            kept.append(review)
        return kept
