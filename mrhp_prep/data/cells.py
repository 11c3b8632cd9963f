"""Reading one cell of a release row: text, ids, vote counts and image URLs.

Each reader takes the value as JSON gave it and returns a clean Python value, or None (or
raises ValueError, for `image_urls`) when the cell cannot be used; `ingest` decides what a
bad cell means for its row.
"""

from __future__ import annotations

import json
import math
import re

# Amazon thumbnails carry a size suffix such as "._SY88.jpg" or "._SX38_SY50_CR,0,0,38,50_.jpg".
_AMAZON_SIZE_SUFFIX = re.compile(r"\._[^/.]*\.(jpe?g|png|gif|webp)$", re.IGNORECASE)
_BAD_ID_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
# A lone UTF-16 surrogate ("\ud800" in the JSON) is not Unicode: no file format can store it.
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_MAX_VOTES = 2**63 - 1  # the int64 column of reviews.parquet
# Review dates: ISO ("2017-01-10"), Amazon's reviewTime ("09 1, 2016": the year after the
# last comma, as SANCL's reader takes it) or a bare year.
_ISO_DATE = re.compile(r"^(\d{4})-\d{1,2}-\d{1,2}(?:[T ].*)?$")
_COMMA_YEAR = re.compile(r",\s*(\d{4})$")
_BARE_YEAR = re.compile(r"^(\d{4})$")


def cell_text(value: object) -> str:
    """A cell as text; lone surrogates become U+FFFD (one character for one: offsets hold)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, list):
        return " ".join(cell_text(v) for v in value)
    return _SURROGATES.sub("\ufffd", str(value).strip())


def count_surrogates(row: dict) -> int:
    """How many text cells of a row hold a lone surrogate (ids are refused instead)."""
    return sum(1 for key, value in row.items()
               if key not in ("product_id", "review_id") and has_surrogate(value))


def has_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return _SURROGATES.search(value) is not None
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list) and any(has_surrogate(v) for v in value)


def printable(text: str) -> str:
    """`text` with control characters and lone surrogates escaped as Python writes them
    (\\x07, \\udc80), so that a message can name a bad id on any terminal."""
    return "".join(ascii(ch)[1:-1] if _SURROGATES.match(ch) or not ch.isprintable() else ch
                   for ch in text)


def id_problem(value: object) -> str:
    """Why `valid_id` refused `value`, naming the offending character and its position."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "the id is missing"
    text = str(value).strip()
    if not text:
        return "the id is empty"
    if text in {".", ".."}:
        return f"the id '{text}' would name a parent folder"
    found = _BAD_ID_CHARS.search(text)
    if found is None:
        return f"the id '{printable(text)}' is unusable"
    kind = ("a lone UTF-16 surrogate" if _SURROGATES.match(found.group())
            else "a control character")
    return (f"the id '{printable(text)}' holds {kind} ({printable(found.group())}) at "
            f"character {found.start() + 1}")


def valid_id(value: object) -> str | None:
    """The id as a string, or None when it is missing or could not be a safe key."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text or _BAD_ID_CHARS.search(text) or text in {".", ".."}:
        return None
    return text


def vote_count(value: object) -> int | None:
    """The vote count as an int in 0 .. 2^63 - 1, else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 0 <= value <= _MAX_VOTES:
        return value
    return None


def review_year(value: object) -> int | None:
    """The year of a review's `time` cell ("2017-01-10", "09 1, 2016" or "2016"); None when
    the cell is empty or in none of these forms."""
    text = cell_text(value)
    for pattern in (_ISO_DATE, _COMMA_YEAR, _BARE_YEAR):
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None


def image_urls(value: object, dataset: str) -> list[str]:
    """Normalise an `img_url` cell to a list of URLs.

    Accepts a URL, a list of URLs, a list of `{"url": ...}` dicts (Lazada) or either list as
    a JSON string. Amazon size suffixes are stripped to get the full-size image.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                value = [stripped]
        else:
            value = [stripped] if stripped else []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a URL or a list of URLs, got {value!r:.60}")
    urls = []
    for entry in value:
        url = entry.get("url") if isinstance(entry, dict) else entry
        if isinstance(url, str) and url.strip():
            url = _SURROGATES.sub("\ufffd", url.strip())
            if dataset == "amazon":
                url = _AMAZON_SIZE_SUFFIX.sub(r".\1", url)
            urls.append(url)
    return urls
