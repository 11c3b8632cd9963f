"""Bad training inputs beside the table corpus (test_bad_inputs_train.py): partial stores a run
was told to accept, refusals of predict (its own small table), strict JSON of a finished run,
the console script, rows named across record batches, an error raised inside a dataloader
worker, compare of runs on two manifests, and reruns after a refusal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bad_input_table import assert_plain_numbers
from bad_train_inputs import (GOOD_ROWS, copy_store, finished_train_runs, image_ids_of, jsonl,
                              nan_rois, one_label_stores, partial_probes, partial_rois,
                              read_shard, renamed_text_store, rewrite_shard, train_args)
from feature_stores import stores_for, write_roi_store
from mrhp_prep.cli import cli
from mrhp_prep.errors import InputError
from train_fixtures import one_torch_thread, sample_stores  # noqa: F401


# -- listed skips: partial stores the run was told to accept, failures their stage listed ------
def _coverage_of(output: str) -> dict:
    run = Path(output.strip().splitlines()[-1])
    return json.loads((run / "MANIFEST.json").read_text())["counts"]["coverage"]


def test_allow_partial_trains_and_reports_the_coverage(stores, tmp_path):
    args = partial_probes(stores, tmp_path) + ["--allow-partial"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "probes coverage" in result.output and "21 of 43 reviews (48.8%)" in result.output
    coverage = _coverage_of(result.stdout)
    assert coverage["probes"]["missing"] == 22 and coverage["probes"]["share"] < 0.5
    assert coverage["text"]["share"] == 1.0 and coverage["rois"]["missing"] == 0
    # predict on the run's own stores accepts them as the run did, without --allow-partial
    run = result.stdout.strip().splitlines()[-1]
    predicted = CliRunner().invoke(cli, ["predict", "--run", run, "--split", "test",
                                         "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    assert "probes coverage" in predicted.output
    assert Path(predicted.stdout.strip().splitlines()[-1]).is_file()
    # the same partial store in another folder is not the run's own: refused unless allowed
    other = copy_store(tmp_path / "probes", tmp_path / "other-probes")
    refused = CliRunner().invoke(cli, ["predict", "--run", run, "--split", "test", "--device",
                                       "cpu", "--probes", str(other)])
    assert refused.exit_code == 3 and "--allow-partial" in refused.output, refused.output


def test_images_the_rois_stage_listed_as_failed_are_a_skip_not_an_error(stores, tmp_path):
    skipped = sorted(image_ids_of(stores["manifest"], "train", "review"))
    args = partial_rois(stores, tmp_path)
    with open(tmp_path / "rois" / "failures.jsonl", "a", encoding="utf-8") as handle:
        for image_id in skipped:
            handle.write(json.dumps({"item": image_id, "reason": "cannot decode"}) + "\n")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert f"rois coverage {23 - len(skipped)} of 23 images" in flat
    assert f"{len(skipped)} listed as failed" in flat
    assert _coverage_of(result.stdout)["rois"]["listed"] == len(skipped)


# -- predict ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(stores, tmp_path_factory):
    """A finished one-epoch sancl run of the sample."""
    result = CliRunner().invoke(cli, train_args(stores, tmp_path_factory.mktemp("tiny")))
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def test_a_finished_run_writes_strict_json(tiny_run):
    def refuse(token):
        raise AssertionError(f"{token} in strict JSON")

    metrics = json.loads((tiny_run / "metrics.json").read_text(), parse_constant=refuse)
    assert all(np.isfinite(metrics["dev"][m]) for m in ("map", "ndcg@3", "ndcg@5", "mrr"))
    for line in (tiny_run / "predictions-test.jsonl").read_text().splitlines():
        assert np.isfinite(json.loads(line, parse_constant=refuse)["score"])


def _predict_args(run: Path, tmp: Path, *extra: str) -> list[str]:
    return ["predict", "--run", str(run), "--device", "cpu", "--output", str(tmp / "out.jsonl"),
            *extra]


def _rois_of_no_image(stores, tmp):
    every = image_ids_of(stores["manifest"], "train") | image_ids_of(stores["manifest"], "dev") \
        | image_ids_of(stores["manifest"], "test")
    every |= {i for s in ("train", "dev", "test")
              for i in image_ids_of(stores["manifest"], s, "review")}
    return ["--rois", str(write_roi_store(tmp / "rois", stores["manifest"], dim=8,
                                          skip=sorted(every)))]


PREDICT_CASES = {   # name: (extra arguments, words the refusal must hold, words it must not)
    "a RoI store of none of the images": (
        lambda stores, tmp: [*_rois_of_no_image(stores, tmp), "--split", "test"],
        ("rois store covers 0 of", "images", "--allow-partial"), ()),
    "a text store of other data": (
        lambda stores, tmp: ["--text", str(renamed_text_store(stores, tmp)), "--split", "test"],
        ("text store covers 0 of", "--allow-partial"), ()),
    "--split, nothing left to score": (
        lambda stores, tmp: ["--text", str(renamed_text_store(stores, tmp)), "--split", "test",
                             "--allow-partial"],
        ("'--split'", "split test: none of its", "review text missing"), ("--product",)),
    "--product, nothing left to score": (
        lambda stores, tmp: ["--text", str(renamed_text_store(stores, tmp)), "--product",
                             "B00SAMP007", "--allow-partial"],
        ("'--product'", "B00SAMP007: none of its"), ("--split",)),
}


@pytest.mark.parametrize("name", list(PREDICT_CASES))
def test_predict_refuses_stores_that_do_not_cover_the_reviews(name, tiny_run, stores, tmp_path):
    build, words, absent = PREDICT_CASES[name]
    result = CliRunner().invoke(cli, _predict_args(tiny_run, tmp_path,
                                                   *build(stores, tmp_path)))
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert_plain_numbers(result.output)
    flat = " ".join(result.output.split())
    for word in words:
        assert word in flat, (word, result.output)
    for word in absent:
        assert word not in flat, (word, result.output)
    assert not (tmp_path / "out.jsonl").exists()


def test_predict_allow_partial_ranks_and_reports_the_coverage(tiny_run, stores, tmp_path):
    args = _predict_args(tiny_run, tmp_path, *_rois_of_no_image(stores, tmp_path), "--split",
                         "test", "--allow-partial")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    test_images = image_ids_of(stores["manifest"], "test") | image_ids_of(
        stores["manifest"], "test", "review")
    flat = " ".join(result.output.split())
    assert f"rois coverage 0 of {len(test_images)} images (0.0%)" in flat
    assert (tmp_path / "out.jsonl").is_file()


def test_predict_refuses_product_with_split(tiny_run):
    result = CliRunner().invoke(cli, ["predict", "--run", str(tiny_run), "--product",
                                      "B00SAMP007", "--split", "test", "--device", "cpu"])
    assert result.exit_code == 2 and "not both" in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_predict_refuses_a_checkpoint_of_another_model(tiny_run, stores, tmp_path):
    import torch

    from mrhp_prep.train.loop import checkpoints
    from mrhp_prep.train.settings.config import resolve_config
    from mrhp_prep.train.data.dataset import FeatureSources
    from mrhp_prep.train.models import build_model

    run = copy_store(tiny_run, tmp_path / "run")
    sources = FeatureSources(stores["manifest"], rois=stores["rois"], text=stores["text"])
    config = resolve_config("mcl", overrides=["model.hidden_dim=8"], relevance_threshold=1)
    torch.manual_seed(0)
    other = build_model("mcl", config["model"], sources.model_inputs())
    checkpoints.save(run / "checkpoints" / "mcl.pt", {"model": checkpoints.model_state(other)})
    result = CliRunner().invoke(cli, ["predict", "--run", str(run), "--checkpoint", "mcl",
                                      "--split", "test", "--device", "cpu",
                                      "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 3, result.output
    assert "mcl.pt" in result.output and "does not fit the run's sancl model" in result.output
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow
def test_the_console_script_prints_no_traceback(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "p.jsonl"
    path.write_text(jsonl(GOOD_ROWS + [GOOD_ROWS[0]]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "mrhp_prep", "evaluate", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert "'R0'" in done.stderr and "more than once" in done.stderr


def test_shard_rows_count_from_the_start_of_the_file(stores, tmp_path):
    """A damaged row in the second record batch of a shard is named by its row in the file."""
    text = copy_store(stores["text"], tmp_path / "text")
    shard = text / "review-00000.arrow"
    rows = read_shard(shard).num_rows
    bad_id = read_shard(shard).column("id")[rows - 1].as_py()
    rewrite_shard(shard, "token_ids", lambda ids: ids[:-1] + [10**6], row=rows - 1,
                  batch_rows=rows // 2)
    result = CliRunner().invoke(cli, train_args(stores, tmp_path, text=text))
    assert result.exit_code == 3, result.output
    assert f"row {rows - 1} (id {bad_id})" in result.output


def test_predict_refuses_a_damaged_checkpoint(tiny_run, tmp_path):
    run = copy_store(tiny_run, tmp_path / "run")
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    result = CliRunner().invoke(cli, ["predict", "--run", str(run), "--split", "test",
                                      "--device", "cpu", "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 3 and "cannot read the checkpoint" in result.output
    assert "damaged or truncated" in result.output
    assert "weights_only" not in result.output      # never torch's advice to turn it off
    assert "Traceback" not in result.output and not (tmp_path / "o.jsonl").exists()


def test_a_nan_read_by_a_dataloader_worker_is_named_too(stores, tmp_path):
    """The check runs in the main process on the collated batch, so worker processes do not
    turn the error into a wrapped traceback."""
    args = nan_rois("train")(stores, tmp_path)
    args[args.index("--num-workers") + 1] = "2"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output and "rois.h5" in result.output
    assert "'features'" in result.output and not finished_train_runs(tmp_path)


# -- reruns after a refusal, and runs that must not be paired ------------------------------------
def test_compare_keeps_runs_of_two_manifests_apart(tiny_run, sample_manifest, tmp_path):
    """The sample ingested with raw labels is another manifest of the same products: pairing
    its runs with the graded ones would compare rankings against other labels."""
    from mrhp_prep.data.ingest import ingest
    from mrhp_prep.data.sample import SAMPLE_RAW

    raw = ingest(SAMPLE_RAW, dataset="amazon", category="home", labels="raw", name="sample",
                 cache_dir=tmp_path / "in").path
    other = stores_for(raw, tmp_path / "stores", text_dim=8, roi_dim=8)
    trained = CliRunner().invoke(cli, train_args(other, tmp_path))
    assert trained.exit_code == 0, trained.output
    other_run = Path(trained.stdout.strip().splitlines()[-1])
    result = CliRunner().invoke(cli, ["compare", str(tiny_run), str(other_run), "--out",
                                      str(tmp_path / "compare")])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "kept apart (other manifests)" in flat
    assert str(tiny_run) in flat and str(other_run) in flat
    tests = (tmp_path / "compare" / "compare-tests.csv").read_text().splitlines()
    assert tests == [tests[0]], "no test pairs runs of two manifests"
    assert "Not paired: made on different manifests" in (
        tmp_path / "compare" / "compare.md").read_text()


def test_the_one_label_refusal_leaves_no_folder_and_the_suggested_rerun_trains(tmp_path):
    from mrhp_prep.data.ingest import ingest

    graded = one_label_stores(tmp_path, "graded")
    refused = CliRunner().invoke(cli, train_args(graded, tmp_path) + ["--out",
                                                                      str(tmp_path / "run")])
    assert refused.exit_code == 3 and "--labels raw" in refused.output, refused.output
    assert not (tmp_path / "run").exists()
    # the suggested scheme: the same release ingested with --labels raw, into the same --out
    raw_manifest = ingest(tmp_path / "raw", dataset="amazon", category="electronics",
                          labels="raw", cache_dir=tmp_path / "in").path
    rerun = CliRunner().invoke(cli, train_args({**graded, "manifest": raw_manifest}, tmp_path)
                               + ["--out", str(tmp_path / "run")])
    assert rerun.exit_code == 0, rerun.output
    assert (tmp_path / "run" / "MANIFEST.json").is_file()


def test_a_refused_run_writes_nothing_and_keeps_the_out_folder_the_user_made(tmp_path):
    """Bad data is refused before the run folder is made: no cache entry, and an empty --out
    folder made beforehand is left as it was (neither written into nor removed). `--dry-run`
    runs the same checks and refuses the same way."""
    graded = one_label_stores(tmp_path, "graded")
    out = tmp_path / "mine"
    out.mkdir()
    for extra in (["--out", str(out)], [], ["--dry-run"]):
        refused = CliRunner().invoke(cli, train_args(graded, tmp_path) + extra)
        assert refused.exit_code == 3 and "--labels raw" in refused.output, refused.output
        assert out.is_dir() and not any(out.iterdir())
        assert not (tmp_path / "cache").exists()


def test_a_python_caller_refused_mid_run_gets_the_folder_lock_back(stores, tmp_path):
    """A refusal after the first checkpoint keeps the folder to resume; the lock is released
    when train() raises, so the caller can run it again in the same process (and the error,
    kept alive by the caller, does not hold the folder)."""
    from mrhp_prep.train.run import train

    from bad_train_inputs import SMALL

    argv = nan_rois("dev")(stores, tmp_path)        # NaN features in a dev product's image
    rois = argv[argv.index("--rois") + 1]
    args = dict(manifest=stores["manifest"], rois=rois, text=stores["text"],
                probes=stores["probes"], overrides=[*SMALL, "train.checkpoint_every_steps=1"],
                device="cpu", out=tmp_path / "run", show_progress=False)
    errors = []
    for _ in range(2):
        with pytest.raises(InputError) as refused:
            train(**args)
        errors.append(refused)                       # keep each error (and its traceback)
        assert "NaN" in str(refused.value) and "another run" not in str(refused.value)
        assert any((tmp_path / "run" / "checkpoints").glob("*.pt"))


def test_resume_names_the_input_ingested_again_and_a_new_run_trains(tmp_path):
    import shutil
    import time

    from mrhp_prep.data.ingest import ingest
    from mrhp_prep.data.sample import SAMPLE_RAW

    raw = Path(shutil.copytree(SAMPLE_RAW, tmp_path / "raw"))

    def ingest_into(folder, force=False):
        return ingest(raw, dataset="amazon", category="home", labels="graded", name="sample",
                      out=folder, force=force).path

    manifest = ingest_into(tmp_path / "manifest")
    stores = stores_for(manifest, tmp_path / "stores", text_dim=8, roi_dim=8)
    first = CliRunner().invoke(cli, train_args(stores, tmp_path) + ["--out",
                                                                    str(tmp_path / "run")])
    assert first.exit_code == 0, first.output
    (tmp_path / "run" / "MANIFEST.json").unlink()     # killed before it finished
    time.sleep(0.01)
    for path in raw.iterdir():                         # the release edited, ingested again
        path.touch()
    ingest_into(tmp_path / "manifest", force=True)
    resumed = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "run")])
    assert resumed.exit_code == 3, resumed.output
    flat = " ".join(resumed.output.split())
    assert "cannot resume" in flat and "input manifest was " in flat and ", now " in flat
    assert "input rois" not in flat and "input text" not in flat     # only what changed
    again = CliRunner().invoke(cli, train_args(stores, tmp_path))
    assert again.exit_code == 0, again.output
