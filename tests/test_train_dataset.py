"""The training dataset: joins by id, RoI limits and padding, probe masks, store formats."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from feature_stores import (stores_for, tokenize, write_probe_store, write_roi_store,
                            write_text_store)
from mrhp_prep.errors import InputError
from mrhp_prep.train.data.dataset import Collate, DataConfig, FeatureSources, ReviewDataset
from mrhp_prep.train.data.stores import ProbeShards, open_rois, token_probe_mask
from mrhp_prep.train.loop.trainer import to_device
from train_fixtures import one_torch_thread  # noqa: F401

MISSING_IMAGE = "B00SAMP001-0/pic_0.jpg"


@pytest.fixture(scope="module")
def stores(sample_manifest, tmp_path_factory):
    return stores_for(sample_manifest, tmp_path_factory.mktemp("stores"), roi_dim=8,
                      skip_images=[MISSING_IMAGE])


def _sources(stores, **kw):
    return FeatureSources(stores["manifest"], rois=stores["rois"], text=stores["text"],
                          probes=stores["probes"], **kw)


def test_text_is_joined_by_id_not_by_row(stores):
    sources = _sources(stores)
    table = sources.split("train")
    dataset = ReviewDataset(sources, table, DataConfig())
    vocab = sources.text["review"].vocab
    reviews = sources.manifest.reviews.set_index("review_id")
    for i in (0, 5, len(dataset) - 1):
        item = dataset[i]
        words = [w for w, _, _ in tokenize(reviews.loc[table.review_ids[i], "text"])]
        assert [vocab[t] for t in item["review_text"]] == words   # train words are all known
    # rows come grouped by product, in manifest order
    assert list(table.products) == ["B00SAMP001", "B00SAMP002", "B00SAMP003", "B00SAMP004"]
    assert (np.diff(table.product_index) >= 0).all()


def test_images_limits_padding_and_explicit_masks(stores):
    config = DataConfig(max_rois_per_image=5, min_image_rows=16, max_image_rows=128)
    sources = _sources(stores)
    assert sources.images_missing == 1
    table = sources.split("train")
    dataset = ReviewDataset(sources, table, config)
    rois = open_rois(stores["rois"])
    row = list(table.review_ids).index("B00SAMP001-2")
    item = dataset[row]
    expected = rois.features("B00SAMP001-2/pic_0.jpg")[:5]
    np.testing.assert_array_equal(item["review_image"], expected)
    # B00SAMP001-0's only image has no RoI features; B00SAMP001-1 has no image at all
    no_rois = dataset[list(table.review_ids).index("B00SAMP001-0")]
    no_image = dataset[list(table.review_ids).index("B00SAMP001-1")]
    assert no_rois["review_image"].shape == (0, 8) and no_image["review_image"].shape == (0, 8)
    batch = Collate(config)([item, no_image])
    assert batch["review_image"].shape == (2, 16, 8)            # padded up to 16 rows
    assert batch["review_image_mask"][0].sum() == len(expected)
    assert not batch["review_image_mask"][1].any()               # no image: nothing is real
    assert torch.all(batch["review_image"][1] == 0)


def test_rows_are_cut_at_max_image_rows(sample_manifest, tmp_path):
    rois = write_roi_store(tmp_path / "rois", sample_manifest, dim=4, boxes=(60, 60))
    text = write_text_store(tmp_path / "text", sample_manifest, dim=4)
    sources = FeatureSources(sample_manifest, rois=rois, text=text)
    config = DataConfig(max_rois_per_image=50, min_image_rows=16, max_image_rows=40)
    item = ReviewDataset(sources, sources.split("train"), config)[0]
    assert item["review_image"].shape == (40, 4)
    assert "review_probe" not in item


def test_probe_mask_maps_sentences_to_tokens():
    text = "Great cups. The espresso cup set is sturdy! Shipping was slow."
    tokens = tokenize(text)
    starts = np.array([s for _, s, _ in tokens]), np.array([e for _, _, e in tokens])
    # mark the second sentence only: "The espresso cup set is sturdy!"
    s, e = text.index("The"), text.index("!") + 1
    mask = token_probe_mask(*starts, np.array([s]), np.array([e]))
    marked = [w for (w, _, _), m in zip(tokens, mask) if m]
    assert marked == ["the", "espresso", "cup", "set", "is", "sturdy", "!"]
    # special tokens without characters are never marked
    assert token_probe_mask(np.array([0, 0]), np.array([0, 3]), np.array([0]),
                            np.array([10])).tolist() == [0.0, 1.0]


def test_probe_masks_in_items(stores):
    sources = _sources(stores)
    table = sources.split("dev")
    dataset = ReviewDataset(sources, table, DataConfig())
    masks = [dataset[i]["review_probe"] for i in range(len(dataset))]
    assert all(m.shape == dataset[i]["review_text"].shape for i, m in enumerate(masks))
    assert any(m.any() for m in masks) and any(not m.all() for m in masks)


def test_frozen_features_in_stream_format_and_chunked_hdf5(sample_manifest, tmp_path):
    text = write_text_store(tmp_path / "text", sample_manifest, mode="features", dim=6,
                            stream_format=True, num_shards=3)
    rois = write_roi_store(tmp_path / "rois", sample_manifest, dim=4, chunked=True)
    store = open_rois(rois)
    assert not store.memory_mapped                        # gzip chunks: read through h5py
    sources = FeatureSources(sample_manifest, rois=rois, text=text)
    assert sources.text_mode == "features"
    inputs = sources.model_inputs()
    assert inputs.text_dim == 6 and inputs.product_vectors is None and inputs.image_dim == 4
    dataset = ReviewDataset(sources, sources.split("test"), DataConfig())
    batch = Collate(DataConfig())([dataset[0], dataset[1]])
    assert batch["review_text"].dtype == torch.float16 and batch["review_text"].shape[-1] == 6
    on_device = to_device(batch, torch.device("cpu"))
    assert on_device["review_text"].dtype == torch.float32       # what models see
    assert on_device["review_image"].dtype == torch.float32
    assert on_device["review_text_mask"].dtype == torch.bool
    assert batch["review_text_mask"].sum(1).tolist() == [len(dataset[0]["review_text"]),
                                                        len(dataset[1]["review_text"])]


def test_memory_mapped_roi_reads_match_h5py(stores):
    import h5py

    store = open_rois(stores["rois"])
    assert store.memory_mapped
    with h5py.File(store.path) as handle:
        i = 3
        start, count = handle["offset"][i], handle["count"][i]
        image_id = handle["image_id"].asstr()[i]
        np.testing.assert_array_equal(store.features(image_id),
                                      handle["features"][start:start + count])


def test_workers_give_the_same_batches(stores):
    sources = _sources(stores)
    dataset = ReviewDataset(sources, sources.split("train"), DataConfig())
    batches = [list(range(0, 8)), list(range(8, 16))]
    loaders = [torch.utils.data.DataLoader(dataset, batch_sampler=batches,
                                           collate_fn=Collate(DataConfig()), num_workers=n)
               for n in (0, 2)]
    for a, b in zip(*loaders):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key])


def test_shared_product_images_reach_the_model_as_one_row_per_review(stores):
    sources = _sources(stores)
    dataset = ReviewDataset(sources, sources.split("train"), DataConfig())
    # Rows of three products, interleaved, in the order a sampler could give them.
    by_product: dict[int, list[int]] = {}
    for index in range(len(dataset)):
        by_product.setdefault(dataset[index]["product_index"], []).append(index)
    groups = [rows for rows in by_product.values() if len(rows) >= 2][:3]
    assert len(groups) == 3
    order = [groups[0][0], groups[1][0], groups[0][1], groups[2][0], groups[1][1], groups[2][1]]
    per_row = Collate(DataConfig())([dataset[i] for i in order])
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[order], num_workers=1,
                                         collate_fn=Collate(DataConfig(), share_products=True))
    (shared,) = list(loader)
    # Sent from the worker: each product's RoI features once, and which one each row uses.
    assert shared["product_image"].shape[0] == 3
    assert shared["product_slot"].tolist() == [0, 1, 0, 2, 1, 2]
    assert shared["product_image"].numel() * 2 == per_row["product_image"].numel()
    expected = to_device(per_row, torch.device("cpu"))
    got = to_device(shared, torch.device("cpu"))
    assert got.keys() == expected.keys() and "product_slot" not in got
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_missing_text_rows_are_left_out_and_reported(sample_manifest, tmp_path):
    text = write_text_store(tmp_path / "text", sample_manifest, dim=4)
    # drop one review from the second review shard
    path = sorted(text.glob("review-*.arrow"))[1]
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    gone = table.column("id")[0].as_py()
    rewritten = path.with_suffix(".tmp")     # replaced by rename, as the stages write
    with pa.OSFile(str(rewritten), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.slice(1))
    rewritten.replace(path)
    sources = FeatureSources(sample_manifest, text=text)
    split = sources.manifest.reviews.set_index("review_id").loc[gone, "split"]
    table = sources.split(split)
    assert gone not in set(table.review_ids)
    assert table.dropped == {"review text missing from the text store": [gone]}


def test_unfinished_or_wrong_stores_are_refused(sample_manifest, tmp_path, stores):
    with pytest.raises(InputError, match="not 'embed-text'|is the output of"):
        FeatureSources(sample_manifest, text=stores["rois"])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "rois.h5").write_bytes(b"")
    with pytest.raises(InputError, match="no MANIFEST.json"):
        open_rois(tmp_path / "half")


def test_probe_shard_without_a_needed_column_names_it(sample_manifest, tmp_path):
    folder = write_probe_store(tmp_path / "probes", sample_manifest)
    shard = folder / "probe-00000.arrow"
    with pa.OSFile(str(shard)) as source:     # read into memory: the file is rewritten below
        table = pa.ipc.open_file(source).read_all().drop_columns(["sentence_mask"])
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(InputError, match="sentence_mask") as caught:
        ProbeShards(folder)
    assert caught.value.field == "sentence_mask" and "probe-00000.arrow" in str(caught.value)


def test_vocabulary_remap_by_token_string(stores, sample_manifest, tmp_path):
    other = write_text_store(tmp_path / "text", sample_manifest, dim=16,
                             vocab_splits=("train", "dev", "test"), seed=5)
    trained = FeatureSources(sample_manifest, text=stores["text"])
    remapped = FeatureSources(sample_manifest, text=other,
                              vocabularies={f: trained.text[f].vocab
                                            for f in ("product", "review")})
    for split in ("train", "test"):
        a = ReviewDataset(trained, trained.split(split), DataConfig())
        b = ReviewDataset(remapped, remapped.split(split), DataConfig())
        for i in range(len(a)):
            np.testing.assert_array_equal(a[i]["review_text"], b[i]["review_text"])
            np.testing.assert_array_equal(a[i]["product_text"], b[i]["product_text"])
