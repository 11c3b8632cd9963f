"""The README's first command: the bundled sample, every stage, through the console script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import pandas as pd
import pytest



@pytest.mark.slow
def test_sample_pipeline_runs_end_to_end_and_reuses_its_cache(sample_pipeline):
    command, first = sample_pipeline["command"], sample_pipeline["result"]
    assert first.returncode == 0, first.stderr[-3000:]

    stages = sample_pipeline["stages"]
    assert set(stages) == {"ingest", "extract-rois", "embed-text", "probe-masks", "train"}
    manifest = stages["ingest"]
    images = pd.read_parquet(manifest / "images.parquet")
    with h5py.File(stages["extract-rois"] / "rois.h5") as store:
        assert set(store["image_id"].asstr()[:]) == set(images["image_id"])
        assert store["features"].shape[1] == 2048
    from mrhp_prep.train.data.stores import open_rois

    with open_rois(stages["extract-rois"]) as rois:    # what training reads: a memory map
        assert rois.memory_mapped
    metrics = json.loads((stages["train"] / "metrics.json").read_text())
    assert {"dev", "test"} <= set(metrics)
    assert (stages["train"] / "curves.png").stat().st_size > 1000
    last_line = first.stdout.strip().splitlines()[-1]
    assert Path(last_line) == stages["train"] / "predictions-test.jsonl"
    scored = [json.loads(line) for line in Path(last_line).read_text().splitlines()]
    reviews = pd.read_parquet(manifest / "reviews.parquet")
    test_reviews = set(reviews.loc[reviews.split == "test", "review_id"])
    assert {row["review_id"] for row in scored} == test_reviews

    stamps = {name: (path / "MANIFEST.json").stat().st_mtime_ns for name, path in stages.items()}
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert stamps == {name: (path / "MANIFEST.json").stat().st_mtime_ns
                      for name, path in stages.items()}
