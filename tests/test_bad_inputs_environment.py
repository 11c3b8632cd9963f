"""A full disk and a read-only disk under every command, on a small real tmpfs.

Each case runs the real command line with its output (--out, --cache-dir, --output, the
images root) on the small disk, once full and once read-only. The promises: exit 5, no
traceback, one message that names the disk's folder and says what to do; then, the disk
repaired, the same command again finishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bad_input_table import pipeline_argv, release
from disk_faults import mount_small_disk
from mrhp_prep.cli import cli
from rois_support import FAST, tiny, write_photos


class Inputs:
    """Inputs several cases share, each built on the ordinary disk when first asked for."""

    def __init__(self, root: Path, sample_manifest: Path):
        self.root = root
        self.manifest = sample_manifest

    @cached_property
    def photos(self) -> Path:
        write_photos(self.root / "photos", names=("coffee", "chelsea"))
        return self.root / "photos"

    @cached_property
    def npz_source(self) -> Path:
        source = self.root / "npz"
        source.mkdir()
        for k in range(3):
            np.savez(source / f"img{k}.npz", x=np.full((3, 8), 0.25 + k, np.float32),
                     bbox=np.ones((3, 4), np.float32), image_h=10, image_w=10)
        return source

    @cached_property
    def store(self) -> Path:
        from mrhp_prep.vision.stages import import_rois

        return import_rois(str(self.npz_source), fmt="npz", out=str(self.root / "store")).path

    @cached_property
    def text_jobs(self) -> list[Path]:
        from mrhp_prep.text.embed import embed_text

        return [embed_text(self.manifest, vectors="glove-6b-50d-package", min_freq=1,
                           num_shards=2, shard_index=k, workers=1,
                           out=self.root / f"text-{k}").path for k in range(2)]

    @cached_property
    def roi_shards(self) -> list[Path]:
        from mrhp_prep.vision.extract import RunOptions, extract_rois
        from mrhp_prep.vision.models import DetectorSettings

        detector = DetectorSettings(weights="random", min_size=96, max_size=160,
                                    rpn_post_nms_top_n=4, min_boxes=2, max_boxes=4)
        return [extract_rois(images=str(self.photos), detector=detector, num_shards=2,
                             shard_index=k, run_options=RunOptions(workers=0, device="cpu"),
                             out=str(self.root / f"rois-{k}"), progress_bar=False).path
                for k in range(2)]

    @cached_property
    def predictions(self) -> Path:
        path = self.root / "predictions.jsonl"
        rows = [{"product_id": f"P{p}", "review_id": f"R{p}-{r}", "label": r, "score": r / 3}
                for p in range(2) for r in range(3)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    @cached_property
    def stores(self) -> dict:
        from feature_stores import stores_for

        return stores_for(self.manifest, self.root / "stores", text_dim=8, roi_dim=8)

    @cached_property
    def trained(self) -> Path:
        from bad_train_inputs import SMALL
        from mrhp_prep.train.run import train

        return train(**{k: self.stores[k] for k in ("manifest", "rois", "text", "probes")},
                     overrides=SMALL, device="cpu", out=self.root / "run",
                     show_progress=False).path

    @cached_property
    def fetch_manifest(self) -> Path:
        import fetch_server as fs
        from mrhp_prep.data.ingest import ingest

        self.server = fs.ImageServer()
        self.server.routes["/a.jpg"] = fs.serve(fs.photo("astronaut", "JPEG"))
        self.server.routes["/b.jpg"] = fs.serve(fs.photo("rocket", "JPEG"))

        def with_urls(tables):
            tables["prd", "train"][0]["img_url"] = [self.server.url("/a.jpg")]
            tables["rvw", "train"][0]["img_url"] = [self.server.url("/b.jpg")]
        raw = release(self.root / "fetch", with_urls)
        return ingest(raw, dataset="amazon", category="electronics",
                      out=self.root / "fetch-manifest").path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_manifest):
    made = Inputs(tmp_path_factory.mktemp("inputs"), sample_manifest)
    yield made
    if hasattr(made, "server"):
        made.server.close()


@dataclass
class FaultCase:
    """`build(tmp, disk, inputs)` returns the argv whose output goes to the folder `disk`;
    `done(disk, stdout)` says whether the rerun's output is complete; `option` is the one
    that chose the folder, which the advice names (None: the command writes there without a
    stage folder's guard, and the advice names no option rather than a wrong one)."""

    name: str
    build: Callable[[Path, Path, Inputs], list[str]]
    done: Callable[[Path, str], bool]
    slow: bool = False
    option: str | None = "--out"


def _finished_folder(disk: Path, stdout: str) -> bool:
    folder = Path(stdout.strip().splitlines()[-1])
    return disk in folder.parents and (folder / "MANIFEST.json").is_file()


def _file(name: str) -> Callable[[Path, str], bool]:
    return lambda disk, stdout: (disk / name).is_file() and (disk / name).stat().st_size > 0


def _pipeline(tmp, disk, inputs):
    argv = pipeline_argv(tmp, [{"command": "ingest"}])
    return argv + ["--cache-dir", str(disk / "cache")]


CASES = [
    FaultCase("ingest", lambda tmp, disk, i: [
        "ingest", str(release(tmp)), "--dataset", "amazon", "--category", "electronics",
        "--out", str(disk / "out")], _finished_folder),
    FaultCase("run (a pipeline)", _pipeline, _finished_folder, option="--cache-dir"),
    FaultCase("fetch-images (the images root)", lambda tmp, disk, i: [
        "fetch-images", "--manifest", str(i.fetch_manifest), "--images-root", str(disk),
        "--out", str(tmp / "report"), "--retries", "0"],
        lambda disk, stdout: len(list(disk.rglob("pic_0.jpg"))) == 2, option="--images-root"),
    FaultCase("import-rois", lambda tmp, disk, i: [
        "import-rois", str(i.npz_source), "--format", "npz", "--out", str(disk / "out")],
        _finished_folder),
    FaultCase("export-rois", lambda tmp, disk, i: [
        "export-rois", str(i.store), "--format", "tsv", "--out", str(disk / "exported")],
        lambda disk, stdout: (disk / "exported" / "rois.tsv").stat().st_size > 0),
    FaultCase("embed-text", lambda tmp, disk, i: [
        "embed-text", "--manifest", str(i.manifest), "--vectors", "glove-6b-50d-package",
        "--min-freq", "1", "--workers", "1", "--out", str(disk / "out")], _finished_folder),
    FaultCase("merge-text", lambda tmp, disk, i: [
        "merge-text", *map(str, i.text_jobs), "--out", str(disk / "out")], _finished_folder),
    FaultCase("evaluate", lambda tmp, disk, i: [
        "evaluate", str(i.predictions), "--output", str(disk / "metrics.json")],
        _file("metrics.json"), option=None),
    FaultCase("probe-masks", lambda tmp, disk, i: [
        "probe-masks", "--manifest", str(i.manifest), "--out", str(disk / "out")],
        _finished_folder, slow=True),
    FaultCase("extract-rois", lambda tmp, disk, i: [
        "extract-rois", "--images", str(i.photos), "--out", str(disk / "out"), "--device",
        "cpu", *tiny(**FAST)], _finished_folder, slow=True),
    FaultCase("merge-rois", lambda tmp, disk, i: [
        "merge-rois", *map(str, i.roi_shards), "--out", str(disk / "out")],
        _finished_folder, slow=True),
    FaultCase("train", lambda tmp, disk, i: [
        "train", *[x for role in ("manifest", "rois", "text", "probes")
                   for x in (f"--{role}", str(i.stores[role]))],
        "--device", "cpu", "--num-workers", "0", "--set", "train.epochs=1",
        "--set", "model.text_hidden=16", "--out", str(disk / "run")],
        _finished_folder, slow=True),
    FaultCase("predict", lambda tmp, disk, i: [
        "predict", "--run", str(i.trained), "--split", "test", "--device", "cpu",
        "--output", str(disk / "predicted.jsonl")], _file("predicted.jsonl"), slow=True,
        option=None),
    FaultCase("compare", lambda tmp, disk, i: [
        "compare", str(i.trained), "--out", str(disk / "compared")],
        lambda disk, stdout: (disk / "compared" / "compare.md").is_file(), slow=True,
        option=None),
]


@pytest.fixture
def small_disk(tmp_path):
    yield from mount_small_disk(tmp_path / "disk")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fault", ["full", "read-only"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] * c.slow)
                                  for c in CASES])
def test_environment_fault(case, fault, small_disk, inputs, runner, tmp_path):
    argv = case.build(tmp_path, small_disk.path, inputs)
    if fault == "full":
        small_disk.fill()
    else:
        small_disk.read_only()
    result = runner.invoke(cli, argv)
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == 5, output
    assert str(small_disk.path) in output, output
    if fault == "full":
        assert "no space left" in output and "free space" in output, output
    else:
        assert small_disk.read_only_words in output, output
        advice = (f"choose another {case.option}" if case.option
                  else "write the output somewhere else")
        assert advice in output, output
        for option in {"--out", "--cache-dir", "--images-root"} - {case.option}:
            assert f"another {option}" not in output, output
    assert output.count("Error:") == 1, output

    small_disk.empty() if fault == "full" else small_disk.writable()
    again = runner.invoke(cli, argv)
    assert again.exit_code == 0, again.output
    assert case.done(small_disk.path, again.stdout), again.output


# --- a disk that fills up half-way: the rerun resumes, nothing twice -------------------------

def test_embed_text_on_a_disk_that_fills_mid_run_keeps_its_finished_shards(
        small_disk, inputs, runner):
    from mrhp_prep.data.manifest import Manifest
    from mrhp_prep.text.shards import read_field

    out = small_disk.path / "text"
    argv = ["embed-text", "--manifest", str(inputs.manifest), "--vectors",
            "glove-6b-50d-package", "--min-freq", "1", "--workers", "1", "--rows-per-shard", "5",
            "--out", str(out)]
    small_disk.fill(leave=180_000)      # room for the vocabularies and a few shards
    first = runner.invoke(cli, argv)
    assert first.exit_code == 5 and f"disk that holds {out}" in first.output, first.output
    kept = {path.name: path.stat().st_mtime_ns for path in out.glob("review-*.arrow")
            if (out / ".progress" / f"{path.name}.json").is_file()}
    reviews = Manifest(inputs.manifest).reviews["review_id"].tolist()
    assert 0 < len(kept) < -(-len(reviews) // 5), kept

    small_disk.empty()
    again = runner.invoke(cli, argv)
    assert again.exit_code == 0, again.output
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # not redone
    ids = read_field(out, "review").column("id").to_pylist()
    assert sorted(ids) == sorted(reviews)             # every review once


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_extract_rois_on_a_disk_that_fills_mid_run_exits_cleanly_and_resumes(
        small_disk, inputs, tmp_path):
    """HDF5 crashed the process (a segfault) when the disk refused one of its writes: run in
    a process of its own, so a crash would show as one."""
    import os
    import subprocess
    import sys

    from mrhp_prep.vision.store import RoiStore

    photos = tmp_path / "photos"
    names = ("astronaut", "coffee", "chelsea", "rocket", "camera")
    write_photos(photos, names=names)
    out = small_disk.path / "rois"
    command = [sys.executable, "-m", "mrhp_prep", "extract-rois", "--images", str(photos),
               "--out", str(out), "--device", "cpu", "--part-size", "1", *tiny(**FAST)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    small_disk.fill(leave=80_000)       # room for about two part files
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 5, (first.returncode, first.stderr[-3000:])
    assert "Traceback" not in first.stderr
    assert f"Error: no space left on the disk that holds {out}" in first.stderr
    parts = len(list((out / "parts").glob("part-*.h5")))
    assert 0 < parts < len(names)

    small_disk.empty()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming: {parts} of {len(names)} images already in {parts} part files" \
        in again.stderr
    with RoiStore(out) as store:
        assert sorted(store.image_ids) == sorted(f"{name}.jpg" for name in names)
