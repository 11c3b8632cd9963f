"""Loading the release tables: re-parsing the pandas-JSON files (the earlier systems, on every
run) against reading the manifest that `ingest` writes once (Parquet).

    python benchmarks/ingest.py [--products 2000] [--reviews-per-product 20] [--repeats 5]

Prints the median seconds of each way and their ratio. The one-off cost of `ingest` itself is
printed too, so the break-even number of runs can be read off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from release_files import product, relation, review, write_release  # noqa: E402

from mrhp_prep.data.ingest import ingest  # noqa: E402
from mrhp_prep.data.manifest import Manifest  # noqa: E402

WORDS = ("battery", "screen", "charger", "cable", "sound", "quality", "price", "works", "great",
         "after", "month", "broke", "returned", "recommend", "bright", "heavy", "light")


def make_release(folder: Path, products: int, per_product: int) -> Path:
    tables = {}
    for s, split in enumerate(("train", "dev", "test")):
        prd, rvw, rel = [], [], []
        for p in range(products // 3):
            pid = f"B{s}{p:07d}"
            description = " ".join(WORDS[(p + i) % len(WORDS)] for i in range(40))
            prd.append(product(pid, description=description,
                               img_url=[f"https://example.com/{pid}._SY88.jpg"]))
            for r in range(per_product):
                text = " ".join(WORDS[(p * r + i) % len(WORDS)] for i in range(60))
                rvw.append(review(pid, r, content=text))
                rel.append(relation(pid, r, (p + r) % 30))
        tables["prd", split], tables["rvw", split], tables["rel", split] = prd, rvw, rel
    return write_release(folder, tables)


def earlier_way(raw: Path) -> int:
    """What each training run of the earlier systems did: pd.read_json of every file."""
    rows = 0
    for path in sorted(raw.iterdir()):
        rows += len(pd.read_json(path))
    return rows


def our_way(manifest: Path) -> int:
    loaded = Manifest(manifest)
    return len(loaded.products) + len(loaded.reviews) + len(loaded.images)


def median_seconds(func, arg, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func(arg)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--reviews-per-product", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = make_release(Path(tmp) / "raw", args.products, args.reviews_per_product)
        start = time.perf_counter()
        manifest = ingest(raw, dataset="amazon", category="electronics",
                          cache_dir=Path(tmp) / "c").path
        ingest_seconds = time.perf_counter() - start
        reviews = len(Manifest(manifest).reviews)
        earlier = median_seconds(earlier_way, raw, args.repeats)
        ours = median_seconds(our_way, manifest, args.repeats)
    print(f"release: {args.products} products, {reviews} reviews")
    print(f"one-off ingest:                      {ingest_seconds:8.3f} s")
    print(f"earlier way (pd.read_json each run): {earlier:8.3f} s (median of {args.repeats})")
    print(f"ours (read the Parquet manifest):    {ours:8.3f} s (median of {args.repeats})")
    print(f"ratio: {earlier / ours:.1f}x faster per run")


if __name__ == "__main__":
    main()
