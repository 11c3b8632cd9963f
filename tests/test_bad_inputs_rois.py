"""Bad images, weights and stage folders walked through the region stages (extract-rois,
merge-rois, import-rois; the table promises: see bad_input_table), and the region store's
own refusals."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bad_input_table import Case, params, release, run_case
from mrhp_prep.cli import cli
from rois_support import FAST, gain_weights, solid_photos, tiny, write_photos


def _rois_argv(tmp, *extra):
    return ["extract-rois", "--images", str(tmp / "images"), "--out", str(tmp / "out"),
            *tiny(**FAST), *extra]


def detector_nan_weights(tmp):
    write_photos(tmp / "images", names=("coffee",))
    weights = torch.zeros(8, 4)
    weights[3, 2] = float("nan")
    torch.save({"model": {"roi_heads.box_predictor.cls_score.weight": weights,
                          "backbone.stem.conv1.weight": torch.ones(2)}}, tmp / "w.pth")
    argv = _rois_argv(tmp)
    argv[argv.index("random")] = str(tmp / "w.pth")
    return argv


def symlink_loop_and_long_name(tmp):
    write_photos(tmp / "images", names=("coffee",))
    os.symlink("loop-b.jpg", tmp / "images" / "loop-a.jpg")
    os.symlink("loop-a.jpg", tmp / "images" / "loop-b.jpg")
    # A link whose target has a 300-character name: stat() fails with ENAMETOOLONG.
    os.symlink("n" * 300 + ".jpg", tmp / "images" / "long-target.jpg")
    return _rois_argv(tmp)


def decompression_bomb(tmp):
    from test_rois_decode import _png_header_only

    write_photos(tmp / "images", names=("coffee",))
    (tmp / "images" / "bomb.png").write_bytes(_png_header_only(15000, 15000))
    return _rois_argv(tmp)


def five_thousand_char_ids(tmp):
    from mrhp_prep.data.ingest import ingest
    from mrhp_prep.data.manifest import image_relpath

    long_id = "R" * 5000

    def mutate(tables):
        tables["prd", "train"][0]["img_url"] = ["http://shop.invalid/p.jpg"]
        tables["rvw", "train"][0].update(review_id=long_id, img_url=["http://shop.invalid/r.jpg"])
        tables["rel", "train"][0]["review_id"] = long_id
    raw = release(tmp, mutate)
    manifest = ingest(raw, dataset="amazon", category="electronics", cache_dir=tmp / "in").path
    photo_path = tmp / "images" / image_relpath("train", "prd", "P00", 0)
    write_photos(photo_path.parent, names=("coffee",))
    (photo_path.parent / "coffee.jpg").rename(photo_path)
    return ["extract-rois", "--manifest", str(manifest), "--images-root", str(tmp / "images"),
            "--out", str(tmp / "out"), *tiny(**FAST)]


def paths_out_of_the_images_root(tmp):
    """A manifest whose image paths leave the images root: '../' and an absolute path, each
    to a readable photograph, so reading one would show as an extracted image. Beside them
    what stays the user's own: the root's train split is a link to another disk, and one
    image inside the root is a link to a photograph elsewhere; both are read."""
    import pandas as pd

    from mrhp_prep.data.ingest import ingest

    def mutate(tables):
        tables["prd", "train"][0]["img_url"] = ["http://shop.invalid/p.jpg"]
        for k in range(3):
            tables["rvw", "train"][k]["img_url"] = [f"http://shop.invalid/r{k}.jpg"]
    manifest = ingest(release(tmp, mutate), dataset="amazon", category="electronics",
                      out=tmp / "manifest").path
    root, outside = tmp / "images", tmp / "outside"
    write_photos(outside, names=("coffee", "chelsea", "rocket"))
    from stage_edits import write_table

    images = pd.read_parquet(manifest / "images.parquet")
    (tmp / "other-disk" / "train").mkdir(parents=True)
    root.mkdir()
    (root / "train").symlink_to(tmp / "other-disk" / "train")   # a split on another disk
    good = root / images["path"].iloc[0]
    write_photos(good.parent, names=("astronaut",))
    (good.parent / "astronaut.jpg").rename(good)
    link = root / images["path"].iloc[3]
    link.parent.mkdir(parents=True)
    link.symlink_to(outside / "rocket.jpg")
    images.loc[1, "path"] = "../outside/coffee.jpg"
    images.loc[2, "path"] = str(outside / "chelsea.jpg")
    write_table(manifest, "images", images)
    return ["extract-rois", "--manifest", str(manifest), "--images-root", str(root),
            "--out", str(tmp / "out"), *tiny(**FAST)]


def imported_nan_features(tmp):
    source = tmp / "feats"
    source.mkdir()
    for name, value in (("good", 0.5), ("poisoned", np.nan)):
        features = np.full((3, 8), 0.25, dtype=np.float32)
        features[1, 2] = value
        np.savez(source / f"{name}.npz", x=features, bbox=np.ones((3, 4), np.float32),
                 image_h=10, image_w=10)
    return ["import-rois", str(source), "--format", "npz", "--out", str(tmp / "out")]


def weights_not_a_checkpoint(tmp):
    write_photos(tmp / "images", names=("coffee",))
    (tmp / "w.pth").write_text("this is not a checkpoint\n")
    argv = _rois_argv(tmp)
    argv[argv.index("random")] = str(tmp / "w.pth")
    return argv


def gain_detector(gain: float, **levels: int):
    """Finite weights whose activations grow by ~(1 + gain^3) per residual block on a bright
    image and stay 0 on a black one (rois_support.gain_weights): gain 1 reaches ~2e11 after
    33 blocks (float32 holds it, float16 does not), gain 10 overflows float32."""
    def build(tmp):
        solid_photos(tmp / "images", **levels)
        argv = _rois_argv(tmp)
        argv[argv.index("random")] = str(gain_weights(tmp / "w.pth", gain))
        return argv
    return build


def an_image_too_small_for_any_proposal(tmp):
    from PIL import Image

    write_photos(tmp / "images", names=("coffee",))
    # 12 px scaled to 96: the RPN's 16-original-pixel minimum is 128 resized pixels
    Image.new("RGB", (12, 12), (128, 128, 128)).save(tmp / "images" / "tiny.png")
    return _rois_argv(tmp)


def imported_empty_and_huge(tmp):
    source = tmp / "feats"
    source.mkdir()
    for name, features in (("good", np.full((3, 8), 0.25, np.float32)),
                           ("empty", np.zeros((0, 8), np.float32)),
                           ("huge", np.full((3, 8), 1e6, np.float32))):
        np.savez(source / f"{name}.npz", x=features, bbox=np.ones((len(features), 4), np.float32),
                 image_h=10, image_w=10)
    return ["import-rois", str(source), "--format", "npz", "--dtype", "float16", "--out",
            str(tmp / "out")]


def rois_from_an_ingest_folder(tmp):
    from mrhp_prep.data.ingest import ingest

    manifest = ingest(release(tmp), dataset="amazon", category="electronics",
                      cache_dir=tmp / "in").path
    return ["merge-rois", str(manifest), "--out", str(tmp / "out")]


CASES = [
    Case("extract-rois: a text file as weights", weights_not_a_checkpoint,
         refused=("w.pth", "weights-only", "not a file torch.save wrote"),
         absent=("weights_only", "trust")),
    Case("extract-rois: weights that overflow float32 on one image", gain_detector(
        10.0, black=0, white=255), listed=("white.jpg",), reasons=("overflow",), slow=True),
    Case("extract-rois: weights that overflow float32 on every image", gain_detector(
        10.0, white=255), listed=("white.jpg",), reasons=("overflow",), all_failed=True,
         slow=True),
    Case("extract-rois: features beyond float16 on one image", gain_detector(
        1.0, black=0, white=255), listed=("white.jpg",), reasons=("float16-overflow",),
         slow=True),
    Case("extract-rois: an image too small for any proposal", an_image_too_small_for_any_proposal,
         listed=("tiny.png",), reasons=("no-regions",), slow=True),
    Case("import-rois: no region, and features beyond float16", imported_empty_and_huge,
         listed=("empty.jpg", "huge.jpg"), reasons=("no-regions", "float16-overflow")),
    Case("merge-rois: an ingest folder as a shard", rois_from_an_ingest_folder,
         refused=("ingest", "extract-rois")),
    Case("extract-rois: NaN detector weights", detector_nan_weights,
         refused=("roi_heads.box_predictor.cls_score.weight", "NaN")),
    Case("extract-rois: symlink loop", symlink_loop_and_long_name,
         listed=("loop-a.jpg", "long-target.jpg"),
         slow=True),
    Case("extract-rois: 15000 x 15000 PNG", decompression_bomb, listed=("bomb.png",), slow=True),
    Case("extract-rois: manifest paths out of the images root", paths_out_of_the_images_root,
         listed=("P00-0/pic_0.jpg", "P00-1/pic_0.jpg"), slow=True),
    Case("import-rois: NaN features in one file", imported_nan_features,
         listed=("poisoned.jpg",)),
    Case("extract-rois: a 5000-character id (name too long)", five_thousand_char_ids,
         listed=("R" * 5000 + "/pic_0.jpg",), slow=True),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case, runner, tmp_path):
    run_case(runner, case, tmp_path)


# --- promises beside the table ------------------------------------------------------------------

@pytest.mark.slow
def test_a_refused_extraction_leaves_its_out_folder_usable(runner, tmp_path):
    refused = runner.invoke(cli, detector_nan_weights(tmp_path))
    assert refused.exit_code == 3 and not (tmp_path / "out").exists(), refused.output
    again = runner.invoke(cli, _rois_argv(tmp_path))
    assert again.exit_code == 0, again.output
    assert (tmp_path / "out" / "MANIFEST.json").is_file()


@pytest.mark.slow
def test_an_all_failed_extraction_names_the_cause_and_a_rerun_with_other_weights_works(
        runner, tmp_path):
    failed = runner.invoke(cli, gain_detector(10.0, white=255)(tmp_path))
    assert failed.exit_code == 4, failed.output
    flat = " ".join(failed.output.split())
    assert "first failure white.jpg: overflow" in flat and "overflowed float32" in flat
    assert "regions 0" in flat and "extracted 0" in flat
    again = runner.invoke(cli, _rois_argv(tmp_path, "--force"))
    assert again.exit_code == 0, again.output
    from mrhp_prep.vision.store import RoiStore

    with RoiStore(tmp_path / "out") as store:
        assert store.image_ids == ["white.jpg"] and store.image("white.jpg")["features"].shape[0]


def test_a_second_run_into_a_busy_folder_is_refused_at_once(tmp_path):
    from mrhp_prep.cache import open_stage
    from mrhp_prep.errors import InputError

    def start(force=False):
        return open_stage("extract-rois", dataset="d", settings={"a": 1}, inputs={},
                          format_version=1, out=tmp_path / "out", force=force)
    first = start()
    (first.path / "part.txt").write_text("work of the first run")
    with first.computing():
        for force in (False, True):      # --force must not clear a folder being written
            with pytest.raises(InputError, match="another run .*is computing into"):
                start(force)
        assert (first.path / "part.txt").is_file()
    with start().computing():  # free again once the first is done
        pass


@pytest.mark.slow
def test_images_out_of_the_root_are_never_read(runner, tmp_path):
    import json

    from mrhp_prep.vision.store import RoiStore

    result = runner.invoke(cli, paths_out_of_the_images_root(tmp_path))
    assert result.exit_code == 0, result.output
    failures = [json.loads(line) for line in
                (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert sorted((f["item"], f["reason"]) for f in failures) == [
        (f"P00-{k}/pic_0.jpg", "outside-images-root") for k in range(2)]
    assert any("../outside/coffee.jpg" in f["path"] for f in failures)
    with RoiStore(tmp_path / "out") as store:       # through the linked split, and the link
        assert sorted(store.image_ids) == ["P00-2/pic_0.jpg", "P00/pic_0.jpg"]


def test_the_images_root_rule_reads_the_manifest_path_not_the_links(tmp_path):
    """A path leaves the images root by a '..' or by being absolute, judged on the manifest's
    words, the same rule for fetch-images and extract-rois. Links are not resolved: a split
    folder linked to another disk (where fetch-images writes through the link) must be read,
    and a link the user put inside the root is theirs to follow."""
    import pandas as pd

    from mrhp_prep.data.fetch_stage import plan_jobs
    from mrhp_prep.vision.images import outside_root

    root = tmp_path / "root"
    (tmp_path / "other-disk" / "train").mkdir(parents=True)
    root.mkdir()
    (root / "train").symlink_to(tmp_path / "other-disk" / "train")
    (root / "mine.jpg").symlink_to(tmp_path / "other-disk" / "x.jpg")
    for inside in ("train/prd/P1/pic_0.jpg", "mine.jpg", "missing.jpg", "a/./b.jpg"):
        assert not outside_root(root / inside, root), inside
    for leaving in ("../root-x.jpg", "train/../../x.jpg", "/etc/passwd"):
        assert outside_root(root / leaving, root), leaving
    assert outside_root(tmp_path / "rootless.jpg", root)    # a name that only starts alike
    assert not outside_root(tmp_path / "anything.jpg", None)
    images = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "url": ["http://x.invalid/"] * 4,
                           "path": ["train/prd/P1/pic_0.jpg", "../x.jpg", "/etc/x.jpg",
                                    "mine.jpg"]})
    jobs, refused = plan_jobs(images, root)
    assert [job.dest for job in jobs] == [root / "train/prd/P1/pic_0.jpg", root / "mine.jpg"]
    assert [image_id for image_id, _, _ in refused] == ["b", "c"]


def test_part_files_of_two_runs_suggest_force(tmp_path):
    from mrhp_prep.errors import InputError
    from mrhp_prep.vision.store import ImageRegions
    from mrhp_prep.vision.store_write import write_store
    from mrhp_prep.vision.store_join import consolidate

    def regions():
        return ImageRegions("a.jpg", 10, 10, np.zeros((1, 4), np.float16),
                            np.zeros((1, 4), np.float32), np.zeros(1, np.int32),
                            np.zeros(1, np.float32), np.zeros(1, np.int32), np.zeros(1, np.float32))
    parts = [write_store(tmp_path / f"part-{i}.h5", [regions()], feature_dim=4) for i in range(2)]
    with pytest.raises(InputError, match="--force"):
        consolidate(parts, tmp_path / "rois.h5", attrs={}, feature_dim=4)


def test_a_store_refused_while_opening_is_closed(tmp_path):
    """A store that fails a check when opened, alone or as the second of the sources of a
    join, leaves no file open: HDF5 refuses to write a file this process still holds."""
    import h5py

    from mrhp_prep.errors import InputError
    from mrhp_prep.vision.store import ImageRegions, RoiStore
    from mrhp_prep.vision.store_join import consolidate
    from mrhp_prep.vision.store_write import write_store

    good = write_store(tmp_path / "good.h5", [ImageRegions(
        "a.jpg", 10, 10, np.zeros((1, 4), np.float16), np.zeros((1, 4), np.float32),
        np.zeros(1, np.int32), np.zeros(1, np.float32), np.zeros(1, np.int32),
        np.zeros(1, np.float32))], feature_dim=4)
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as handle:
        handle["image_id"] = np.zeros(1)              # an HDF5 file, not a store
    with pytest.raises(InputError, match="missing"):
        RoiStore(bad)
    with pytest.raises(InputError, match="missing"):
        consolidate([good, bad], tmp_path / "rois.h5", attrs={}, feature_dim=4)
    for path in (bad, good):
        h5py.File(path, "w").close()                  # neither is held open


def test_the_decompression_bomb_limit_is_pillows():
    from PIL import Image

    from mrhp_prep.vision.commands import extract_rois
    from mrhp_prep.vision.decode import DEFAULT_MAX_PIXELS

    pillow_refuses_above = 2 * Image.MAX_IMAGE_PIXELS
    assert DEFAULT_MAX_PIXELS == pillow_refuses_above
    option = next(p for p in extract_rois.params if p.name == "max_image_pixels")
    assert option.default == pillow_refuses_above


def test_why_the_detector_regions_of_an_image_are_not_stored():
    from mrhp_prep.vision.extract import detector_check

    def out(features, backbone_finite=True, score=0.5):
        n = len(features)
        return {"features": np.asarray(features, np.float32).reshape(n, 4),
                "boxes": np.zeros((n, 4), np.float32), "object_conf": np.full(n, score, np.float32),
                "attr_conf": np.ones(n, np.float32), "backbone_finite": np.bool_(backbone_finite)}

    def detector_problem(*args):
        return detector_check(*args).problem

    fine = out([[1.0, 2.0, 3.0, 4.0]])
    assert detector_problem(fine, "fp32", np.float16) is None
    reason, detail = detector_problem(out([[1.0, 2.0, np.inf, 4.0]]), "fp32", np.float16)
    assert reason == "non-finite" and "features" in detail and "--precision" not in detail
    reason, detail = detector_problem(out([[1.0] * 4], score=np.nan), "fp16", np.float16)
    assert reason == "non-finite" and "object scores" in detail and "--precision fp32" in detail
    reason, detail = detector_problem(out([], backbone_finite=False), "fp32", np.float16)
    assert reason == "overflow" and "overflowed float32" in detail and "no region" in detail
    reason, detail = detector_problem(out([]), "fp32", np.float16)
    assert reason == "no-regions" and "proposed none" in detail
    # 1e6 is a float32 number but beyond float16's largest value, 65504
    big = out([[1e6, 0.0, 0.0, 0.0]])
    reason, detail = detector_problem(big, "fp32", np.float16)
    assert reason == "float16-overflow" and "1e+06" in detail and "--dtype float32" in detail
    assert detector_problem(big, "fp32", np.float32) is None
    # 65510 rounds to 65504 in float16: finite, so stored
    assert detector_problem(out([[65510.0, 0.0, 0.0, 0.0]]), "fp32", np.float16) is None
    # what may be stored comes back cast, once: float16 as asked, float32 untouched
    stored = detector_check(fine, "fp32", np.float16).features
    assert stored.dtype == np.float16 and stored.tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert detector_check(fine, "fp32", np.float32).features is fine["features"]
