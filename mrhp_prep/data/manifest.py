"""The manifest: what `ingest` writes and every later stage reads.

A manifest folder holds three Parquet tables and the stage's `MANIFEST.json`:

`products.parquet`, one row per product:
    product_id (string), split (string: train|dev|test), name, description, keyword,
    brand_name (string, "" when absent), text (string: the text the models read),
    num_images (int32)

`reviews.parquet`, one row per review:
    review_id (string), product_id (string), split, title, content (string),
    text (string: the text the models read), upvotes (int64: as stored in the release),
    label (int64: after the label policy), time (string or null)

`images.parquet`, one row per image URL:
    image_id (string: "{item_id}/pic_{k}.jpg"), item_id (string), role (string: prd|rvw),
    split, k (int32: position in the item's list), url (string),
    path (string: relative to the images root, "{split}/{role}/{item_dir}/pic_{k}.jpg")

Positions in `text` are character offsets; every later stage refers to text that way.
`MANIFEST.json` records each table's size and SHA-256; `Manifest` checks them when it opens
the folder (`verify.py`), so a table changed after ingest finished is refused, not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_path
from ..verify import file_records, read_verified

FORMAT_VERSION = 1
TABLES = ("products", "reviews", "images")

PRODUCT_SCHEMA = pa.schema([
    ("product_id", pa.string()), ("split", pa.string()), ("name", pa.string()),
    ("description", pa.string()), ("keyword", pa.string()), ("brand_name", pa.string()),
    ("text", pa.string()), ("num_images", pa.int32()),
])
REVIEW_SCHEMA = pa.schema([
    ("review_id", pa.string()), ("product_id", pa.string()), ("split", pa.string()),
    ("title", pa.string()), ("content", pa.string()), ("text", pa.string()),
    ("upvotes", pa.int64()), ("label", pa.int64()), ("time", pa.string()),
])
IMAGE_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("item_id", pa.string()), ("role", pa.string()),
    ("split", pa.string()), ("k", pa.int32()), ("url", pa.string()), ("path", pa.string()),
])


def table_file(name: str) -> str:
    """The file name of one table ("products", "reviews" or "images")."""
    return f"{name}.parquet"


def write_tables(folder: str | Path, tables: dict[str, pa.Table]) -> dict[str, dict]:
    """Write the tables (each atomically) into a manifest folder; returns their file records
    (size and SHA-256) for MANIFEST.json."""
    for name, table in tables.items():
        with atomic_path(Path(folder) / table_file(name)) as tmp:
            pq.write_table(table, tmp)
    return file_records(folder, [table_file(name) for name in tables])


def path_component(item_id: str) -> str:
    """An id made safe as one folder name: no separators, no '..', no NUL, reversible."""
    escaped = quote(item_id, safe=" -_.,()[]+=@~")
    if escaped in {"", ".", ".."} or escaped.startswith("."):
        escaped = "%2E" + escaped[1:] if escaped else "%00"
    return escaped


def image_relpath(split: str, role: str, item_id: str, k: int) -> str:
    return f"{split}/{role}/{path_component(item_id)}/pic_{k}.jpg"


def leaves_images_root(relpath: str) -> bool:
    """Whether an image `path` of the manifest leads out of the images root: an absolute
    path, a `..` among its parts, or no path at all (a manifest may come from anywhere).

    The rule is lexical, the same for fetch-images and extract-rois: links are not resolved.
    A link inside the root (a split folder on another disk) is the user's own and is
    followed wherever it points."""
    rel = PurePosixPath(relpath)
    return not rel.parts or rel.is_absolute() or ".." in rel.parts


@dataclass
class Manifest:
    """A finished manifest folder, its tables loaded on first use."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)
        self.info = read_verified(self.path, stage="ingest")

    @property
    def name(self) -> str:
        """Dataset name used for the cache tree, e.g. 'amazon-electronics'."""
        return self.info["dataset_name"]

    @property
    def dataset(self) -> str:
        return self.info["settings"]["dataset"]

    @property
    def relevance_threshold(self) -> int:
        """Labels above this count as relevant in MAP/NDCG: 1 for Amazon, 0 for Lazada."""
        return 1 if self.dataset == "amazon" else 0

    def table_path(self, name: str) -> Path:
        return self.path / table_file(name)

    @cached_property
    def products(self) -> pd.DataFrame:
        return pd.read_parquet(self.table_path("products"))

    @cached_property
    def reviews(self) -> pd.DataFrame:
        return pd.read_parquet(self.table_path("reviews"))

    @cached_property
    def images(self) -> pd.DataFrame:
        return pd.read_parquet(self.table_path("images"))
