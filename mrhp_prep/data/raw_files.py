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
from stat import S_ISREG

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
    """Map (kind, split) to the file of `category` in `raw_dir` (searched one level deep too).

    Exactly one release may match: one folder and one prefix spelling, one file per
    (kind, split). Anything else (a stray file of another spelling beside the release, two
    copies in subfolders, `X.rvw.train` beside `X.rvw.train.json`) is refused, naming the
    candidates, because the wrong choice would silently replace labels.
    """
    wanted = {_normalise(p) for p in CATEGORY_PREFIXES[category]}
    pattern = re.compile(r"^(?P<prefix>.+)\.(?P<kind>prd|rvw|rel)\.(?P<split>train|dev|test)"
                         r"(?:\.json|\.jsonl)?$")
    # (folder, prefix) -> {(kind, split): [paths]}
    releases: dict[tuple[Path, str], dict[tuple[str, str], list[Path]]] = {}
    candidates = _entries_two_levels(raw_dir)
    for path in candidates:
        match = pattern.match(path.name)
        if not match or _normalise(match["prefix"]) not in wanted:
            continue
        try:
            if not S_ISREG(path.stat().st_mode):
                continue
        except OSError as exc:  # a broken or looping link, a target name too long
            raise InputError(f"{path.name} cannot be read ({exc.strerror or exc})",
                             file=str(path), hint="replace the link with the release file, "
                                                  "or remove it") from None
        release = releases.setdefault((path.parent, match["prefix"]), {})
        release.setdefault((match["kind"], match["split"]), []).append(path)
    if len(releases) > 1:
        listing = "\n".join(f"  - {folder / prefix}.* ({sum(map(len, files.values()))} file(s))"
                            for (folder, prefix), files in sorted(releases.items()))
        raise InputError(f"{len(releases)} releases of category '{category}' were found; "
                         f"which one to read is ambiguous:\n{listing}", file=str(raw_dir),
                         hint="remove or move the ones you do not mean, or pass the folder "
                              "that holds only the one you mean")
    found: dict[tuple[str, str], Path] = {}
    for key, paths in next(iter(releases.values()), {}).items():
        if len(paths) > 1:
            raise InputError(f"{len(paths)} files hold {key[0]}.{key[1]}: "
                             + ", ".join(p.name for p in paths), file=str(paths[0].parent),
                             hint="keep one of them")
        found[key] = paths[0]
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


def _entries_two_levels(folder: Path) -> list[Path]:
    """The entries of `folder` and of its subfolders, sorted. (glob("*/*") raises on a link
    whose target name is too long; such a link is kept here, for the caller to name.)"""
    def children(path: Path) -> list[Path]:
        try:
            return sorted(path.iterdir()) if path.is_dir() else []
        except OSError:
            return []
    top = children(folder)
    return top + sorted(entry for path in top for entry in children(path))


def read_table(path: Path) -> pd.DataFrame:
    """Read one pandas-JSON table; each row keeps its position or index key in `__row__`."""
    text = _read_text(path)
    if not text.strip():
        raise InputError("the file is empty", file=str(path),
                         hint="re-extract it from MRHPDatasets.zip")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as whole_error:
        parsed = _read_json_lines(path, text, whole_error)
    return _to_frame(parsed, path)


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; compressed or UTF-16 files are named as such."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        raise InputError("the file is gzip-compressed", file=str(path),
                         hint=f"decompress it first (gunzip -c '{path.name}' > plain-file) and "
                              "pass the plain JSON")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(data) > 1 and b"\x00" in data[:2]):
        raise InputError("the file is UTF-16 text, not UTF-8", file=str(path),
                         hint="convert it (iconv -f UTF-16 -t UTF-8) or re-extract it from the "
                              "release zip")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, byte "
                         f"offset {exc.start})", file=str(path),
                         hint="the release is UTF-8 JSON: re-extract the file, or convert it "
                              "to UTF-8") from None


def _read_json_lines(path: Path, text: str, whole_error: json.JSONDecodeError) -> list:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            error = whole_error if number == 1 else exc
            line_number = error.lineno if number == 1 else number
            raise InputError(f"not valid JSON ({error.msg} at line {line_number}, "
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
    # Object columns keep each value as JSON gave it (a lone surrogate too, for ingest to
    # judge per row); inferred string columns would refuse it for the whole file.
    frame = pd.DataFrame(records, dtype=object) if records else pd.DataFrame()
    frame = frame.astype(object).where(frame.notna(), None)
    frame[ROW_KEY] = keys
    return frame


def _looks_like_columns(parsed: dict, inner: dict) -> bool:
    """`columns` orient when the outer keys are known column names, or inner keys are row
    numbers."""
    known = {"product_id", "review_id", "name", "content", "upvotes", "img_url", "title",
             "description", "keyword", "brand_name", "time"}
    if set(parsed) & known:
        return True
    return all(str(k).isdigit() for k in list(inner)[:20]) and not set(inner) & known
