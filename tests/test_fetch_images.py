"""The fetch-images stage end to end: a release written here, ingested, its images fetched from
a real loopback HTTP server into the crawl layout; the report, resume after a kill, shards and
the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import fetch_server as fs
from fetch_server import server, srv  # noqa: F401  (pytest fixtures)
from mrhp_prep.cache import read_manifest
from mrhp_prep.cli import cli
from mrhp_prep.data.fetch import FetchSettings
from mrhp_prep.data.fetch_stage import fetch_images
from mrhp_prep.data.fetch_command import ByteSize
from mrhp_prep.data.ingest import ingest
from mrhp_prep.data.manifest import Manifest
from mrhp_prep.errors import InputError

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[1]
FAST = FetchSettings(workers=4, per_host=2, retries=1, backoff=0.01, max_backoff=0.05,
                     connect_timeout=2.0, read_timeout=2.0)
FAST_ARGS = ["--workers", "4", "--per-host", "2", "--retries", "1", "--backoff", "0.01",
             "--read-timeout", "2"]


@pytest.fixture(scope="module")
def photos():
    return {"astronaut": fs.photo("astronaut", "JPEG"), "coffee": fs.photo("coffee", "PNG"),
            "chelsea": fs.photo("chelsea", "JPEG"), "rocket": fs.photo("rocket", "JPEG")}


def write_release(raw: Path, items: dict[str, dict]) -> Path:
    """Amazon-flavour Electronics release files, one product (with reviews) per split.

    `items` maps a split to {"product": id, "urls": [...], "reviews": {review_id: [urls]}}.
    """
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        spec = items[split]
        pid = spec["product"]
        prd = [{"product_id": pid, "name": f"Product {pid}", "img_url": spec["urls"],
                "description": "A thing to review.", "keyword": "", "brand_name": ""}]
        rvw = [{"product_id": pid, "review_id": rid, "title": "ok", "img_url": urls,
                "content": f"Review {rid} of the product, with enough words."}
               for rid, urls in spec["reviews"].items()]
        rel = [{"product_id": pid, "review_id": rid, "upvotes": i + 1}
               for i, rid in enumerate(spec["reviews"])]
        for kind, rows in (("prd", prd), ("rvw", rvw), ("rel", rel)):
            pd.DataFrame(rows).to_json(raw / f"Electronics.{kind}.{split}", orient="records")
    return raw


def make_manifest(tmp_path: Path, items: dict, name: str) -> Path:
    raw = write_release(tmp_path / f"raw-{name}", items)
    return ingest(raw, dataset="amazon", category="electronics", name=name,
                  cache_dir=tmp_path / "cache").path


@pytest.fixture
def mixed_manifest(srv, photos, tmp_path):
    """Eight images: five good ones (one behind redirects, one PNG), three bad."""
    srv.routes["/p/a.jpg"] = fs.serve(photos["astronaut"])
    srv.routes["/p/coffee.png"] = fs.serve(photos["coffee"], "image/png")
    srv.routes["/r/1"] = fs.redirect("/r/2", 301)
    srv.routes["/r/2"] = fs.redirect("/p/chelsea.jpg", 302)
    srv.routes["/p/chelsea.jpg"] = fs.serve(photos["chelsea"])
    srv.routes["/p/rocket.jpg"] = fs.serve(photos["rocket"])
    srv.routes["/p/err.html"] = fs.serve(b"<html><body>blocked</body></html>", "text/html")
    srv.routes["/p/later.jpg"] = fs.status(404)
    items = {
        "train": {"product": "B0FETCH01", "urls": [srv.url("/p/a.jpg"), srv.url("/p/coffee.png")],
                  "reviews": {"B0FETCH01-0": [srv.url("/r/1")], "B0FETCH01-1": []}},
        "dev": {"product": "B0FETCH02", "urls": [srv.url("/p/later.jpg")],
                "reviews": {"B0FETCH02-0": ["file:///etc/passwd", srv.url("/p/rocket.jpg")]}},
        "test": {"product": "B0FETCH03", "urls": [srv.url("/p/err.html")],
                 "reviews": {"B0FETCH03-0": [srv.url("/p/rocket.jpg")]}},
    }
    return make_manifest(tmp_path, items, "fetchtest")


def failures_of(folder: Path) -> dict[str, dict]:
    lines = (folder / "failures.jsonl").read_text().splitlines()
    return {row["image_id"]: row for row in map(json.loads, lines)}


def test_images_land_at_the_layout_paths_and_failures_are_reported(srv, photos, mixed_manifest,
                                                                    tmp_path):
    root = tmp_path / "images"
    run = fetch_images(mixed_manifest, root, FAST, cache_dir=tmp_path / "cache",
                       show_progress=False)

    # The layout the earlier crawlers used, spelled out here rather than taken from the code.
    expected = {
        "train/prd/B0FETCH01/pic_0.jpg": photos["astronaut"],
        "train/prd/B0FETCH01/pic_1.jpg": None,                 # PNG, stored as JPEG
        "train/rvw/B0FETCH01-0/pic_0.jpg": photos["chelsea"],
        "dev/rvw/B0FETCH02-0/pic_1.jpg": photos["rocket"],
        "test/rvw/B0FETCH03-0/pic_0.jpg": photos["rocket"],
    }
    stored = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert stored == sorted(expected)
    for rel, body in expected.items():
        with Image.open(root / rel) as image:
            image.load()
            assert image.format == "JPEG"
        if body is not None:
            assert (root / rel).read_bytes() == body

    assert run.path.parent == tmp_path / "cache" / "fetchtest" / "fetch-images"
    info = read_manifest(run.path, stage="fetch-images")
    assert info["images_root"] == str(root.resolve())
    counts = info["counts"]
    assert (counts["images"], counts["downloaded"], counts["already_present"],
            counts["failed"], counts["converted_to_jpeg"]) == (8, 5, 0, 3, 1)
    assert counts["bytes_downloaded"] == (sum(len(b) for b in expected.values() if b)
                                          + len(photos["coffee"]))

    failures = failures_of(run.path)
    assert set(failures) == {"B0FETCH02/pic_0.jpg", "B0FETCH02-0/pic_0.jpg",
                             "B0FETCH03/pic_0.jpg"}
    missing = failures["B0FETCH02/pic_0.jpg"]
    assert missing["reason"] == "HTTP 404 Not Found" and missing["attempts"] == 1
    assert missing["url"] == srv.url("/p/later.jpg") and missing["http_status"] == 404
    assert missing["path"] == "dev/prd/B0FETCH02/pic_0.jpg"
    local = failures["B0FETCH02-0/pic_0.jpg"]
    assert "unsupported URL scheme 'file'" in local["reason"] and local["attempts"] == 0
    assert "text/html" in failures["B0FETCH03/pic_0.jpg"]["reason"]
    assert not list(root.rglob("*.part"))


def test_a_second_run_retries_only_what_failed(srv, photos, mixed_manifest, tmp_path):
    root = tmp_path / "images"
    first = fetch_images(mixed_manifest, root, FAST, cache_dir=tmp_path / "cache",
                         show_progress=False)
    hits_before = dict(srv.hits)
    srv.routes["/p/later.jpg"] = fs.serve(photos["astronaut"])       # the 404 is fixed now

    second = fetch_images(mixed_manifest, root, FAST, cache_dir=tmp_path / "cache",
                          show_progress=False)
    assert second.path == first.path
    counts = second.manifest()["counts"]
    assert (counts["downloaded"], counts["already_present"], counts["failed"]) == (1, 5, 2)
    assert (root / "dev/prd/B0FETCH02/pic_0.jpg").read_bytes() == photos["astronaut"]
    # Complete files were not asked for again.
    for path in ("/p/a.jpg", "/p/coffee.png", "/r/1", "/p/rocket.jpg"):
        assert srv.hits[path] == hits_before[path]
    assert set(failures_of(second.path)) == {"B0FETCH02-0/pic_0.jpg", "B0FETCH03/pic_0.jpg"}


@pytest.fixture
def good_manifest(srv, photos, tmp_path):
    for name, body in photos.items():
        kind = "image/png" if name == "coffee" else "image/jpeg"
        srv.routes[f"/ok/{name}"] = fs.serve(body, kind)
    url = lambda name: srv.url(f"/ok/{name}")  # noqa: E731
    items = {
        "train": {"product": "P1", "urls": [url("astronaut"), url("coffee")],
                  "reviews": {"P1-0": [url("chelsea")], "P1-1": [url("rocket")]}},
        "dev": {"product": "P2", "urls": [url("rocket")], "reviews": {"P2-0": [url("chelsea")]}},
        "test": {"product": "P3", "urls": [url("astronaut")],
                 "reviews": {"P3-0": [url("coffee"), url("rocket")]}},
    }
    return make_manifest(tmp_path, items, "fetchgood")


def test_a_finished_run_is_not_repeated_unless_files_have_gone(srv, good_manifest, tmp_path):
    root = tmp_path / "images"
    first = fetch_images(good_manifest, root, FAST, cache_dir=tmp_path / "cache",
                         show_progress=False)
    assert first.manifest()["counts"]["downloaded"] == 9
    requests = sum(srv.hits.values())
    again = fetch_images(good_manifest, root, FAST, cache_dir=tmp_path / "cache",
                         show_progress=False)
    assert sum(srv.hits.values()) == requests
    assert again.manifest()["timings"] == first.manifest()["timings"]

    (root / "dev/rvw/P2-0/pic_0.jpg").unlink()
    third = fetch_images(good_manifest, root, FAST, cache_dir=tmp_path / "cache",
                         show_progress=False)
    counts = third.manifest()["counts"]
    assert (counts["downloaded"], counts["already_present"]) == (1, 8)
    assert sum(srv.hits.values()) == requests + 1


def test_verify_existing_fetches_broken_files_again(srv, photos, good_manifest, tmp_path):
    root = tmp_path / "images"
    broken = root / "train/rvw/P1-0/pic_0.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(photos["chelsea"][:300])                      # an old, cut-off crawl
    plain = fetch_images(good_manifest, root, FAST, cache_dir=tmp_path / "cache",
                         show_progress=False)
    assert plain.manifest()["counts"]["already_present"] == 1
    assert broken.read_bytes() == photos["chelsea"][:300]

    checked = fetch_images(good_manifest, root,
                           replace(FAST, verify_existing=True),
                           cache_dir=tmp_path / "cache", show_progress=False)
    counts = checked.manifest()["counts"]
    assert (counts["downloaded"], counts["already_present"],
            counts["replaced_invalid"]) == (1, 8, 1)
    assert broken.read_bytes() == photos["chelsea"]


def test_shards_split_the_images_by_id(srv, good_manifest, tmp_path):
    root = tmp_path / "images"
    folders, fetched = [], []
    for index in range(2):
        run = fetch_images(good_manifest, root, FAST, num_shards=2, shard_index=index,
                           cache_dir=tmp_path / "cache", show_progress=False)
        folders.append(run.path)
        counts = run.manifest()["counts"]
        assert counts["already_present"] == 0
        fetched.append(counts["downloaded"])
    assert folders[0] != folders[1]
    assert sum(fetched) == 9 and min(fetched) > 0
    images = Manifest(good_manifest).images
    assert all((root / p).is_file() for p in images["path"])
    with pytest.raises(InputError, match="shard index 2 is outside 0..1"):
        fetch_images(good_manifest, root, FAST, num_shards=2, shard_index=2,
                     cache_dir=tmp_path / "cache", show_progress=False)


@pytest.mark.slow
def test_a_killed_run_resumes_without_partial_files(srv, photos, tmp_path):
    import threading

    release = threading.Event()
    body = fs.photo("astronaut", "JPEG", max_side=256)
    srv.routes["/k/one.jpg"] = fs.serve(photos["rocket"])
    srv.routes["/k/two.jpg"] = fs.serve(photos["chelsea"])
    srv.routes["/k/big.jpg"] = fs.hang(release, body, send_first=len(body) // 2)
    items = {"train": {"product": "K1", "urls": [srv.url("/k/one.jpg")], "reviews": {"K1-0": []}},
             "dev": {"product": "K2", "urls": [srv.url("/k/two.jpg")], "reviews": {"K2-0": []}},
             "test": {"product": "K3", "urls": [srv.url("/k/big.jpg")], "reviews": {"K3-0": []}}}
    manifest = make_manifest(tmp_path, items, "fetchkill")
    root, cache = tmp_path / "images", tmp_path / "cache"
    final = root / "test/prd/K3/pic_0.jpg"
    args = ["fetch-images", "--manifest", str(manifest), "--images-root", str(root),
            "--cache-dir", str(cache), "--workers", "1", "--read-timeout", "60"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen([sys.executable, "-m", "mrhp_prep", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        parts: list[Path] = []
        while time.monotonic() < deadline:
            parts = [p for p in final.parent.glob(".pic_0.jpg.*.part") if p.stat().st_size]
            if parts:
                break
            assert child.poll() is None, "the fetcher ended before the stalled download"
            time.sleep(0.05)
        assert parts, "the stalled download never started"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        release.set()

    # Killed mid-body: half the bytes sit under a temporary name, none under the final one.
    assert not final.exists()
    assert 0 < parts[0].stat().st_size < len(body)
    assert (root / "train/prd/K1/pic_0.jpg").read_bytes() == photos["rocket"]
    stage_folders = list((cache / "fetchkill" / "fetch-images").iterdir())
    assert len(stage_folders) == 1
    with pytest.raises(InputError, match="unfinished"):
        read_manifest(stage_folders[0])

    srv.routes["/k/big.jpg"] = fs.serve(body)
    run = fetch_images(manifest, root, FAST, cache_dir=cache, show_progress=False)
    assert run.path == stage_folders[0]                     # the unfinished folder, resumed
    counts = run.manifest()["counts"]
    assert (counts["downloaded"], counts["already_present"], counts["failed"]) == (1, 2, 0)
    assert final.read_bytes() == body
    assert not list(root.rglob("*.part"))
    assert srv.hits["/k/one.jpg"] == 1 and srv.hits["/k/two.jpg"] == 1


def test_command_line(runner, srv, good_manifest, tmp_path):
    root, cache = tmp_path / "images", tmp_path / "cache"
    args = ["fetch-images", "--manifest", str(good_manifest), "--images-root", str(root),
            "--cache-dir", str(cache), *FAST_ARGS]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert (folder / "MANIFEST.json").is_file() and folder.parent.name == "fetch-images"
    assert "fetch-images finished" in result.stderr
    assert "downloaded" in result.stderr and "images/s" in result.stderr
    assert len(list(root.rglob("pic_*.jpg"))) == 9

    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert Path(again.stdout.strip().splitlines()[-1]) == folder
    assert "nothing to do" in again.stderr


def test_a_folder_of_one_image_that_may_not_be_written_fails_that_image_only(
        srv, good_manifest, tmp_path):
    """Permission refused in one item's folder is that image's listed failure; the run goes
    on with the others (the disk itself is fine). Run bound by file permissions (root without
    its override), as any user would be."""
    from disk_faults import without_permission_override
    from running_cli import cli_env

    root = tmp_path / "images"
    locked = root / "train" / "rvw" / "P1-0"
    locked.mkdir(parents=True)
    locked.chmod(0o555)
    try:
        done = subprocess.run(
            [*without_permission_override(), sys.executable, "-m", "mrhp_prep", "fetch-images",
             "--manifest", str(good_manifest), "--images-root", str(root), "--cache-dir",
             str(tmp_path / "cache"), *FAST_ARGS], env=cli_env(), capture_output=True,
            text=True, timeout=60)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    failures = failures_of(folder)
    assert list(failures) == ["P1-0/pic_0.jpg"]
    assert "cannot write" in failures["P1-0/pic_0.jpg"]["reason"]
    assert "Permission denied" in failures["P1-0/pic_0.jpg"]["reason"]
    assert len(list(root.rglob("pic_*.jpg"))) == 8


def test_command_line_exit_code_when_every_image_fails(runner, srv, tmp_path):
    items = {split: {"product": f"X{i}", "urls": [srv.url(f"/none/{i}.jpg")],
                     "reviews": {f"X{i}-0": []}}
             for i, split in enumerate(("train", "dev", "test"))}
    manifest = make_manifest(tmp_path, items, "fetchnone")
    result = runner.invoke(cli, ["fetch-images", "--manifest", str(manifest), "--images-root",
                                 str(tmp_path / "images"), "--cache-dir",
                                 str(tmp_path / "cache"), *FAST_ARGS])
    assert result.exit_code == 4, result.output
    assert "every one of the 3 images failed" in result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert len(failures_of(folder)) == 3


def test_command_line_rejects_bad_sizes_and_missing_manifests(runner, tmp_path):
    size = ByteSize()
    assert [size.convert(v, None, None) for v in ("20MB", "20MiB", "500kB", "1048576", "1.5G")] \
        == [20_000_000, 20 * 2**20, 500_000, 1_048_576, 1_500_000_000]
    bad = runner.invoke(cli, ["fetch-images", "--manifest", str(tmp_path), "--images-root",
                              str(tmp_path / "i"), "--max-bytes", "lots"])
    assert bad.exit_code == 2 and "'lots' is not a size" in bad.output
    not_manifest = runner.invoke(cli, ["fetch-images", "--manifest", str(tmp_path),
                                       "--images-root", str(tmp_path / "i")])
    assert not_manifest.exit_code == 3 and "not a stage folder" in not_manifest.output


def test_runs_as_a_pipeline_stage_after_ingest(runner, srv, photos, tmp_path):
    import yaml

    srv.routes["/pipe.jpg"] = fs.serve(photos["rocket"])
    items = {split: {"product": f"Q{i}", "urls": [srv.url(f"/pipe.jpg?p={i}")],
                     "reviews": {f"Q{i}-0": [srv.url(f"/pipe.jpg?r={i}")]}}
             for i, split in enumerate(("train", "dev", "test"))}
    write_release(tmp_path / "raw", items)
    pipeline = tmp_path / "fetch.yaml"
    pipeline.write_text(yaml.safe_dump({"cache_dir": "cache", "stages": [
        {"command": "ingest", "args": {"raw_dir": "raw", "dataset": "amazon",
                                       "category": "electronics"}},
        {"command": "fetch-images", "args": {"manifest": "{ingest}", "images_root": "images",
                                             "workers": 2, "retries": 0}},
    ]}))
    result = runner.invoke(cli, ["run", str(pipeline)])
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.parent == tmp_path / "cache" / "amazon-electronics" / "fetch-images"
    assert read_manifest(folder)["counts"]["downloaded"] == 6
    assert (tmp_path / "images" / "dev" / "rvw" / "Q1-0" / "pic_0.jpg").read_bytes() == \
        photos["rocket"]


def test_downloaded_images_get_the_mode_the_umask_gives(srv, good_manifest, tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    root = tmp_path / "images"
    fetch_images(good_manifest, root, FAST, cache_dir=tmp_path / "cache", show_progress=False)
    images = [p for p in root.rglob("*.jpg")]
    assert images
    # Not mkstemp's private 0600: a shared image folder stays readable for the group.
    assert {p.stat().st_mode & 0o777 for p in images} == {0o666 & ~umask}
