"""Write small raw MRHP releases (pandas-JSON files) for the ingest tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

SPLITS = ("train", "dev", "test")


def product(pid: str, name: str = "Steel Water Bottle", description: str = "Keeps drinks cold.",
            img_url=None) -> dict:
    return {"product_id": pid, "name": name, "img_url": img_url if img_url is not None else [],
            "keyword": "", "description": description, "brand_name": "Acme"}


def review(pid: str, index: int, content: str = "It keeps water cold for a whole day at work.",
           img_url=None) -> dict:
    return {"product_id": pid, "review_id": f"{pid}-{index}", "title": "ok", "content": content,
            "img_url": img_url if img_url is not None else [], "time": "2018-01-01"}


def relation(pid: str, index: int, votes) -> dict:
    return {"product_id": pid, "review_id": f"{pid}-{index}", "upvotes": votes}


def default_tables() -> dict[tuple[str, str], list[dict]]:
    """Two products per split, three reviews each, votes 0..5."""
    tables = {}
    for s, split in enumerate(SPLITS):
        products, reviews, relations = [], [], []
        for p in range(2):
            pid = f"P{s}{p}"
            products.append(product(pid))
            for r in range(3):
                reviews.append(review(pid, r, content=f"Review {r} of {pid}: it keeps water cold."))
                relations.append(relation(pid, r, votes=r + 2 * p))
        tables["prd", split] = products
        tables["rvw", split] = reviews
        tables["rel", split] = relations
    return tables


def write_release(folder: Path, tables: dict, prefix: str = "Electronics",
                  orient: str = "columns") -> Path:
    """Write every (kind, split) table as `{prefix}.{kind}.{split}` with pandas' to_json."""
    folder.mkdir(parents=True, exist_ok=True)
    for (kind, split), rows in tables.items():
        path = folder / f"{prefix}.{kind}.{split}"
        frame = pd.DataFrame(rows)
        if orient == "lines":
            frame.to_json(path, orient="records", lines=True)
        elif orient == "raw-records":  # plain json.dump, for values pandas would coerce
            path.write_text(json.dumps(rows))
        else:
            frame.to_json(path, orient=orient)
    return folder
