"""The predictions file of a run (`predictions-<split>.jsonl`): its one writer and reader.

One JSON object per line: `product_id`, `review_id`, `label` (an int when it is one),
`score` and `rank` (1 = first within its product). `read_predictions` also reads CSV, TSV and
Parquet tables with the same columns, so other systems' scores can be evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ...atomic import atomic_path
from ...errors import InputError
from ..data.checks import first_few

PREDICTION_COLUMNS = ("product_id", "review_id", "label", "score")


def write_predictions(path: Path, frame: pd.DataFrame) -> None:
    """JSON lines: product_id, review_id, label, score, rank (label as an int when it is one)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in frame.itertuples(index=False):
            label = row.label
            label = int(label) if float(label).is_integer() else float(label)
            handle.write(json.dumps({"product_id": row.product_id, "review_id": row.review_id,
                                     "label": label, "score": float(row.score),
                                     "rank": int(row.rank)}, allow_nan=False) + "\n")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A predictions file (JSONL, CSV or Parquet) with product_id, review_id, label, score."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in {".jsonl", ".json", ".ndjson"}:
            frame = pd.read_json(path, lines=suffix != ".json", dtype={"product_id": str,
                                                                        "review_id": str})
        elif suffix in {".csv", ".tsv"}:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",",
                                dtype={"product_id": str, "review_id": str})
        elif suffix in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
        else:
            raise InputError(f"unknown file type '{suffix}'", file=str(path),
                             hint="give a .jsonl, .csv or .parquet file")
    except InputError:
        raise
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read the predictions: {exc}", file=str(path)) from exc
    check_prediction_rows(frame, str(path))   # empty, null ids, inf, repeated reviews
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", file=str(path),
                         field=missing[0], hint="the file needs product_id, review_id, label "
                                                "and score columns")
    for column in ("label", "score"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            cell = frame[column].iloc[bad[0]]
            # a numpy scalar as Python would write it ('abc', nan), never np.float64(nan)
            shown = cell.item() if isinstance(cell, np.generic) else cell
            empty = shown is None or (isinstance(shown, float) and shown != shown)
            what = "is empty or NaN" if empty else f"is not a number: {shown!r:.60}"
            raise InputError(f"the {column} {what}", file=str(path),
                             row=int(bad[0]), field=column,
                             hint="every row needs a numeric label and score")
        frame[column] = values.astype(np.float64)
    frame["product_id"] = frame["product_id"].astype(str)
    frame["review_id"] = frame["review_id"].astype(str)
    return frame


def check_prediction_rows(frame: pd.DataFrame, path: str) -> None:
    """A predictions table to evaluate: rows present, ids present and unique, finite numbers.

    Row numbers in the messages count data rows from 0 (the header is not a row).
    """
    if not len(frame):
        raise InputError("the predictions file has no rows", file=path,
                         hint="score some reviews first (mrhp-prep predict or train)")
    for column in ("product_id", "review_id"):
        if column not in frame.columns:
            continue
        null = np.flatnonzero(frame[column].isna().to_numpy())
        if len(null):
            raise InputError(f"{len(null)} row(s) have no {column} (rows {first_few(null)})",
                             file=path, row=int(null[0]), field=column,
                             hint=f"every row needs a {column}; fix or drop those rows")
    for column in ("label", "score"):
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isinf(values))
        if len(bad):
            raise InputError(f"{values[bad[0]]} is not a finite number (rows {first_few(bad)})",
                             file=path, row=int(bad[0]), field=column,
                             hint="every row needs a finite numeric label and score")
    if "review_id" in frame.columns:
        ids = frame["review_id"].astype(str)
        repeated = np.flatnonzero(ids.duplicated(keep=False).to_numpy())
        if len(repeated):
            raise InputError(
                f"{ids.iloc[repeated].nunique()} review id(s) appear more than once "
                f"(e.g. {ids.iloc[repeated[0]]!r} at rows "
                f"{first_few(np.flatnonzero((ids == ids.iloc[repeated[0]]).to_numpy()))})",
                file=path, row=int(repeated[0]), field="review_id",
                hint="each review must be scored once; remove the repeated rows")
