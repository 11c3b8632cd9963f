"""Stage folders: fingerprints, reuse, resume of unfinished runs, --force, refusal of foreign
folders."""

from __future__ import annotations

import json

import pytest

from mrhp_prep.cache import (MANIFEST_NAME, fingerprint, open_stage, path_fingerprint,
                             read_manifest, recorded_input)
from mrhp_prep.errors import InputError
from mrhp_prep.shards import resolve_shard, shard_of


def _open(tmp_path, settings=None, **kwargs):
    source = tmp_path / "input.txt"
    if not source.exists():
        source.write_text("data")
    return open_stage("demo", dataset="ds", settings=settings or {"a": 1},
                      inputs={"source": source}, format_version=1,
                      cache_dir=tmp_path / "cache", **kwargs)


def test_fingerprint_depends_on_every_part():
    base = fingerprint("s", {"a": 1}, {"x": "f"}, 1)
    assert base == fingerprint("s", {"a": 1}, {"x": "f"}, 1)
    assert len({base, fingerprint("t", {"a": 1}, {"x": "f"}, 1),
                fingerprint("s", {"a": 2}, {"x": "f"}, 1),
                fingerprint("s", {"a": 1}, {"x": "g"}, 1),
                fingerprint("s", {"a": 1}, {"x": "f"}, 2)}) == 5


def test_finished_run_is_reused_and_changed_input_is_not(tmp_path):
    run = _open(tmp_path)
    assert not run.complete and run.path.parent.parent.name == "ds"
    run.finish({"items": 3})
    again = _open(tmp_path)
    assert again.complete and again.path == run.path
    assert again.manifest()["counts"] == {"items": 3}
    (tmp_path / "input.txt").write_text("other data")
    changed = _open(tmp_path)
    assert changed.path != run.path and not changed.complete
    assert _open(tmp_path, settings={"a": 2}).path not in {run.path, changed.path}


def test_finished_folder_records_where_its_inputs_were(tmp_path):
    run = _open(tmp_path)
    assert recorded_input(run.path, "source") is None          # not finished yet
    run.finish({"items": 1})
    source = str((tmp_path / "input.txt").resolve())
    assert read_manifest(run.path)["input_paths"] == {"source": source}
    assert recorded_input(run.path, "source") == (tmp_path / "input.txt").resolve()
    assert recorded_input(run.path, "other") is None
    (tmp_path / "input.txt").unlink()                          # moved away: not offered
    assert recorded_input(run.path, "source") is None


def test_unfinished_folder_is_resumed_but_never_read(tmp_path):
    run = _open(tmp_path)
    (run.path / "part-0").write_text("half")
    with pytest.raises(InputError, match="unfinished"):
        read_manifest(run.path)
    with pytest.raises(InputError, match="another run .*is computing into"):
        _open(tmp_path)                  # not while the first one still holds the folder
    run.release()                        # the first run ends without finishing (killed)
    resumed = _open(tmp_path)
    assert resumed.path == run.path and not resumed.complete
    assert (resumed.path / "part-0").read_text() == "half"


def test_force_clears_a_finished_run(tmp_path):
    run = _open(tmp_path)
    (run.path / "old").write_text("x")
    run.finish({})
    forced = _open(tmp_path, force=True)
    assert not forced.complete and not (forced.path / "old").exists()


def test_manifest_is_written_last_and_atomically(tmp_path):
    run = _open(tmp_path)
    run.add_failure("img-1", "corrupt JPEG", file="a.jpg")
    run.finish({"ok": 1})
    manifest = json.loads((run.path / MANIFEST_NAME).read_text())
    assert manifest["num_failures"] == 1 and manifest["failures"][0]["item"] == "img-1"
    assert ((run.path / "failures.jsonl").stat().st_mtime_ns
            <= (run.path / MANIFEST_NAME).stat().st_mtime_ns)
    assert not [p for p in run.path.iterdir() if p.name.endswith(".part")]
    assert "python" in manifest["versions"]


def test_explicit_out_folder_refuses_foreign_content(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    with pytest.raises(InputError, match="not a mrhp-prep stage folder"):
        _open(tmp_path, out=out)
    with pytest.raises(InputError, match="not a mrhp-prep stage folder"):
        _open(tmp_path, out=out, force=True)
    assert (out / "precious.txt").exists()
    done = _open(tmp_path, out=tmp_path / "out2")
    done.finish({})
    with pytest.raises(InputError, match="another computation"):
        _open(tmp_path, out=tmp_path / "out2", settings={"a": 5})


def test_stage_folder_fingerprint_is_its_own(tmp_path):
    run = _open(tmp_path)
    run.finish({})
    assert path_fingerprint(run.path) == run.fingerprint


def test_shards_are_stable_and_cover_every_id():
    ids = [f"P{i}-{j}" for i in range(50) for j in range(5)]
    owners = [shard_of(i, 4) for i in ids]
    assert owners == [shard_of(i, 4) for i in ids]
    assert set(owners) == {0, 1, 2, 3}
    assert all(shard_of(i, 1) == 0 for i in ids)


def test_shard_defaults_come_from_the_scheduler(monkeypatch):
    for name in ("SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN",
                 "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_shard(None, None) == (1, 0)
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "8")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "6")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    assert resolve_shard(None, None) == (8, 5)
    assert resolve_shard(None, 2) == (8, 2)
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert resolve_shard(4, None) == (4, 3)
    with pytest.raises(InputError, match="outside"):
        resolve_shard(2, None)


def test_atomic_files_get_the_usual_permissions(tmp_path):
    from mrhp_prep.atomic import atomic_path

    with atomic_path(tmp_path / "shared.bin") as tmp:
        tmp.write_bytes(b"x")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert (tmp_path / "shared.bin").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_a_run_dropped_without_finishing_frees_its_folder(tmp_path):
    import gc

    run = _open(tmp_path)
    path = run.path
    del run                      # e.g. a library caller whose stage raised half-way
    gc.collect()
    assert _open(tmp_path).path == path


def test_a_folder_finished_by_another_run_while_this_one_waited_is_reused(tmp_path,
                                                                          monkeypatch):
    """The first look finds the folder unfinished; another run finishes it before this one
    takes the lock: the folder is looked at again under the lock and reused, not resumed."""
    from mrhp_prep.locks import FolderLock

    first = _open(tmp_path)
    (first.path / "work").write_text("done")
    take = FolderLock.acquire

    def the_other_run_finishes_first(lock):
        if not first.complete:
            first.finish({"items": 7})
        return take(lock)
    monkeypatch.setattr(FolderLock, "acquire", the_other_run_finishes_first)
    second = _open(tmp_path)
    assert second.complete and second.path == first.path
    assert second.manifest()["counts"] == {"items": 7}
    assert (second.path / "work").read_text() == "done"
    monkeypatch.setattr(FolderLock, "acquire", take)
    _open(tmp_path, force=True).release()   # the lock was let go: a forced run may take it


def test_the_lock_is_held_until_the_computation_ends_not_at_finish(tmp_path):
    """A stage deletes its part files after `finish`: a --force run must not clear the
    folder (and those part files' replacements) meanwhile."""
    run = _open(tmp_path)
    with run.computing():
        (run.path / "parts").mkdir()
        run.finish({"items": 1})
        with pytest.raises(InputError, match="another run .*is computing into"):
            _open(tmp_path, force=True)
        (run.path / "parts").rmdir()
    forced = _open(tmp_path, force=True)          # free once the block has ended
    assert not forced.complete
    forced.release()


def test_a_resumed_run_starts_without_the_partial_files_a_killed_one_left(tmp_path):
    run = _open(tmp_path)
    left = [run.path / ".rois.h5.x1.part", run.path / "parts" / ".part-00001.h5.x2.part",
            run.path / ".progress" / ".review-00000.arrow.json.x3.part"]
    kept = [run.path / "parts" / "part-00000.h5", run.path / "notes.part"]
    for path in left + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    run.release()                            # killed
    resumed = _open(tmp_path)
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in kept)
    resumed.release()


def test_force_removes_the_manifest_before_anything_else(tmp_path, monkeypatch):
    """A reader that looks while --force clears the folder must not find MANIFEST.json beside
    files already deleted."""
    import shutil
    from pathlib import Path

    run = _open(tmp_path)
    (run.path / "a-store").mkdir()
    (run.path / "a-file").write_text("x")
    run.finish({})
    order = []
    unlink, rmtree = Path.unlink, shutil.rmtree
    monkeypatch.setattr(Path, "unlink", lambda self, *a, **k: (order.append(self.name),
                                                                unlink(self, *a, **k))[1])
    monkeypatch.setattr(shutil, "rmtree", lambda path, *a, **k: (order.append(Path(path).name),
                                                                 rmtree(path, *a, **k))[1])
    _open(tmp_path, force=True).release()
    assert order[0] == MANIFEST_NAME and {"a-store", "a-file"} <= set(order)


def test_reopen_opens_a_finished_folder_with_its_work_kept(tmp_path):
    run = _open(tmp_path)
    (run.path / "work").write_text("kept")
    run.finish({"items": 1})
    reopened = _open(tmp_path, reopen=True)
    assert not reopened.complete and not (reopened.path / MANIFEST_NAME).exists()
    assert (reopened.path / "work").read_text() == "kept"
    with pytest.raises(InputError, match="another run .*is computing into"):
        _open(tmp_path)
    reopened.finish({"items": 2})
    assert _open(tmp_path).manifest()["counts"] == {"items": 2}
