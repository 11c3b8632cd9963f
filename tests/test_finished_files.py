"""Finished files are verified: each stage records its outputs' sizes and SHA-256 digests in
MANIFEST.json, later stages check them before trusting a store, resumed stages redo a damaged
part, and a resumed training run refuses inputs written again since it started."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_stores import stores_for
from mrhp_prep import verify
from mrhp_prep.cli import cli
from mrhp_prep.data.manifest import Manifest
from mrhp_prep.errors import InputError
from mrhp_prep.vision.parts import list_parts, usable_parts, write_part
from mrhp_prep.vision.store import ImageRegions
from stage_edits import write_table
from train_fixtures import one_torch_thread  # noqa: F401

SMALL = ["model.text_hidden=16", "model.image_hidden=8", "model.shared_hidden=8"]


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.fixture
def manifest_copy(sample_manifest, tmp_path) -> Path:
    return Path(shutil.copytree(sample_manifest, tmp_path / "manifest"))


def test_ingest_records_each_table_as_hashlib_reads_it(sample_manifest):
    files = json.loads((sample_manifest / "MANIFEST.json").read_text())["files"]
    assert sorted(files) == ["images.parquet", "products.parquet", "reviews.parquet"]
    for name, record in files.items():
        data = (sample_manifest / name).read_bytes()
        assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("damage, words", [(_cut_in_half, "cut short"),
                                           (_flip_a_byte, "has changed since")])
def test_a_changed_table_is_refused_with_the_stage_to_rerun(manifest_copy, damage, words):
    damage(manifest_copy / "reviews.parquet")
    with pytest.raises(InputError) as refused:
        Manifest(manifest_copy)
    message = refused.value.format_message()
    assert "reviews.parquet" in message and words in message
    assert "re-run 'ingest' with --force" in message


def test_size_only_checks_cost_nothing_and_miss_a_same_size_change(manifest_copy,
                                                                  monkeypatch):
    monkeypatch.setenv(verify.VERIFY_ENV, "size")
    _flip_a_byte(manifest_copy / "images.parquet")
    Manifest(manifest_copy)                           # same size: only the digest would see it
    _cut_in_half(manifest_copy / "images.parquet")
    with pytest.raises(InputError, match="cut short"):
        Manifest(manifest_copy)
    monkeypatch.setenv(verify.VERIFY_ENV, "sometimes")
    with pytest.raises(InputError, match="MRHP_VERIFY"):
        Manifest(manifest_copy)


def test_folders_without_records_are_accepted(manifest_copy):
    info = json.loads((manifest_copy / "MANIFEST.json").read_text())
    del info["files"]                                  # a manifest an older version wrote
    (manifest_copy / "MANIFEST.json").write_text(json.dumps(info))
    _flip_a_byte(manifest_copy / "images.parquet")
    assert Manifest(manifest_copy).info["stage"] == "ingest"


def test_a_check_is_remembered_until_the_file_changes(manifest_copy, monkeypatch):
    monkeypatch.setattr(verify, "_SETTLED_SECONDS", 0.0)
    hashed = []
    real = verify.file_record
    monkeypatch.setattr(verify, "file_record", lambda path: hashed.append(Path(path).name)
                        or real(path))
    Manifest(manifest_copy)
    assert sorted(hashed) == ["images.parquet", "products.parquet", "reviews.parquet"]
    assert (manifest_copy / verify.STAMP_NAME).is_file()
    hashed.clear()
    verify._checked.clear()                            # a new process: the folder remembers
    Manifest(manifest_copy)
    assert hashed == []
    time.sleep(0.05)                                   # past the file system clock's tick
    _flip_a_byte(manifest_copy / "products.parquet")   # same size, new change time
    verify._checked.clear()
    with pytest.raises(InputError, match="products.parquet has changed"):
        Manifest(manifest_copy)


def _regions(image_id: str) -> ImageRegions:
    rng = np.random.default_rng(len(image_id))
    return ImageRegions(image_id, 20, 30, rng.random((2, 4)).astype(np.float16),
                        np.zeros((2, 4), np.float32), np.zeros(2, np.int32),
                        np.ones(2, np.float32), np.zeros(2, np.int32), np.ones(2, np.float32))


def test_damaged_roi_parts_are_deleted_so_their_images_are_redone(tmp_path, caplog):
    for names in (["a.jpg"], ["b.jpg"], ["c.jpg"], ["d.jpg"], ["e.jpg"]):
        write_part(tmp_path, [_regions(n) for n in names], [], feature_dim=4,
                   feature_dtype=np.float16, attrs={})
    parts = list_parts(tmp_path)
    record = json.loads(parts[0].with_suffix(".json").read_text())["file"]
    assert record == {"size": parts[0].stat().st_size,       # hashed as it was written
                      "sha256": hashlib.sha256(parts[0].read_bytes()).hexdigest()}
    _cut_in_half(parts[1])
    _flip_a_byte(parts[2])
    parts[3].with_suffix(".json").unlink()             # an older version's part: no record
    parts[4].with_suffix(".json").write_text('{"file": {"si')      # a damaged record
    with caplog.at_level(logging.WARNING):
        kept = usable_parts(tmp_path)
    assert [p.name for p in kept] == [parts[0].name, parts[3].name]
    assert [p.name for p in list_parts(tmp_path)] == [parts[0].name, parts[3].name]
    assert f"{parts[1]} is" in caplog.text and "cut short" in caplog.text
    assert f"{parts[2]} has changed" in caplog.text
    assert f"{parts[4]} has a damaged record" in caplog.text


def test_extract_rois_resumes_past_a_truncated_part(tmp_path, monkeypatch, caplog):
    from mrhp_prep.vision import extract
    from mrhp_prep.vision.models import DetectorSettings
    from mrhp_prep.vision.store import RoiStore
    from rois_support import write_photos

    photos = tmp_path / "photos"
    write_photos(photos, names=("astronaut", "coffee", "chelsea"))
    detector = DetectorSettings(weights="random", min_size=96, max_size=160,
                                rpn_post_nms_top_n=4, min_boxes=2, max_boxes=4)
    options = extract.RunOptions(part_size=1, workers=0, device="cpu")

    def run(out):
        return extract.extract_rois(images=str(photos), detector=detector, run_options=options,
                                    out=str(out), progress_bar=False)

    reference = run(tmp_path / "whole").path
    finish = extract._finish

    def killed(*args, **kwargs):
        raise KeyboardInterrupt                        # every part written, then killed
    monkeypatch.setattr(extract, "_finish", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    monkeypatch.setattr(extract, "_finish", finish)
    parts = list_parts(tmp_path / "killed")
    assert len(parts) == 3
    _cut_in_half(parts[1])
    with caplog.at_level(logging.WARNING):
        resumed = run(tmp_path / "killed").path
    assert f"part file {parts[1]} is" in caplog.text and "extracted again" in caplog.text
    with RoiStore(resumed) as back, RoiStore(reference) as whole:
        assert sorted(back.image_ids) == sorted(whole.image_ids)
        for image_id in whole.image_ids:
            np.testing.assert_array_equal(back.features(image_id), whole.features(image_id))


def _train(runner, stores, manifest, out, extra=()):
    args = ["train", "--manifest", str(manifest), "--rois", str(stores["rois"]), "--text",
            str(stores["text"]), "--probes", str(stores["probes"]), "--out", str(out),
            "--device", "cpu", "--num-workers", "0", *extra]
    for setting in [*SMALL, "train.epochs=2"]:
        args += ["--set", setting]
    return runner.invoke(cli, args)


@pytest.fixture(scope="module")
def unfinished(sample_manifest, tmp_path_factory):
    """A run on a copy of the sample manifest, finished, then its MANIFEST.json removed: an
    unfinished run with checkpoints, as a killed run leaves it."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("resume")
    manifest = Path(shutil.copytree(sample_manifest, root / "manifest"))
    stores = stores_for(manifest, root / "stores", text_dim=8, roi_dim=8)
    result = _train(CliRunner(), stores, manifest, root / "run")
    assert result.exit_code == 0, result.output
    return {"root": root, "manifest": manifest, "stores": stores, "run": root / "run"}


def _resumable(unfinished, tmp_path) -> tuple[Path, Path]:
    """Copies of the unfinished run and of its manifest (at the path the run names)."""
    run = Path(shutil.copytree(unfinished["run"], tmp_path / "run"))
    (run / "MANIFEST.json").unlink()
    backup = Path(shutil.copytree(unfinished["manifest"], tmp_path / "manifest-backup"))
    return run, backup


def _restore(unfinished, backup: Path) -> None:
    shutil.rmtree(unfinished["manifest"])
    shutil.copytree(backup, unfinished["manifest"])


def test_resume_refuses_labels_changed_in_place(unfinished, runner, tmp_path):
    run, backup = _resumable(unfinished, tmp_path)
    try:
        reviews = pd.read_parquet(unfinished["manifest"] / "reviews.parquet")
        reviews["label"] = 4 - reviews["label"]
        reviews.to_parquet(unfinished["manifest"] / "reviews.parquet", index=False)
        result = runner.invoke(cli, ["train", "--resume", str(run), "--device", "cpu",
                                     "--num-workers", "0"])
        assert result.exit_code == 3, result.output
        assert "reviews.parquet" in result.output and "re-run 'ingest'" in result.output
        assert not (run / "MANIFEST.json").exists()
    finally:
        _restore(unfinished, backup)


def test_resume_refuses_an_input_written_again_since_the_run_started(unfinished, runner,
                                                                    tmp_path):
    run, backup = _resumable(unfinished, tmp_path)
    try:
        # the same folder written again, its record updated (as a forced re-run would)
        reviews = pd.read_parquet(unfinished["manifest"] / "reviews.parquet")
        reviews["label"] = 4 - reviews["label"]
        write_table(unfinished["manifest"], "reviews", reviews, index=False)
        Manifest(unfinished["manifest"])               # the folder itself is consistent
        result = runner.invoke(cli, ["train", "--resume", str(run), "--device", "cpu",
                                     "--num-workers", "0"])
        assert result.exit_code == 3, result.output
        assert "manifest input was written again" in result.output
        assert "reviews.parquet" in result.output and "without --resume" in result.output
    finally:
        _restore(unfinished, backup)
    result = runner.invoke(cli, ["train", "--resume", str(run), "--device", "cpu",
                                 "--num-workers", "0"])
    assert result.exit_code == 0, result.output        # the inputs it started from: resumes
    assert "resuming from" in result.stderr


@pytest.fixture
def small_disk(tmp_path):
    from disk_faults import mount_small_disk

    yield from mount_small_disk(tmp_path / "disk", size="64m")


def test_a_finished_folder_on_a_read_only_disk_is_read(small_disk, sample_manifest, tmp_path,
                                                       monkeypatch):
    """The remembered check (.verified.json) is an optimisation: a finished folder that may
    not be written (a read-only mount, another user's cache) is checked and read all the
    same."""
    from disk_faults import LockedFolder
    from mrhp_prep.vision.stages import import_rois
    from mrhp_prep.vision.store import RoiStore

    monkeypatch.setattr(verify, "_SETTLED_SECONDS", 0.0)   # each check would be remembered
    manifest = Path(shutil.copytree(sample_manifest, small_disk.path / "manifest"))
    (manifest / verify.STAMP_NAME).unlink(missing_ok=True)   # a check the sample remembers
    source = tmp_path / "npz"
    source.mkdir()
    for k in range(3):
        np.savez(source / f"img{k}.npz", x=np.full((3, 8), 0.5 + k, np.float32),
                 bbox=np.ones((3, 4), np.float32), image_h=10, image_w=10)
    store = import_rois(str(source), fmt="npz", out=str(small_disk.path / "store")).path
    small_disk.read_only()
    if isinstance(small_disk, LockedFolder):      # chmod binds the folder itself only
        for folder in (manifest, store):
            folder.chmod(0o555)
    verify._checked.clear()                         # a new process
    try:
        assert len(Manifest(manifest).reviews) > 0
        with RoiStore.of_stage(store) as rois:
            assert len(rois) == 3 and float(rois.features("img2.jpg")[0, 0]) == 2.5
    finally:
        if isinstance(small_disk, LockedFolder):
            for folder in (manifest, store):
                folder.chmod(0o755)
    assert not (manifest / verify.STAMP_NAME).exists()
    assert not (store / verify.STAMP_NAME).exists()
