"""Ctrl-C, `kill -9` and two runs at once, on the real command line in processes of their own.

- Ctrl-C (SIGINT to the whole process group, as a terminal sends it) with worker processes:
  exit 130, one line saying to rerun to resume, no traceback from any process; the rerun
  finishes with every item once.
- Two identical runs: the second is refused at once (exit 3, "another run is computing
  into ..."), also with --force, which must not clear the folder under the first.
- `kill -9` of a run whose forked workers are still alive: the rerun is not refused.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mrhp_prep.cli import cli
from rois_support import FAST, tiny, write_photos
from running_cli import RunningCli, alive, children_of, cli_env, run_cli
from train_fixtures import sample_stores  # noqa: F401

pytestmark = pytest.mark.timeout(900)

WORDS = "kettle boils water fast quiet lid handle steel cheap great broke after week love".split()


@pytest.fixture(scope="module")
def big_manifest(tmp_path_factory) -> Path:
    """24 000 reviews of 60 words: a few seconds of tokenizing, time to press Ctrl-C."""
    from mrhp_prep.data.ingest import ingest
    from release_files import SPLITS, product, relation, review, write_release

    rng = random.Random(0)
    tables = {}
    for s, split in enumerate(SPLITS):
        products, reviews, relations = [], [], []
        for p in range(2):
            pid = f"P{s}{p}"
            products.append(product(pid))
            for r in range(4000):
                text = " ".join(rng.choice(WORDS) for _ in range(60)) + "."
                reviews.append(review(pid, r, content=text))
                relations.append(relation(pid, r, votes=r % 5))
        tables["prd", split], tables["rvw", split], tables["rel", split] = \
            products, reviews, relations
    root = tmp_path_factory.mktemp("big")
    raw = write_release(root / "raw", tables)
    return ingest(raw, dataset="amazon", category="electronics", out=root / "manifest").path


def _one_interrupt_line(stderr: str) -> None:
    assert "Traceback" not in stderr and "Aborted!" not in stderr, stderr[-3000:]
    said = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(said) == 1, stderr[-3000:]
    assert "rerun" in said[0] and "to resume" in said[0], said


def _stopped_with_ctrl_c(run: RunningCli, progress_line: str, done: int) -> str:
    """Press Ctrl-C once `progress_line` is logged with at least `done` items; checks exit
    130, the one line, and that every worker process ended with the run."""
    run.wait_for(progress_line, at_least=done)
    workers = children_of(run.process.pid)
    run.interrupt()
    code, stderr = run.finish()
    assert code == 130, stderr[-3000:]
    _one_interrupt_line(stderr)
    assert not [pid for pid in workers if alive(pid)], "worker processes outlived the run"
    return stderr


def _extract_with_workers(tmp_path) -> list[str]:
    """extract-rois over twelve photographs, one part per image, two decoding workers."""
    for folder in ("a", "b"):
        write_photos(tmp_path / "photos", names=("astronaut", "coffee", "chelsea", "rocket",
                                                 "camera", "motorcycle"), subfolder=folder)
    return ["extract-rois", "--images", str(tmp_path / "photos"), "--out", str(tmp_path / "out"),
            "--device", "cpu", "--part-size", "1", *tiny(**FAST, workers=2)]


@pytest.mark.slow
def test_ctrl_c_on_extract_rois_with_workers(tmp_path):
    from mrhp_prep.vision.store import RoiStore

    argv = _extract_with_workers(tmp_path)
    run = RunningCli(argv)
    _stopped_with_ctrl_c(run, "extract-rois: ", 3)     # two parts written by then
    again = run_cli(argv)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming: " in again.stderr
    with RoiStore(tmp_path / "out") as store:
        assert len(store.image_ids) == len(set(store.image_ids)) == 12


@pytest.mark.slow
def test_ctrl_c_on_embed_text_with_workers(big_manifest, tmp_path):
    out = tmp_path / "text"
    argv = ["embed-text", "--manifest", str(big_manifest), "--vectors", "glove-6b-50d-package",
            "--min-freq", "1", "--workers", "2", "--rows-per-shard", "2000", "--out", str(out)]
    run = RunningCli(argv)
    _stopped_with_ctrl_c(run, "review shards: ", 6000)     # two shards done
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("review-*.arrow")
            if (out / ".progress" / f"{p.name}.json").is_file()}
    assert kept, "no shard was finished before Ctrl-C"
    again = run_cli(argv)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    fields = json.loads((out / "MANIFEST.json").read_text())["fields"]
    assert fields["review"]["rows"] == 24000 and fields["product"]["rows"] == 6


@pytest.mark.slow
def test_a_second_identical_run_is_refused_while_the_first_computes(big_manifest, tmp_path,
                                                                      runner):
    """embed-text and probe-masks; probe-masks is then stopped with Ctrl-C (its workers
    hold whole parts: they must not be waited for)."""
    for argv, progress_line in (
            (["embed-text", "--manifest", str(big_manifest), "--vectors",
              "glove-6b-50d-package", "--min-freq", "1", "--workers", "1",
              "--rows-per-shard", "2000", "--out", str(tmp_path / "text")],
             "vocabulary (product)"),      # the first line: the whole run still to come
            (["probe-masks", "--manifest", str(big_manifest), "--workers", "2",
              "--part-size", "500", "--out", str(tmp_path / "probes")], "probe-masks: ")):
        out = Path(argv[-1])
        first = RunningCli(argv)
        first.wait_for(progress_line)
        for extra in ([], ["--force"]):
            second = runner.invoke(cli, argv + extra)
            assert second.exit_code == 3, second.output
            assert f"is computing into {out} right now" in second.output
            assert f"process {first.process.pid}" in second.output
        assert (out / ".stage.json").is_file()          # --force cleared nothing
        if argv[0] == "embed-text":
            code, stderr = first.finish()
            assert code == 0, stderr[-3000:]
            assert runner.invoke(cli, argv).exit_code == 0      # free again: reused
        else:
            first.interrupt()
            code, stderr = first.finish(timeout=120)
            assert code == 130, stderr[-3000:]
            _one_interrupt_line(stderr)


@pytest.mark.slow
def test_train_refuses_a_second_run_and_resumes_after_ctrl_c(stores, tmp_path, runner):
    argv = ["train", *[x for role in ("manifest", "rois", "text", "probes")
                       for x in (f"--{role}", str(stores[role]))],
            "--device", "cpu", "--num-workers", "2", "--set", "train.epochs=8",
            "--set", "model.text_hidden=16", "--out", str(tmp_path / "run")]
    first = RunningCli(argv)
    first.wait_for("epoch 1/8")
    second = runner.invoke(cli, argv + ["--force"])
    assert second.exit_code == 3 and "is computing into" in second.output, second.output
    first.wait_for("epoch 2/8")
    first.interrupt()
    code, stderr = first.finish()
    assert code == 130, stderr[-3000:]
    _one_interrupt_line(stderr)
    again = run_cli(argv)
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 8


@pytest.mark.slow
def test_kill_9_with_forked_workers_alive_lets_the_rerun_resume_at_once(tmp_path):
    from mrhp_prep.vision.store import RoiStore

    argv = _extract_with_workers(tmp_path)
    run = RunningCli(argv)
    run.wait_for("extract-rois: ", at_least=2)
    workers = children_of(run.process.pid)
    assert workers, "the run has no worker processes"
    run.kill()
    run.finish()
    again = run_cli(argv)                  # at once: the orphaned workers may still live
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming: " in again.stderr
    with RoiStore(tmp_path / "out") as store:
        assert len(store.image_ids) == len(set(store.image_ids)) == 12


def test_forked_children_do_not_keep_a_folder_lock(tmp_path):
    """A process takes a folder lock (and, as a control, a plain flock), forks a child that
    lives on, and is killed with SIGKILL: the folder is free at once while the child lives;
    the plain flock, inherited by the child, is not."""
    script = textwrap.dedent(f"""
        import fcntl, multiprocessing, os, sys, time
        from mrhp_prep.locks import FolderLock

        def child(ready):
            ready.set()
            time.sleep(120)

        lock = FolderLock({str(tmp_path)!r}).acquire()
        plain = open({str(tmp_path / "plain.lock")!r}, "w")
        fcntl.flock(plain, fcntl.LOCK_EX | fcntl.LOCK_NB)
        ready = multiprocessing.get_context("fork").Event()
        worker = multiprocessing.get_context("fork").Process(target=child, args=(ready,))
        worker.start()
        ready.wait()
        print(worker.pid, flush=True)
        time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], env=cli_env(), text=True,
                               stdout=subprocess.PIPE)
    child = int(process.stdout.readline())
    try:
        process.kill()
        process.wait()
        assert alive(child)
        from mrhp_prep.locks import FolderLock

        FolderLock(tmp_path).acquire().release()          # free although the child lives
        import fcntl

        with open(tmp_path / "plain.lock", "w") as plain:  # the control: held by the child
            with pytest.raises(BlockingIOError):
                fcntl.flock(plain, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.kill(child, 9)


def test_a_forked_worker_stays_silent_when_the_main_process_hangs_up_on_it():
    """A worker's thread that hands file descriptors to the main process reports a broken
    connection through sys.excepthook: after `quiet_workers_on_interrupt`, a forked child keeps
    such a hang-up (EOFError, ConnectionError) off stderr, and still prints any other error."""
    script = textwrap.dedent("""
        import os, sys
        from mrhp_prep.workers import quiet_workers_on_interrupt

        quiet_workers_on_interrupt()
        pid = os.fork()
        if pid == 0:
            for error in (EOFError("peer gone"), ConnectionResetError("reset by peer"),
                          ValueError("a real bug")):
                sys.excepthook(type(error), error, None)
            os._exit(0)
        os.waitpid(pid, 0)
        sys.excepthook(EOFError, EOFError("the main process itself"), None)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=cli_env(), text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "a real bug" in result.stderr
    assert "peer gone" not in result.stderr and "reset by peer" not in result.stderr
    assert "the main process itself" in result.stderr     # only forked children are quieted
