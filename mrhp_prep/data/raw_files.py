"""Find and parse the raw MRHP release files: `{category}.{prd|rvw|rel}.{train|dev|test}`.

The release stores each table with pandas' `to_json`. We accept every table layout
`pandas.read_json` can produce (`columns`, `index`, `records`, `split`, `table` orients)
and JSON lines, and keep every value as Python objects (ids stay strings even when they
look like numbers).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ..errors import InputError

SPLITS = ("train", "dev", "test")
KINDS = ("prd", "rvw", "rel")

# How the release and its forks spell the category prefixes (compared after normalising).
CATEGORY_PREFIXES = {
    "clothing": ("Clothing_Shoes_and_Jewelry", "Clothing Shoes and Jewelry", "Clothing",
                 "Clothing_Shoes_Jewelry", "clothing_shoes_jewelry", "Fashion"),
    "electronics": ("Electronics", "Electronic"),
    "home": ("Home_and_Kitchen", "Home and Kitchen", "Home_Kitchen", "Home", "HomeKitchen"),
}

# The key that carries each row's position in the error messages.
ROW_KEY = "__row__"


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()).replace("and", "")


def find_release_files(raw_dir: Path, category: str) -> dict[tuple[str, str], Path]:
    """Map (kind, split) to the file of `category` in `raw_dir` (searched one level deep too)."""
    wanted = {_normalise(p) for p in CATEGORY_PREFIXES[category]}
    pattern = re.compile(r"^(?P<prefix>.+)\.(?P<kind>prd|rvw|rel)\.(?P<split>train|dev|test)"
                         r"(?:\.json|\.jsonl)?$")
    found: dict[tuple[str, str], Path] = {}
    candidates = sorted(raw_dir.glob("*")) + sorted(raw_dir.glob("*/*"))
    for path in candidates:
        match = pattern.match(path.name)
        if not match or not path.is_file():
            continue
        if _normalise(match["prefix"]) in wanted:
            found.setdefault((match["kind"], match["split"]), path)
    missing = [f"{kind}.{split}" for split in SPLITS for kind in KINDS
               if (kind, split) not in found]
    if missing:
        prefixes = ", ".join(CATEGORY_PREFIXES[category][:2])
        raise InputError(
            f"missing release files for category '{category}': {', '.join(missing)}",
            file=str(raw_dir),
            hint=f"the folder must hold {{prefix}}.{{prd,rvw,rel}}.{{train,dev,test}} with a "
                 f"prefix such as {prefixes}")
    return found


def read_table(path: Path) -> pd.DataFrame:
    """Read one pandas-JSON table; each row keeps its position or index key in `__row__`."""
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise InputError("the file is empty", file=str(path),
                         hint="re-extract it from MRHPDatasets.zip")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as whole_error:
        parsed = _read_json_lines(path, text, whole_error)
    return _to_frame(parsed, path)


def _read_json_lines(path: Path, text: str, whole_error: json.JSONDecodeError) -> list:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            error = whole_error if number == 1 else exc
            raise InputError(f"not valid JSON ({error.msg} at line {error.lineno if number == 1 else number}, "
                             f"column {error.colno})", file=str(path),
                             hint="the file is damaged or truncated: re-extract it from the "
                                  "release zip") from exc
    return rows


def _to_frame(parsed: object, path: Path) -> pd.DataFrame:
    records: list[dict]
    keys: list
    if isinstance(parsed, list):
        records, keys = parsed, list(range(len(parsed)))
    elif isinstance(parsed, dict) and {"columns", "data"} <= parsed.keys():  # split orient
        keys = parsed.get("index") or list(range(len(parsed["data"])))
        records = [dict(zip(parsed["columns"], row)) for row in parsed["data"]]
    elif isinstance(parsed, dict) and {"schema", "data"} <= parsed.keys():  # table orient
        records = parsed["data"]
        keys = list(range(len(records)))
    elif isinstance(parsed, dict) and parsed and all(isinstance(v, dict) for v in parsed.values()):
        inner = next(iter(parsed.values()))
        if _looks_like_columns(parsed, inner):
            keys = list(inner.keys())
            records = [{col: values.get(k) for col, values in parsed.items()} for k in keys]
        else:  # index orient: {row key: {column: value}}
            keys, records = list(parsed.keys()), list(parsed.values())
    else:
        raise InputError("not a table written by pandas to_json (expected a list of rows or "
                         "a mapping of columns)", file=str(path),
                         hint="write the table with DataFrame.to_json(orient='records') or "
                              "use the release file as it is")
    bad = [k for k, r in zip(keys, records) if not isinstance(r, dict)]
    if bad:
        raise InputError("a row is not a JSON object", file=str(path), row=bad[0])
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame = frame.astype(object).where(frame.notna(), None)
    frame[ROW_KEY] = keys
    return frame


def _looks_like_columns(parsed: dict, inner: dict) -> bool:
    """`columns` orient when the outer keys are known column names, or inner keys are row numbers."""
    known = {"product_id", "review_id", "name", "content", "upvotes", "img_url", "title",
             "description", "keyword", "brand_name", "time"}
    if set(parsed) & known:
        return True
    return all(str(k).isdigit() for k in list(inner)[:20]) and not set(inner) & known
