"""The extract-rois, merge-rois, import-rois and export-rois commands, end to end on CPU
with real photographs and the real ResNet-101 detector (random weights, small settings)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from mrhp_prep.cli import cli
from mrhp_prep.data.sample import SAMPLE_IMAGES
from mrhp_prep.shards import shard_of
from mrhp_prep.vision.store import RoiStore
from rois_support import FAST, photo, tiny, write_photos

REPO = Path(__file__).resolve().parents[1]


def _invoke(runner, args, env=None):
    result = runner.invoke(cli, args, env=env)
    return result


def _folder(result) -> Path:
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return Path(result.stdout.strip().splitlines()[-1])


def _same_regions(a: RoiStore, b: RoiStore, image_id: str) -> None:
    left, right = a.image(image_id), b.image(image_id)
    for name in ("features", "boxes", "object_id", "attr_id", "image_h", "image_w"):
        np.testing.assert_array_equal(np.asarray(left[name]), np.asarray(right[name]), name)


# --- the sample manifest ------------------------------------------------------------------

def test_manifest_run_stores_every_image_of_its_shard(sample_manifest, tmp_path, runner):
    images_root = tmp_path / "images"
    shutil.copytree(SAMPLE_IMAGES, images_root)
    from mrhp_prep.data.manifest import Manifest

    table = Manifest(sample_manifest).images
    mine = table[[shard_of(i, 4) == 1 for i in table["image_id"]]]
    assert len(mine) >= 3
    missing_id, missing_path = mine["image_id"].iloc[0], mine["path"].iloc[0]
    (images_root / missing_path).unlink()          # a crawl that never arrived
    args = ["extract-rois", "--manifest", str(sample_manifest), "--images-root",
            str(images_root), "--cache-dir", str(tmp_path / "cache"), "--num-shards", "4",
            "--shard-index", "1", *tiny()]
    result = _invoke(runner, args)
    folder = _folder(result)
    assert folder.parent.parent.name == "sample"      # cache/<manifest name>/extract-rois/
    with RoiStore(folder) as store:
        assert set(store.image_ids) == set(mine["image_id"]) - {missing_id}
        assert store.feature_dim == 2048
        assert store.attrs["model"] == "butd-r101"
        assert store.attrs["weights_sha256"] == "random:0"
        assert store.attrs["settings"]["min_size"] == 96
        for image_id, path in zip(mine["image_id"], mine["path"]):
            if image_id == missing_id:
                continue
            regions = store.image(image_id)
            width, height = Image.open(images_root / path).size
            assert (regions["image_w"], regions["image_h"]) == (width, height)
            assert 10 <= len(regions["boxes"]) <= 100
            assert regions["features"].dtype == np.float16
            # Stored unclipped: within the resized image (tiny(): 96 / 160) mapped back.
            scale = 96 / min(width, height)
            scale = 160 / max(width, height) if round(scale * max(width, height)) > 160 else scale
            scale32 = np.float32(scale)
            assert (regions["boxes"][:, 2] <= np.float32(round(width * scale) - 1) / scale32).all()
            assert (regions["boxes"][:, 3] <= np.float32(round(height * scale) - 1) / scale32).all()
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert manifest["counts"]["failed"] == 1 and manifest["counts"]["failed_missing"] == 1
    failures = [json.loads(line)
                for line in (folder / "failures.jsonl").read_text().splitlines()]
    assert failures == [{"item": missing_id, "reason": "missing", "detail": str(
        images_root / missing_path), "path": str(images_root / missing_path)}]
    assert "failures" in result.stderr
    assert not (folder / "parts").exists()
    # Same inputs and settings: the finished folder is reused, not recomputed.
    again = _invoke(runner, args)
    assert _folder(again) == folder
    assert "RANDOM WEIGHTS" not in again.stderr


# --- bad images ---------------------------------------------------------------------------

def _bad_and_odd_images(folder: Path) -> dict[str, str | None]:
    """file name -> expected failure reason (None: must decode and be extracted)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = photo("astronaut")
    Image.fromarray(rgb).save(folder / "plain.jpg")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.asarray(Image.fromarray(rgb).convert("L")).astype(np.uint16) * 257)
                    ).save(folder / "sixteen_bit.png")
    Image.fromarray(photo("camera")).save(folder / "gray.png")
    Image.fromarray(rgb).quantize(32).save(folder / "palette_alpha.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(photo("coffee")).save(folder / "rotated.jpg", exif=exif)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "error_page.jpg").write_text("<html>403 Forbidden</html>")
    data = (folder / "plain.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (1, 1)).save(folder / "pixel.gif")
    from test_rois_decode import _png_header_only
    (folder / "bomb.png").write_bytes(_png_header_only(40_000, 40_000))
    return {"plain.jpg": None, "cmyk.jpg": None, "sixteen_bit.png": None, "gray.png": None,
            "palette_alpha.png": None, "rotated.jpg": None, "zero.jpg": "empty",
            "error_page.jpg": "not-an-image", "truncated.jpg": "truncated",
            "pixel.gif": "too-small", "bomb.png": "too-large"}


def test_bad_images_are_listed_and_the_run_goes_on(tmp_path, runner):
    expected = _bad_and_odd_images(tmp_path / "crawl")
    result = _invoke(runner, ["extract-rois", "--images", str(tmp_path / "crawl"),
                              "--out", str(tmp_path / "out"), *tiny(**FAST)])
    folder = _folder(result)
    failures = {json.loads(line)["item"]: json.loads(line)["reason"]
                for line in (folder / "failures.jsonl").read_text().splitlines()}
    assert failures == {name: reason for name, reason in expected.items() if reason}
    with RoiStore(folder) as store:
        assert set(store.image_ids) == {name for name, reason in expected.items() if not reason}
        assert store.image("rotated.jpg")["image_h"] == 180   # EXIF applied: portrait
        assert store.image("rotated.jpg")["image_w"] == 120
    counts = json.loads((folder / "MANIFEST.json").read_text())["counts"]
    assert counts["failed"] == 5 and counts["extracted"] == 6
    assert counts["failed_too-large"] == 1 and counts["failed_truncated"] == 1


def test_every_image_failing_exits_4(tmp_path, runner):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_text("not an image")
    result = _invoke(runner, ["extract-rois", "--images", str(tmp_path / "bad"),
                              "--out", str(tmp_path / "out"), *tiny(**FAST)])
    assert result.exit_code == 4, result.output


def test_detectron2_backend_fails_cleanly_without_detectron2(tmp_path, runner):
    write_photos(tmp_path / "photos", names=("coffee",))
    result = _invoke(runner, ["extract-rois", "--images", str(tmp_path / "photos"),
                              "--out", str(tmp_path / "out"), "--backend", "detectron2",
                              *tiny(**FAST)])
    assert result.exit_code == 3
    assert "--backend detectron2 needs detectron2" in result.output
    assert "--backend torch" in result.output


# --- resume, shards, merge ----------------------------------------------------------------

@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, names=("astronaut", "coffee", "chelsea"), subfolder="item1")
    write_photos(folder, names=("rocket", "camera", "motorcycle"), subfolder="item2")
    return folder


@pytest.fixture(scope="module")
def single_run(photo_folder, tmp_path_factory) -> Path:
    """One uninterrupted, unsharded run, one image per batch (no padding)."""
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("single") / "out"
    result = CliRunner().invoke(cli, ["extract-rois", "--images", str(photo_folder), "--out",
                                      str(out), "--batch-size", "1", *tiny(**FAST)])
    return _folder(result)


def test_resume_after_kill_9_stores_each_image_once(photo_folder, single_run, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "mrhp_prep", "extract-rois", "--images", str(photo_folder),
               "--out", str(out), "--batch-size", "1", "--part-size", "1", *tiny(**FAST)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(list((out / "parts").glob("part-*.h5"))) < 2:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no part files appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "MANIFEST.json").exists() and not (out / "rois.h5").exists()
    done_before = len(list((out / "parts").glob("part-*.h5")))
    assert 2 <= done_before < 6
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert "resuming: " in finished.stderr
    with RoiStore(out) as resumed, RoiStore(single_run) as reference:
        assert sorted(resumed.image_ids) == sorted(reference.image_ids)
        assert len(resumed.image_ids) == len(set(resumed.image_ids)) == 6
        assert resumed.num_regions == reference.num_regions
        for image_id in reference.image_ids:
            _same_regions(resumed, reference, image_id)


def test_shards_merged_equal_a_single_run(photo_folder, single_run, tmp_path, runner):
    cache = tmp_path / "cache"
    common = ["extract-rois", "--images", str(photo_folder), "--cache-dir", str(cache),
              "--batch-size", "1", *tiny(**FAST)]
    # Shard 0 from options, shard 1 from a Slurm job array's environment.
    shard0 = _folder(_invoke(runner, common + ["--num-shards", "2", "--shard-index", "0"]))
    shard1 = _folder(_invoke(runner, common, env={"SLURM_ARRAY_TASK_ID": "1",
                                                  "SLURM_ARRAY_TASK_COUNT": "2"}))
    assert shard0 != shard1
    with RoiStore(shard0) as a, RoiStore(shard1) as b:
        assert not set(a.image_ids) & set(b.image_ids)
        assert all(shard_of(i, 2) == 0 for i in a.image_ids)
    incomplete = _invoke(runner, ["merge-rois", str(shard0), "--cache-dir", str(cache)])
    assert incomplete.exit_code == 3 and "expected shards 0..1" in incomplete.output
    merged = _folder(_invoke(runner, ["merge-rois", str(shard1), str(shard0),
                                      "--cache-dir", str(cache)]))
    virtual = _folder(_invoke(runner, ["merge-rois", "--virtual", str(shard1), str(shard0),
                                       "--cache-dir", str(cache)]))
    assert merged != virtual
    with h5py.File(merged / "rois.h5") as copied, h5py.File(virtual / "rois.h5") as indexed:
        # the default copies the regions, features in one block; --virtual copies none
        assert not copied["features"].is_virtual and copied["features"].chunks is None
        assert indexed["features"].is_virtual
    assert (virtual / "rois.h5").stat().st_size < (single_run / "rois.h5").stat().st_size / 4
    # Both still read after the whole cache folder moves, memory-mapped.
    moved = tmp_path / "moved"
    shutil.move(str(cache), str(moved))
    for folder in (merged, virtual):
        with RoiStore.of_stage(moved / folder.relative_to(cache)) as joined, \
                RoiStore(single_run) as reference:
            assert joined.memory_mapped
            assert sorted(joined.image_ids) == sorted(reference.image_ids)
            for image_id in reference.image_ids:
                _same_regions(joined, reference, image_id)
            item = [i for i in reference.image_ids if i.startswith("item1/")]
            assert joined.images(item).shape == (sum(reference.image(i)["boxes"].shape[0]
                                                      for i in item), 2048)
    # Without its shards a virtual store is refused, naming the missing file, not read as
    # zeros; the copy never needed them.
    virtual, merged = moved / virtual.relative_to(cache), moved / merged.relative_to(cache)
    gone = moved / shard0.relative_to(cache)
    shutil.rmtree(gone)
    refused = _invoke(runner, ["export-rois", str(virtual), "--format", "npz", "--out",
                               str(tmp_path / "npz")])
    assert refused.exit_code == 3
    assert str(gone / "rois.h5") in refused.output and "--virtual" in refused.output
    assert not list((tmp_path / "npz").rglob("*.npz"))
    exported = _invoke(runner, ["export-rois", str(merged), "--format", "npz", "--out",
                                str(tmp_path / "npz")])
    assert exported.exit_code == 0, exported.output
    assert len(list((tmp_path / "npz").rglob("*.npz"))) == 6


def test_one_run_alone_is_repacked_by_merge_rois(single_run, tmp_path, runner):
    # A store an older version wrote (format 2, features in chunks of 64 rows) reads through
    # h5py; merge-rois of that one folder copies it into the block layout training maps.
    from stage_edits import record_again

    old = Path(shutil.copytree(single_run, tmp_path / "old"))
    with h5py.File(old / "rois.h5", "a") as handle:
        features = handle["features"][:]
        del handle["features"]
        handle.create_dataset("features", data=features, chunks=(min(64, len(features)), 2048))
    record_again(old, "rois.h5")
    repacked = _folder(_invoke(runner, ["merge-rois", str(old), "--out",
                                        str(tmp_path / "repacked")]))
    with RoiStore.of_stage(old) as chunked, RoiStore.of_stage(repacked) as packed:
        assert not chunked.memory_mapped and packed.memory_mapped
        assert packed.image_ids == chunked.image_ids
        for image_id in chunked.image_ids:
            _same_regions(packed, chunked, image_id)


def _regions(image_id: str, n: int, seed: int):
    from mrhp_prep.vision.store import ImageRegions

    rng = np.random.default_rng(seed)
    return ImageRegions(image_id, 40, 60, rng.random((n, 8)).astype(np.float16),
                        boxes=np.tile(np.float32([1, 2, 30, 20]), (n, 1)),
                        object_id=rng.integers(0, 1600, n).astype(np.int32),
                        object_conf=rng.random(n).astype(np.float32),
                        attr_id=rng.integers(0, 400, n).astype(np.int32),
                        attr_conf=rng.random(n).astype(np.float32))


@pytest.mark.parametrize("join", ["consolidate", "merge_virtual"])
def test_joining_stores_shifts_offsets_and_refuses_an_image_twice(tmp_path, join):
    from mrhp_prep.errors import InputError
    from mrhp_prep.vision import store_write as store_module
    from mrhp_prep.vision import store_join

    def joined(sources, out):
        if join == "consolidate":
            return store_join.consolidate(sources, out, attrs={}, feature_dim=8)
        return store_join.merge_virtual(sources, out, attrs={})

    first = [_regions("a/pic_0.jpg", 3, 0), _regions("a/pic_1.jpg", 0, 1)]
    second = [_regions("b/pic_0.jpg", 2, 2)]
    a = store_module.write_store(tmp_path / "a.h5", first, feature_dim=8)
    b = store_module.write_store(tmp_path / "b.h5", second, feature_dim=8)
    assert joined([a, b], tmp_path / "ab.h5") == (3, 5, [3, 0, 2])   # images, regions, each
    with RoiStore(tmp_path / "ab.h5") as ab:
        for image in first + second:
            np.testing.assert_array_equal(ab.features(image.image_id), image.features)
            np.testing.assert_array_equal(ab.image(image.image_id)["object_id"], image.object_id)

    again = store_module.write_store(tmp_path / "again.h5", [_regions("a/pic_1.jpg", 1, 3)],
                                     feature_dim=8)
    with pytest.raises(InputError) as error:
        joined([a, again], tmp_path / "bad.h5")
    assert "'a/pic_1.jpg'" in str(error.value)
    assert str(a) in str(error.value) and str(again) in str(error.value)
    assert not (tmp_path / "bad.h5").exists()


# --- interop --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["npz", "tsv"])
def test_export_then_import_round_trips(single_run, tmp_path, runner, fmt):
    exported = tmp_path / "exported"
    result = _invoke(runner, ["export-rois", str(single_run), "--format", fmt,
                              "--out", str(exported)])
    assert result.exit_code == 0, result.output
    source = exported if fmt == "npz" else exported / "rois.tsv"
    imported = _folder(_invoke(runner, ["import-rois", str(source), "--format", fmt,
                                        "--out", str(tmp_path / "imported")]))
    with RoiStore(imported) as back, RoiStore(single_run) as original:
        assert sorted(back.image_ids) == sorted(original.image_ids)
        for image_id in original.image_ids:
            _same_regions(back, original, image_id)
            np.testing.assert_array_equal(back.image(image_id)["attr_conf"],
                                          original.image(image_id)["attr_conf"])


def test_import_milvlg_npz_with_pickled_info(tmp_path, runner):
    rng = np.random.default_rng(0)
    root = tmp_path / "features" / "train" / "prd" / "B00SAMP001"
    root.mkdir(parents=True)
    info = {"image_id": "pic_0", "image_h": 300, "image_w": 400, "num_boxes": 3,
            "objects_id": np.array([5, 9, 1]), "objects_conf": np.array([0.9, 0.5, 0.3]),
            "attrs_id": np.array([0, 2, 7]), "attrs_conf": np.array([0.8, 0.4, 0.2])}
    features = rng.standard_normal((3, 2048)).astype(np.float32)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 50, 60], [1, 2, 300, 200]], dtype=np.float32)
    np.savez_compressed(root / "pic_0.npz", x=features, bbox=boxes, num_bbox=3, image_h=300,
                        image_w=400, info=info)        # as the MILVLG extractor writes
    folder = _folder(_invoke(runner, ["import-rois", str(tmp_path / "features"), "--format",
                                      "npz", "--out", str(tmp_path / "o")]))
    with RoiStore(folder) as store:
        assert store.image_ids == ["train/prd/B00SAMP001/pic_0.jpg"]
        regions = store.image("train/prd/B00SAMP001/pic_0.jpg")
        np.testing.assert_array_equal(regions["features"], features)
        np.testing.assert_array_equal(regions["boxes"], boxes)
        assert regions["object_id"].tolist() == [5, 9, 1]
        assert regions["attr_id"].tolist() == [0, 2, 7]
        assert (regions["image_h"], regions["image_w"]) == (300, 400)


def test_import_mcr_item_pth_maps_paths_to_manifest_ids(sample_manifest, tmp_path, runner):
    from mrhp_prep.data.manifest import Manifest

    row = Manifest(sample_manifest).images.iloc[0]
    item_dir = tmp_path / "features" / Path(row["path"]).parent
    item_dir.mkdir(parents=True)
    entry = {"x": np.ones((4, 2048), dtype=np.float32), "bbox": np.zeros((4, 4), np.float32),
             "num_bbox": np.int64(4), "image_h": np.int64(200), "image_w": np.int64(300),
             "info": np.array({"image_id": Path(row["path"]).stem,
                               "objects_id": np.arange(4), "objects_conf": np.ones(4),
                               "attrs_id": np.arange(4), "attrs_conf": np.ones(4)},
                              dtype=object)}
    torch.save([entry], item_dir / f"{item_dir.name}.pth")   # MCR's per-item pack
    folder = _folder(_invoke(runner, ["import-rois", str(tmp_path / "features"), "--format",
                                      "mcr-pth", "--manifest", str(sample_manifest),
                                      "--out", str(tmp_path / "o")]))
    with RoiStore(folder) as store:
        assert store.image_ids == [row["image_id"]]
        assert store.features(row["image_id"]).shape == (4, 2048)
        assert store.image(row["image_id"])["object_id"].tolist() == [0, 1, 2, 3]


def test_import_caffe_tsv_six_columns(tmp_path, runner):
    import base64

    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 100, (2, 4)).astype(np.float32)
    features = rng.standard_normal((2, 2048)).astype(np.float32)
    line = "\t".join(["COCO_1", "640", "480", "2", base64.b64encode(boxes.tobytes()).decode(),
                      base64.b64encode(features.tobytes()).decode()])
    (tmp_path / "caffe.tsv").write_text(line + "\n" + "broken\trow\n")
    folder = _folder(_invoke(runner, ["import-rois", str(tmp_path / "caffe.tsv"), "--format",
                                      "tsv", "--dtype", "float32", "--out", str(tmp_path / "o")]))
    with RoiStore(folder) as store:
        regions = store.image("COCO_1")
        np.testing.assert_array_equal(regions["features"], features)
        assert (regions["image_w"], regions["image_h"]) == (640, 480)
    failures = (folder / "failures.jsonl").read_text()
    assert "bad-row" in failures and "line 2" in failures


# --- the run the earlier systems used ------------------------------------------------------

@pytest.mark.slow
def test_default_settings_on_one_photo(tmp_path, runner):
    folder = tmp_path / "one"
    folder.mkdir()
    import skimage.data

    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.jpg")   # 600 x 400
    result = _invoke(runner, ["extract-rois", "--images", str(folder), "--weights", "random",
                              "--out", str(tmp_path / "out"), "--workers", "0"])
    with RoiStore(_folder(result)) as store:
        regions = store.image("coffee.jpg")
        assert store.attrs["settings"]["min_size"] == 600
        assert store.attrs["settings"]["rpn_post_nms_top_n"] == 300
        assert 10 <= len(regions["boxes"]) <= 100
        assert regions["features"].shape[1] == 2048
        # Resized by 1.5 to 900 x 600; proposals are clipped there, and stored divided by
        # the scale without clipping again, as the reference stores them.
        assert (regions["boxes"][:, 2] <= np.float32(899) / np.float32(1.5)).all()
        assert (regions["boxes"][:, 3] <= np.float32(599) / np.float32(1.5)).all()
