"""Small feature stores in the exact formats of extract-rois, embed-text and probe-masks.

The training tests (and `benchmarks/train.py`) build these next to a manifest, so the trainer
is exercised on real HDF5 and Arrow files that follow the contracts between stages, and on
data sets with a planted signal. Also a writer of raw MRHP release files, so synthetic data
goes through the real `ingest`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from mrhp_prep.cache import open_stage
from mrhp_prep.data.manifest import Manifest

TOKEN = re.compile(r"\w+|[^\w\s]")
SENTENCE = re.compile(r"[^.!?]+[.!?]*")


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """Lower-cased word and punctuation tokens with their character offsets."""
    return [(m.group().lower(), m.start(), m.end()) for m in TOKEN.finditer(text)]


def _items(manifest: Manifest, field: str) -> pd.DataFrame:
    frame = manifest.products if field == "product" else manifest.reviews
    id_column = "product_id" if field == "product" else "review_id"
    return frame.rename(columns={id_column: "id"})[["id", "split", "text"]]


def _write_ipc(path: Path, table: pa.Table, stream: bool = False) -> None:
    with pa.OSFile(str(path), "wb") as sink:
        writer = (pa.ipc.new_stream if stream else pa.ipc.new_file)(sink, table.schema)
        writer.write_table(table, max_chunksize=max(1, table.num_rows // 2 or 1))
        writer.close()


def write_text_store(folder: Path, manifest_dir: Path, *, mode: str = "static", dim: int = 16,
                     seed: int = 0, num_shards: int = 2, stream_format: bool = False,
                     shuffle: bool = True, vocab_splits: Sequence[str] = ("train",),
                     vector_fn: Callable[[str], np.ndarray | None] | None = None,
                     encoder: Callable[[str], tuple[list, np.ndarray]] | None = None) -> Path:
    """An embed-text output for the manifest's products and reviews.

    static: vocabularies fitted on `vocab_splits` (id 0 <pad>, 1 <unk>) and vectors from
    `vector_fn(token)` (random normal when it returns None). features: `encoder(text)` ->
    ([(token, start, end)], [L, dim] features), by default the regex tokens with random
    features; stored as float16. Rows are shuffled (readers must
    join by id) and split over `num_shards` files.
    """
    manifest = Manifest(manifest_dir)
    rng = np.random.default_rng(seed)
    run = open_stage("embed-text", dataset=manifest.name,
                     settings={"mode": mode, "dim": dim, "seed": seed, "fixture": True},
                     inputs={"manifest": manifest_dir}, format_version=1, out=folder)
    for field in ("product", "review"):
        items = _items(manifest, field)
        if shuffle:
            items = items.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        encoded = [encoder(text) for text in items["text"]] if encoder is not None else None
        tokenized = ([tokens for tokens, _ in encoded] if encoded is not None
                     else [tokenize(text) for text in items["text"]])
        columns = {
            "id": pa.array(items["id"].tolist(), pa.string()),
            "tokens": pa.array([[t for t, _, _ in toks] for toks in tokenized],
                               pa.list_(pa.string())),
            "token_start": pa.array([[s for _, s, _ in toks] for toks in tokenized],
                                    pa.list_(pa.int32())),
            "token_end": pa.array([[e for _, _, e in toks] for toks in tokenized],
                                  pa.list_(pa.int32())),
        }
        if mode == "static":
            train = items["split"].isin(list(vocab_splits)).to_numpy()
            words = sorted({t for toks, keep in zip(tokenized, train) if keep for t, _, _ in toks})
            vocab = ["<pad>", "<unk>", *words]
            lookup = {w: i for i, w in enumerate(vocab)}
            columns["token_ids"] = pa.array([[lookup.get(t, 1) for t, _, _ in toks]
                                             for toks in tokenized], pa.list_(pa.int32()))
            vectors = rng.normal(0, 0.5, size=(len(vocab), dim)).astype(np.float32)
            vectors[0] = 0
            if vector_fn is not None:
                for i, word in enumerate(vocab[2:], start=2):
                    found = vector_fn(word)
                    if found is not None:
                        vectors[i] = found
            (run.path / f"vocab-{field}.txt").write_text("".join(w + "\n" for w in vocab),
                                                         encoding="utf-8")
            np.save(run.path / f"vectors-{field}.npy", vectors)
        else:
            rows = ([features for _, features in encoded] if encoded is not None
                    else [rng.normal(0, 1, size=(len(toks), dim)) for toks in tokenized])
            flat = np.concatenate([np.asarray(r, np.float16).reshape(-1, dim) for r in rows])
            offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
            inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim)
            columns["features"] = pa.ListArray.from_arrays(pa.array(offsets), inner)
        table = pa.table(columns)
        bounds = np.linspace(0, table.num_rows, num_shards + 1).astype(int)
        for index, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            _write_ipc(run.path / f"{field}-{index:05d}.arrow", table.slice(a, b - a),
                       stream=stream_format)
    run.finish({"products": len(manifest.products), "reviews": len(manifest.reviews)},
               mode=mode, dim=dim, tokenizer="regex-words", vectors="fixture")
    return run.path


def write_probe_store(folder: Path, manifest_dir: Path,
                      marked: Callable[[str, str], bool] | None = None,
                      skip: Sequence[str] = (),
                      spans: dict[str, list[tuple[int, int, bool]]] | None = None) -> Path:
    """A probe-masks output: sentences split on . ! ?, a sentence marked when it mentions a
    word (4+ letters) of the product name, or by `marked(sentence, product_name)`. A review
    in `spans` gets exactly those (start, end, marked) sentences instead."""
    manifest = Manifest(manifest_dir)
    names = dict(zip(manifest.products["product_id"], manifest.products["name"]))
    run = open_stage("probe-masks", dataset=manifest.name, settings={"fixture": True},
                     inputs={"manifest": manifest_dir}, format_version=1, out=folder)
    rows = {k: [] for k in ("review_id", "sentence_start", "sentence_end", "sentence_mask",
                            "mention_start", "mention_end", "core_words", "rule")}
    for review in manifest.reviews.itertuples():
        if review.review_id in skip:
            continue
        name = names[review.product_id]
        core = [w for w, _, _ in tokenize(name) if len(w) >= 4]
        given = (spans or {}).get(review.review_id)
        sentences = ([(start, end) for start, end, _ in given] if given is not None else
                     [(m.start(), m.end()) for m in SENTENCE.finditer(review.text)
                      if m.group().strip()])
        flags = [bool(flag) for _, _, flag in given] if given is not None else []
        for start, end in sentences if given is None else ():
            sentence = review.text[start:end]
            if marked is not None:
                flags.append(bool(marked(sentence, name)))
            else:
                words = {w for w, _, _ in tokenize(sentence)}
                flags.append(any(w in words for w in core))
        rows["review_id"].append(review.review_id)
        rows["sentence_start"].append([s for s, _ in sentences])
        rows["sentence_end"].append([e for _, e in sentences])
        rows["sentence_mask"].append(flags)
        rows["mention_start"].append([])
        rows["mention_end"].append([])
        rows["core_words"].append(core[:2])
        rows["rule"].append("core-word" if any(flags) else "none")
    schema = pa.schema([("review_id", pa.string()), ("sentence_start", pa.list_(pa.int32())),
                        ("sentence_end", pa.list_(pa.int32())),
                        ("sentence_mask", pa.list_(pa.bool_())),
                        ("mention_start", pa.list_(pa.int32())),
                        ("mention_end", pa.list_(pa.int32())),
                        ("core_words", pa.list_(pa.string())), ("rule", pa.string())])
    _write_ipc(run.path / "probe-00000.arrow", pa.table(rows, schema=schema))
    run.finish({"reviews": len(rows["review_id"])})
    return run.path


def write_roi_store(folder: Path, manifest_dir: Path, *, dim: int = 32,
                    boxes: tuple[int, int] = (3, 40), seed: int = 0, skip: Sequence[str] = (),
                    feature_fn: Callable[[str, int], np.ndarray] | None = None,
                    chunked: bool = False, empty: Sequence[str] = ()) -> Path:
    """An extract-rois output (rois.h5) for every image of the manifest except `skip`.

    Each image gets between boxes[0] and boxes[1] RoIs (the `empty` ones none, as stores
    written before such images were listed as failures hold them); features from
    `feature_fn(image_id, n)` ([n, dim]) or random normal; float16 like the real store.
    """
    import h5py

    manifest = Manifest(manifest_dir)
    rng = np.random.default_rng(seed)
    run = open_stage("extract-rois", dataset=manifest.name,
                     settings={"dim": dim, "boxes": list(boxes), "seed": seed, "fixture": True},
                     inputs={"manifest": manifest_dir}, format_version=1, out=folder)
    image_ids = [i for i in manifest.images["image_id"] if i not in set(skip)]
    counts = rng.integers(boxes[0], boxes[1] + 1, size=len(image_ids)).astype(np.int32)
    counts[[i for i, image_id in enumerate(image_ids) if image_id in set(empty)]] = 0
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum())
    features = np.zeros((total, dim), np.float16)
    for image_id, offset, count in zip(image_ids, offsets, counts):
        block = (feature_fn(image_id, int(count)) if feature_fn is not None
                 else rng.normal(0, 1, size=(count, dim)))
        features[offset:offset + count] = np.asarray(block, np.float32)
    with h5py.File(run.path / "rois.h5", "w") as handle:
        handle.create_dataset("image_id", data=np.array(image_ids, dtype=object),
                              dtype=h5py.string_dtype("utf-8"))
        handle["offset"] = offsets
        handle["count"] = counts
        handle["image_h"] = np.full(len(image_ids), 480, np.int32)
        handle["image_w"] = np.full(len(image_ids), 640, np.int32)
        if chunked:
            handle.create_dataset("features", data=features, chunks=(8, dim), compression="gzip")
        else:
            handle["features"] = features
        xy = rng.uniform(0, 300, size=(total, 2)).astype(np.float32)
        handle["boxes"] = np.concatenate([xy, xy + 50], axis=1)
        handle["object_id"] = rng.integers(0, 1600, total).astype(np.int32)
        handle["object_conf"] = rng.uniform(0.2, 1, total).astype(np.float32)
        handle["attr_id"] = rng.integers(0, 400, total).astype(np.int32)
        handle["attr_conf"] = rng.uniform(0, 1, total).astype(np.float32)
        handle.attrs["model"] = "fixture"
        handle.attrs["weights_sha256"] = "0" * 64
        handle.attrs["settings"] = json.dumps({"dim": dim})
        handle.attrs["format_version"] = 1
    run.finish({"images": len(image_ids), "boxes": total}, feature_dim=dim)
    return run.path


def write_raw_release(folder: Path, products: list[dict], reviews: list[dict],
                      prefix: str = "Home_and_Kitchen") -> Path:
    """Raw MRHP release files (pandas to_json, as distributed) for `ingest`.

    products: product_id, split, name, description, images (count). reviews: product_id,
    review_id, split, content, upvotes, images (count).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        prd = [p for p in products if p["split"] == split]
        rvw = [r for r in reviews if r["split"] == split]
        pd.DataFrame({
            "product_id": [p["product_id"] for p in prd],
            "name": [p["name"] for p in prd],
            "description": [p.get("description", "") for p in prd],
            "img_url": [[f"https://img.example/{p['product_id']}/{k}.jpg"
                         for k in range(p.get("images", 1))] for p in prd],
        }).to_json(folder / f"{prefix}.prd.{split}")
        pd.DataFrame({
            "product_id": [r["product_id"] for r in rvw],
            "review_id": [r["review_id"] for r in rvw],
            "title": ["" for _ in rvw],
            "content": [r["content"] for r in rvw],
            "img_url": [[f"https://img.example/{r['review_id']}/{k}.jpg"
                         for k in range(r.get("images", 0))] for r in rvw],
        }).to_json(folder / f"{prefix}.rvw.{split}")
        pd.DataFrame({
            "product_id": [r["product_id"] for r in rvw],
            "review_id": [r["review_id"] for r in rvw],
            "upvotes": [r["upvotes"] for r in rvw],
        }).to_json(folder / f"{prefix}.rel.{split}")
    return folder


def planted_release(folder: Path, *, products_per_split=(24, 6, 8), reviews_per_product: int = 8,
                    seed: int = 0) -> Path:
    """A release whose review helpfulness (0-4) is written into the reviews' words.

    A review of label y holds y "detail" words out of a shared pool, the rest filler words
    drawn from the same pool for every label; a review with label >= 2 has a photo. A model
    that reads the words ranks the reviews; a random ranking does not.
    """
    rng = np.random.default_rng(seed)
    detail = ["measured", "inches", "washed", "weeks", "compared", "durable", "stitching",
              "warranty", "battery", "assembly"]
    filler = ["nice", "ok", "good", "fine", "item", "thing", "got", "it", "the", "was"]
    products, reviews = [], []
    for split, count in zip(("train", "dev", "test"), products_per_split):
        for p in range(count):
            pid = f"P{split[:2].upper()}{p:03d}"
            products.append({"product_id": pid, "split": split, "images": 1,
                             "name": f"Sturdy {rng.choice(['Kettle', 'Lamp', 'Chair'])} {p}",
                             "description": "a product for the home, made to last."})
            labels = rng.permutation(np.resize(np.arange(5), reviews_per_product))
            for r, label in enumerate(labels):
                words = list(rng.choice(detail, size=2 * int(label))) + list(
                    rng.choice(filler, size=12 - 2 * int(label)))
                rng.shuffle(words)
                reviews.append({"product_id": pid, "review_id": f"{pid}-{r}", "split": split,
                                "content": " ".join(words) + ".", "upvotes": int(label),
                                "images": 1 if label >= 2 else 0})
    return write_raw_release(folder, products, reviews)


def stores_for(manifest_dir: Path, root: Path, *, text_dim: int = 16, roi_dim: int = 32,
               skip_images: Sequence[str] = (), **text_options) -> dict[str, Path]:
    """Text, RoI and probe stores for a manifest under `root`: {manifest, text, rois, probes}."""
    root.mkdir(parents=True, exist_ok=True)
    return {"manifest": Path(manifest_dir),
            "text": write_text_store(root / "text", manifest_dir, dim=text_dim, **text_options),
            "rois": write_roi_store(root / "rois", manifest_dir, dim=roi_dim, skip=skip_images),
            "probes": write_probe_store(root / "probes", manifest_dir)}



def write_stage_roi_store(folder: Path, image_ids: Sequence[str], *, dataset: str = "bench",
                          boxes: tuple[int, int] = (10, 36), seed: int = 0,
                          part_size: int = 256) -> Path:
    """An extract-rois output packed by the stage itself: synthetic 2048-d regions for
    `image_ids` (boxes[0] to boxes[1] each), written as the stage's part files, then joined
    by extract-rois' own last step (`extract._finish`), so the store has the layout a real
    run gives (the detector is what is left out: at this size it would take hours on a CPU)."""
    from mrhp_prep.vision import extract
    from mrhp_prep.vision.store import ImageRegions
    from mrhp_prep.vision.store_write import write_store

    rng = np.random.default_rng(seed)
    run = open_stage("extract-rois", dataset=dataset,
                     settings={"boxes": list(boxes), "seed": seed, "synthetic": True},
                     inputs={}, format_version=2, out=folder)
    image_ids = list(image_ids)
    (run.path / "parts").mkdir(exist_ok=True)
    for number, start in enumerate(range(0, len(image_ids), part_size)):
        regions = []
        for image_id in image_ids[start:start + part_size]:
            n = int(rng.integers(boxes[0], boxes[1] + 1))
            xy = rng.uniform(0, 300, size=(n, 2)).astype(np.float32)
            regions.append(ImageRegions(
                image_id, 480, 640, rng.normal(0, 1, size=(n, 2048)).astype(np.float16),
                np.concatenate([xy, xy + 50], axis=1), rng.integers(0, 1600, n).astype(np.int32),
                rng.uniform(0.2, 1, n).astype(np.float32), rng.integers(0, 400, n).astype(np.int32),
                rng.uniform(0, 1, n).astype(np.float32)))
        write_store(run.path / "parts" / f"part-{number:05d}.h5", regions, feature_dim=2048,
                    attrs={"part": True})
    extract._finish(run, [(i, None) for i in image_ids], dataset, "synthetic", "butd-r101",
                    np.float16, 0.0)
    return run.path
