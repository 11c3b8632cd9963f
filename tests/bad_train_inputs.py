"""Bad training inputs made from real stores, shared by the table corpus
(test_bad_inputs_train.py) and the focused tests beside it (test_bad_inputs_train_focused.py):
helpers that damage a copy of a store, the `train` command line, and the builders both use.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from feature_stores import write_probe_store, write_roi_store
from mrhp_prep.data.manifest import Manifest

SMALL = ["model.text_hidden=16", "model.image_hidden=8", "model.shared_hidden=8",
         "train.epochs=1"]


# -- helpers that damage real stores ------------------------------------------------------------
def copy_store(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def read_shard(path: Path) -> pa.Table:
    """An Arrow IPC file read into memory (not mapped: the tests rewrite it in place)."""
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_file(pa.BufferReader(source.read())).read_all()


def rewrite_shard(path: Path, column: str, change: Callable[[list], list], row: int = 0,
                  batch_rows: int | None = None) -> None:
    """Rewrite one list column value of row `row` in an Arrow IPC file, in place (record
    batches of `batch_rows` rows; one batch by default)."""
    table = read_shard(path)
    values = table.column(column).to_pylist()
    values[row] = change(values[row])
    index = table.schema.get_field_index(column)
    table = table.set_column(index, table.schema.field(column),
                             pa.array(values, table.schema.field(column).type))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)


def finished_train_runs(root: Path) -> list[Path]:
    """Folders under `root` that a finished `train` wrote (MANIFEST.json of stage train)."""
    found = []
    for manifest in Path(root).rglob("MANIFEST.json"):
        if json.loads(manifest.read_text()).get("stage") == "train":
            found.append(manifest.parent)
    return found


def image_ids_of(manifest_dir: Path, split: str, owner: str = "product") -> set[str]:
    manifest = Manifest(manifest_dir)
    table = manifest.products if owner == "product" else manifest.reviews
    column = "product_id" if owner == "product" else "review_id"
    owners = set(table.loc[table["split"] == split, column])
    images = manifest.images
    return set(images.loc[images["item_id"].isin(owners), "image_id"])


def train_args(stores: dict, tmp: Path, **replace) -> list[str]:
    """`train` on the stores (a store given in `replace` instead, None for none), small model."""
    chosen = {**{k: stores[k] for k in ("manifest", "rois", "text", "probes")}, **replace}
    args = ["train", "--cache-dir", str(tmp / "cache"), "--device", "cpu", "--num-workers", "0"]
    for role, path in chosen.items():
        if path is not None:
            args += [f"--{role}", str(path)]
    for setting in SMALL:
        args += ["--set", setting]
    return args


def nan_rois(split: str):
    def build(stores, tmp):
        bad = image_ids_of(stores["manifest"], split)
        rois = write_roi_store(tmp / "rois", stores["manifest"], dim=8, feature_fn=lambda i, n: (
            np.full((n, 8), np.nan) if i in bad else np.random.default_rng(0).normal(size=(n, 8))))
        return train_args(stores, tmp, rois=rois)
    return build


def partial_probes(stores, tmp):
    reviews = Manifest(stores["manifest"]).reviews["review_id"].tolist()
    probes = write_probe_store(tmp / "probes", stores["manifest"], skip=reviews[::2])
    return train_args(stores, tmp, probes=probes)


def partial_rois(stores, tmp):
    rois = write_roi_store(tmp / "rois", stores["manifest"], dim=8,
                           skip=sorted(image_ids_of(stores["manifest"], "train", "review")))
    return train_args(stores, tmp, rois=rois)


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD_ROWS = [{"product_id": "P1", "review_id": f"R{i}", "label": i % 3, "score": 0.1 * i}
             for i in range(4)]


def empty_region_rois(stores, tmp):
    """A RoI store in which the train reviews' images are stored with no region (as stores
    written before such images were listed as failures hold them)."""
    empty = sorted(image_ids_of(stores["manifest"], "train", "review"))
    rois = write_roi_store(tmp / "rois", stores["manifest"], dim=8, empty=empty)
    return train_args(stores, tmp, rois=rois)


def one_label_stores(tmp: Path, labels: str = "graded") -> dict:
    """Stores of a release whose reviews all have 20 to 22 votes: graded, every label is 4
    (nothing to rank); raw, the labels are 20, 21, 22."""
    from feature_stores import stores_for
    from mrhp_prep.data.ingest import ingest
    from release_files import default_tables, write_release

    tables = default_tables()
    for split in ("train", "dev", "test"):
        for row in tables["rel", split]:
            row["upvotes"] = 20 + int(row["review_id"][-1])
    raw = write_release(tmp / "raw", tables)
    manifest = ingest(raw, dataset="amazon", category="electronics", labels=labels,
                      cache_dir=tmp / "in").path
    return stores_for(manifest, tmp / f"stores-{labels}", text_dim=8, roi_dim=8)


def one_label_per_product(stores, tmp):
    return train_args(one_label_stores(tmp), tmp)


def resume_after_the_manifest_changed(stores, tmp):
    """An unfinished run whose marker recorded another fingerprint of its manifest than the
    manifest folder has now (it was ingested again since)."""
    import yaml

    from mrhp_prep.cache import MARKER_NAME, path_fingerprint
    from mrhp_prep.train.settings.config import fingerprint_settings, resolve_config

    run = tmp / "run"
    run.mkdir()
    inputs = {k: str(Path(stores[k]).resolve()) for k in ("manifest", "rois", "text", "probes")}
    config = resolve_config("sancl", overrides=list(SMALL), relevance_threshold=1)
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "inputs": inputs}))
    started = {role: path_fingerprint(path) for role, path in inputs.items()}
    started["manifest"] = "0123456789abcdef"
    (run / MARKER_NAME).write_text(json.dumps({"stage": "train", "fingerprint": "f" * 16,
                                               "settings": fingerprint_settings(config),
                                               "inputs": started}))
    return ["train", "--resume", str(run), "--cache-dir", str(tmp / "cache")]


def evaluate_args(*extra, other_rows=None):
    """`evaluate` of GOOD_ROWS (predictions.jsonl), and with `other_rows` --compare to them."""
    def build(stores, tmp):
        (tmp / "predictions.jsonl").write_text(jsonl(GOOD_ROWS))
        args = ["evaluate", str(tmp / "predictions.jsonl"), *extra]
        if other_rows is not None:
            (tmp / "other.jsonl").write_text(jsonl(other_rows))
            args += ["--compare", str(tmp / "other.jsonl")]
        return args
    return build


def renamed_text_store(stores, tmp) -> Path:
    """A text store of the same manifest with every review id renamed (other data)."""
    text = copy_store(stores["text"], tmp / "text")
    for shard in sorted(text.glob("review-*.arrow")):
        table = read_shard(shard)
        renamed = pa.array([f"OTHER-{i}" for i in table.column("id").to_pylist()], pa.string())
        table = table.set_column(0, "id", renamed)
        with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    return text
