"""Shared fixtures: the bundled sample ingested once per test session, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

# Tests never reach the network: any hub look-up must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def sample_manifest(tmp_path_factory) -> Path:
    """The bundled sample, ingested with graded labels (as pipelines/sample.yaml does)."""
    from mrhp_prep.data.ingest import ingest
    from mrhp_prep.data.sample import SAMPLE_RAW

    cache = tmp_path_factory.mktemp("cache")
    run = ingest(SAMPLE_RAW, dataset="amazon", category="home", labels="graded", name="sample",
                 cache_dir=cache)
    return run.path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def views_run(tmp_path_factory) -> dict:
    """A small finished training run with photos, regions and probe masks, for the views
    (see tests/views_support.py)."""
    from views_support import make_planted_run

    return make_planted_run(tmp_path_factory.mktemp("views"))


@pytest.fixture(scope="session")
def sample_pipeline(tmp_path_factory) -> dict:
    """`mrhp-prep run pipelines/sample.yaml` through the console script, once per session
    (about a minute on 2 cores: only slow tests use it): {command, result, stages}, stages
    mapping each stage name to its finished folder."""
    import subprocess
    import sys

    cache = tmp_path_factory.mktemp("sample-pipeline")
    script = Path(sys.executable).with_name("mrhp-prep")
    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "sample.yaml"
    command = [str(script), "run", str(pipeline), "--cache-dir", str(cache)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    stages = {p.parent.name: p for p in (cache / "sample").glob("*/*")
              if (p / "MANIFEST.json").is_file()}
    return {"command": command, "result": result, "stages": stages}
