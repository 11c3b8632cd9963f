"""Bad training inputs beside the table corpus (test_bad_inputs_train.py): partial stores a run
was told to accept, refusals of predict, strict JSON of a finished run, the console script,
rows named across record batches, an error raised inside a dataloader worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bad_train_inputs import (GOOD_ROWS, copy_store, finished_train_runs, image_ids_of, jsonl,
                              nan_rois, partial_probes, partial_rois, read_shard, rewrite_shard,
                              train_args)
from mrhp_prep.cli import cli
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
