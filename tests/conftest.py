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
