"""Time and size of `mrhp-prep report` and `mrhp-prep show-probes` at Amazon-Home scale.

There is no earlier way to compare with (the views are new), so this prints figures, not a
ratio: the wall time of each command as a user runs it (a new process: imports included;
median of --repeats runs), the size of the page, the thumbnails it embeds, and the same
report with the caps lifted tenfold.

A synthetic run is built first (not timed): a release of --products test products with
--reviews reviews each (2-6 real review sentences from the bundled sample, about 300
characters) plus a small train and dev split, ingested; real photographs (scikit-image's,
500 px on the long side) hard-linked at every image path, one per product and one for 40 %
of the reviews; a RoI store of 36 regions per image (64-d features: the report reads only
boxes, classes and confidences); static text vectors; probe masks; one epoch of a small
SANCL trained and scored on it, so the run folder is a real one.

Run: python benchmarks/report.py                      (5,000 x 25; building takes minutes)
     python benchmarks/report.py --products 200 --reviews 10 --repeats 1     (quick)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from feature_stores import write_probe_store, write_raw_release, write_text_store  # noqa: E402
from mrhp_prep.cache import open_stage  # noqa: E402
from mrhp_prep.data.ingest import ingest  # noqa: E402
from mrhp_prep.data.manifest import Manifest  # noqa: E402
from mrhp_prep.data.sample import SAMPLE_RAW  # noqa: E402
from mrhp_prep.vision.store import FORMAT_VERSION, STORE_NAME, ImageRegions  # noqa: E402
from mrhp_prep.vision.store_write import write_store  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "stereo_motorcycle")
REGIONS = 36
FEATURE_DIM = 64


def sentences() -> list[str]:
    texts = []
    for path in sorted(SAMPLE_RAW.glob("*.rvw.*")):
        texts += pd.read_json(path)["content"].tolist()
    found = [s.strip() for t in texts for s in re.findall(r"[^.!?]+[.!?]", t)]
    return sorted({s for s in found if len(s) > 15})


def release(folder: Path, products: int, reviews: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pool = sentences()
    prd, rvw = [], []
    for split, count in (("train", 40), ("dev", 10), ("test", products)):
        for p in range(count):
            pid = f"B{split[:2].upper()}{p:07d}"
            prd.append({"product_id": pid, "split": split, "images": 1,
                        "name": f"Kitchen item {p}", "description": " ".join(
                            rng.choice(pool, size=3))})
            for r in range(reviews):
                label = int(rng.integers(0, 5))
                rvw.append({"product_id": pid, "review_id": f"{pid}-{r}", "split": split,
                            "content": " ".join(rng.choice(pool, size=int(rng.integers(2, 7)))),
                            "upvotes": 2 ** label if label else 0,
                            "images": int(rng.random() < 0.4)})
    return write_raw_release(folder, prd, rvw)


def photos(manifest: Path, root: Path) -> dict[str, tuple[int, int]]:
    """Hard links to a few real photographs at every image path; image id -> (h, w)."""
    import skimage.data
    from PIL import Image

    originals, sizes = [], []
    for index, name in enumerate(PHOTOS):
        data = getattr(skimage.data, name)()
        data = data[0] if isinstance(data, tuple) else data
        image = Image.fromarray(np.asarray(data)).convert("RGB")
        image.thumbnail((500, 500))
        path = root / f"original-{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        originals.append(path)
        sizes.append((image.height, image.width))
    table = Manifest(manifest).images
    found = {}
    for index, (image_id, relative) in enumerate(zip(table["image_id"], table["path"])):
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(originals[index % len(originals)], target)
        found[image_id] = sizes[index % len(originals)]
    return found


def roi_store(folder: Path, manifest: Path, root: Path, sizes: dict, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    settings = {"model": "butd-r101", "weights": "b3" * 32, "benchmark": True}
    run = open_stage("extract-rois", dataset="bench", settings=settings,
                     inputs={"manifest": manifest, "images_root": root},
                     format_version=FORMAT_VERSION, out=folder)
    images = []
    for image_id, (height, width) in sizes.items():
        corner = rng.uniform(0, 0.7, size=(REGIONS, 2))
        extent = rng.uniform(0.1, 0.3, size=(REGIONS, 2))
        boxes = np.concatenate([corner, np.minimum(corner + extent, 1.0)], axis=1)
        images.append(ImageRegions(
            image_id, height, width,
            rng.normal(size=(REGIONS, FEATURE_DIM)).astype(np.float16),
            (boxes * [width, height, width, height]).astype(np.float32),
            rng.integers(0, 1600, REGIONS).astype(np.int32),
            rng.uniform(0.2, 1, REGIONS).astype(np.float32),
            rng.integers(0, 400, REGIONS).astype(np.int32),
            rng.uniform(0, 1, REGIONS).astype(np.float32)))
    write_store(run.path / STORE_NAME, images, feature_dim=FEATURE_DIM,
                attrs={"model": "butd-r101", "weights_sha256": "b3" * 32, "settings": settings})
    run.finish({"images": len(images)}, model="butd-r101", weights_sha256="b3" * 32,
               feature_dim=FEATURE_DIM, store=STORE_NAME)
    return run.path


def build(root: Path, products: int, reviews: int) -> dict[str, Path]:
    from mrhp_prep.train.run import train

    steps = {}
    started = time.perf_counter()
    raw = release(root / "raw", products, reviews, seed=0)
    manifest = ingest(raw, dataset="amazon", category="home", labels="graded",
                      name="bench", cache_dir=root / "cache").path
    steps["release + ingest"] = time.perf_counter() - started
    sizes = photos(manifest, root / "images")
    rois = roi_store(root / "rois", manifest, root / "images", sizes, seed=1)
    text = write_text_store(root / "text", manifest, dim=16, num_shards=4)
    probes = write_probe_store(root / "probes", manifest)
    steps["photos + stores"] = time.perf_counter() - started - sum(steps.values())
    run = train(manifest=manifest, rois=rois, text=text, probes=probes, model="sancl",
                overrides=["train.epochs=1", "model.text_hidden=16", "model.image_hidden=16",
                           "model.shared_hidden=8", "train.eval_batch_size=512"],
                out=root / "run", num_workers=0, show_progress=False, device="cpu").path
    steps["train + score"] = time.perf_counter() - started - sum(steps.values())
    for step, seconds in steps.items():
        print(f"  built: {step:<18} {seconds:7.1f} s", file=sys.stderr)
    return {"manifest": manifest, "probes": probes, "run": run,
            "images": len(sizes), "reviews": len(Manifest(manifest).reviews)}


def timed(command: list[str], repeats: int) -> tuple[float, float, float, str]:
    """(median, min, max) wall seconds of the command and its last stdout line."""
    times, last = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        last = done.stdout.strip().splitlines()[-1]
    return statistics.median(times), min(times), max(times), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=5000, help="test products")
    parser.add_argument("--reviews", type=int, default=25, help="reviews per product")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None,
                        help="build in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    script = str(Path(sys.executable).with_name("mrhp-prep"))
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        built = build(root, args.products, args.reviews)
        print(f"run: {args.products + 50} products, {built['reviews']} reviews "
              f"({args.products} test products x {args.reviews}), {built['images']} photos, "
              f"{REGIONS} regions each; machine: {os.cpu_count()} CPU cores")
        rows = []
        for label, extra in (("report, default caps", []),
                             ("report, caps x10", ["--max-products", "500",
                                                   "--max-thumbnails", "2000"])):
            out = root / f"report-{len(rows)}.html"
            median, low, high, _ = timed([script, "-q", "report", str(built["run"]), "--out",
                                          str(out), *extra], args.repeats)
            rows.append((label, median, low, high, out.stat().st_size,
                         out.read_text().count("data:image/jpeg")))
        out = root / "probes.html"
        median, low, high, _ = timed([script, "-q", "show-probes", "--probes",
                                      str(built["probes"]), "--manifest",
                                      str(built["manifest"]), "--out", str(out)], args.repeats)
        rows.append(("show-probes, all splits", median, low, high, out.stat().st_size, 0))
        print(f"{'command':<26} {'median s':>9} {'range s':>13} {'size MB':>8} {'thumbnails':>10}")
        for label, median, low, high, size, thumbs in rows:
            print(f"{label:<26} {median:9.1f} {low:6.1f}-{high:<6.1f} {size / 1e6:8.2f} "
                  f"{thumbs:10d}")


if __name__ == "__main__":
    main()
