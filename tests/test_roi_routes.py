"""Every RoI store the toolkit writes trains, predicts and exports, through the real CLI:
extract-rois shards joined by merge-rois (a copy, and --virtual) and an import-rois store.
The real ResNet-101 detector runs with random weights on real photographs placed where a
small manifest says its images are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from feature_stores import write_raw_release, write_text_store
from mrhp_prep.cli import cli
from mrhp_prep.data.ingest import ingest
from mrhp_prep.data.manifest import Manifest
from mrhp_prep.train.data.stores import open_rois
from mrhp_prep.vision.store import RoiStore
from rois_support import FAST, photo, tiny
from train_fixtures import one_torch_thread  # noqa: F401

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle"]
SMALL = ["model.text_hidden=16", "model.image_hidden=8", "model.shared_hidden=8",
         "train.epochs=1"]


def _ok(result) -> Path:
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def routes(tmp_path_factory):
    """A five-product manifest with a photograph per product; its RoI store made each way."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("routes")
    runner = CliRunner()
    # ids whose images fall in both of two shards (three in shard 0, two in shard 1)
    splits = {"P0": "train", "P6": "train", "P1": "train", "P7": "dev", "P11": "test"}
    products = [{"product_id": pid, "split": split, "name": f"Sturdy lamp {pid}",
                 "description": "made to last.", "images": 1} for pid, split in splits.items()]
    reviews = [{"product_id": pid, "review_id": f"{pid}-{r}", "split": split,
                "content": f"review {r} of the lamp, {'very ' * r}useful.", "upvotes": r}
               for pid, split in splits.items() for r in range(4)]
    raw = write_raw_release(root / "raw", products, reviews)
    manifest = ingest(raw, dataset="amazon", category="home", labels="raw", name="routes",
                      cache_dir=root / "cache").path
    images = root / "images"
    for (_, row), name in zip(Manifest(manifest).images.iterrows(), PHOTOS):
        (images / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(name)).convert("RGB").save(images / row["path"], quality=92)
    extract = ["extract-rois", "--manifest", str(manifest), "--images-root", str(images),
               "--cache-dir", str(root / "cache"), "--batch-size", "1", "--num-shards", "2",
               *tiny(**FAST)]
    shards = [_ok(runner.invoke(cli, extract + ["--shard-index", str(i)])) for i in (0, 1)]
    for shard, images in zip(shards, (3, 2)):
        assert json.loads((shard / "MANIFEST.json").read_text())["counts"]["extracted"] == images
    merge = ["merge-rois", *map(str, shards), "--cache-dir", str(root / "cache")]
    copied = _ok(runner.invoke(cli, merge))
    virtual = _ok(runner.invoke(cli, merge + ["--virtual"]))
    exported = root / "exported"
    _ok(runner.invoke(cli, ["export-rois", str(copied), "--format", "npz", "--out",
                            str(exported)]))
    imported = _ok(runner.invoke(cli, ["import-rois", str(exported), "--format", "npz",
                                       "--manifest", str(manifest), "--dtype", "float16",
                                       "--out", str(root / "imported")]))
    return {"root": root, "manifest": manifest, "text": write_text_store(
        root / "text", manifest, dim=8), "shards": shards, "copied": copied,
            "virtual": virtual, "imported": imported}


@pytest.mark.parametrize("kind", ["copied", "virtual", "imported"])
def test_every_roi_store_trains_predicts_and_exports(routes, kind, runner, tmp_path):
    store = routes[kind]
    info = json.loads((store / "MANIFEST.json").read_text())
    assert info["stage"] == {"copied": "merge-rois", "virtual": "merge-rois",
                             "imported": "import-rois"}[kind]
    with open_rois(store) as rois:
        assert rois.memory_mapped                    # a virtual store maps each shard
        assert len(rois) == len(PHOTOS)
    args = ["train", "--manifest", str(routes["manifest"]), "--rois", str(store), "--text",
            str(routes["text"]), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--num-workers", "0"]
    for setting in SMALL:
        args += ["--set", setting]
    run = _ok(runner.invoke(cli, args))
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"dev", "test"} <= set(metrics)
    assert json.loads((run / "MANIFEST.json").read_text())["counts"]["images_without_rois"] == 0
    predicted = _ok(runner.invoke(cli, ["predict", "--run", str(run), "--split", "test",
                                        "--device", "cpu", "--output",
                                        str(tmp_path / "test.jsonl")]))
    rows = [json.loads(line) for line in predicted.read_text().splitlines()]
    assert len(rows) == 4 and all(np.isfinite(r["score"]) for r in rows)
    _ok(runner.invoke(cli, ["export-rois", str(store), "--format", "tsv", "--out",
                            str(tmp_path / "tsv")]))
    lines = (tmp_path / "tsv" / "rois.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == sorted(
        Manifest(routes["manifest"]).images["image_id"])


def test_export_then_import_with_the_manifest_gives_back_the_same_store(routes):
    with RoiStore(routes["copied"]) as original, RoiStore(routes["imported"]) as back:
        assert sorted(back.image_ids) == sorted(original.image_ids)
        for image_id in original.image_ids:
            a, b = original.image(image_id), back.image(image_id)
            for name in a:
                assert np.asarray(a[name]).dtype == np.asarray(b[name]).dtype, name
                np.testing.assert_array_equal(a[name], b[name], name)
    failures = (routes["imported"] / "failures.jsonl").read_text()
    assert failures == ""                            # no image "not in the manifest"


def test_the_merged_copy_is_the_shards_regions_in_one_block(routes):
    with h5py.File(routes["copied"] / "rois.h5") as copied:
        assert copied["features"].chunks is None and not copied["features"].is_virtual
    with RoiStore(routes["copied"]) as merged:
        for shard in routes["shards"]:
            with RoiStore(shard) as part:
                assert part.memory_mapped             # extract-rois writes one block too
                for image_id in part.image_ids:
                    np.testing.assert_array_equal(merged.features(image_id),
                                                  part.features(image_id))
    # the copy outlives its shards; the virtual store names the one it misses
    moved = routes["root"] / "moved-shard"
    shutil.move(str(routes["shards"][1]), str(moved))
    try:
        with RoiStore.of_stage(routes["copied"]) as merged:
            assert len(merged) == len(PHOTOS)
        with pytest.raises(Exception, match="rois.h5.*missing") as refused:
            RoiStore.of_stage(routes["virtual"])
        assert str(routes["shards"][1] / "rois.h5") in str(refused.value)
    finally:
        shutil.move(str(moved), str(routes["shards"][1]))


def test_a_virtual_merge_refuses_a_shard_written_again_since(routes, tmp_path):
    """A shard run again with --force after merge-rois --virtual is consistent with its own
    MANIFEST.json, but not with the rows the merge indexed: the merged store checks each
    shard file against the record the merge kept of it, and names merge-rois to run again."""
    from mrhp_prep.errors import InputError
    from stage_edits import record_again

    cache = Path(shutil.copytree(routes["root"] / "cache", tmp_path / "cache"))
    virtual = cache / routes["virtual"].relative_to(routes["root"] / "cache")
    shard = cache / routes["shards"][1].relative_to(routes["root"] / "cache")
    with RoiStore.of_stage(virtual) as merged:          # as merged: read
        assert len(merged) == len(PHOTOS)
    with h5py.File(shard / "rois.h5", "a") as handle:   # the shard's regions written again
        handle["features"][0] = -handle["features"][0] - 1
    record_again(shard, "rois.h5")
    with RoiStore.of_stage(shard) as alone:             # the shard itself is consistent
        assert len(alone) == 2
    with pytest.raises(InputError) as refused:
        RoiStore.of_stage(virtual)
    message = refused.value.format_message()
    assert str(shard / "rois.h5") in message and "has changed" in message
    assert "re-run 'merge-rois' with --force" in message


def test_training_reads_the_stage_output_value_for_value(routes):
    """The reader training uses, on extract-rois' own output, against h5py's reading of the
    file: each image's rows, cut to the first `limit`, in the stored type."""
    for shard in routes["shards"]:
        rois = open_rois(shard)
        assert rois.memory_mapped
        with h5py.File(shard / "rois.h5") as handle:
            ids = handle["image_id"].asstr()[:]
            for image_id, offset, count in zip(ids, handle["offset"][:], handle["count"][:]):
                expected = handle["features"][offset:offset + count]
                got = rois.features(image_id)
                assert got.dtype == np.float16 and got.shape == (count, 2048)
                np.testing.assert_array_equal(got, expected)
                np.testing.assert_array_equal(rois.features(image_id, 1), expected[:1])


def _chunked_like_before(folder: Path) -> None:
    """Rewrite a store's features as versions before this layout wrote them (chunks of 64
    rows; the same format 2), its record updated as if the stage had written it."""
    from stage_edits import record_again

    with h5py.File(folder / "rois.h5", "a") as handle:
        features = handle["features"][:]
        del handle["features"]
        handle.create_dataset("features", data=features, chunks=(min(64, len(features)), 2048))
    record_again(folder, "rois.h5")


def test_chunked_stores_still_train_and_a_merge_repacks_them(routes, runner, tmp_path):
    shards = [Path(shutil.copytree(shard, tmp_path / f"old-shard-{i}"))
              for i, shard in enumerate(routes["shards"])]
    single = Path(shutil.copytree(routes["copied"], tmp_path / "old-store"))
    for folder in (*shards, single):
        _chunked_like_before(folder)
    with open_rois(single) as old, open_rois(routes["copied"]) as new:
        assert not old.memory_mapped                       # read through h5py, as before
        for image_id in new.image_ids:
            np.testing.assert_array_equal(old.features(image_id), new.features(image_id))
    args = ["train", "--manifest", str(routes["manifest"]), "--rois", str(single), "--text",
            str(routes["text"]), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--num-workers", "0"]
    for setting in SMALL:
        args += ["--set", setting]
    _ok(runner.invoke(cli, args))
    # merge-rois of the old shards copies them into the block layout
    repacked = _ok(runner.invoke(cli, ["merge-rois", *map(str, shards), "--out",
                                       str(tmp_path / "repacked")]))
    with open_rois(repacked) as packed, RoiStore(routes["copied"]) as reference:
        assert packed.memory_mapped
        assert packed.image_ids == reference.image_ids
        for image_id in reference.image_ids:
            for name, value in reference.image(image_id).items():
                np.testing.assert_array_equal(packed.image(image_id)[name], value, name)
