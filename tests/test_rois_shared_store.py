"""One RoI store serves the raw and the graded manifest of a dataset: the graded one keeps a
subset of the reviews, under the same image ids and paths, and training joins by image id."""

from __future__ import annotations

import numpy as np

from feature_stores import write_roi_store
from mrhp_prep.data.ingest import ingest
from mrhp_prep.data.manifest import Manifest
from mrhp_prep.data.sample import SAMPLE_RAW
from mrhp_prep.train.data.dataset import FeatureSources


def test_store_of_the_raw_manifest_serves_the_graded_one(tmp_path):
    raw = ingest(SAMPLE_RAW, dataset="amazon", category="home", labels="raw", name="raw",
                 cache_dir=tmp_path / "cache").path
    graded = ingest(SAMPLE_RAW, dataset="amazon", category="home", labels="graded",
                    name="graded", cache_dir=tmp_path / "cache").path
    raw_images, graded_images = Manifest(raw).images, Manifest(graded).images
    assert len(Manifest(graded).reviews) < len(Manifest(raw).reviews)   # 0-vote rows dropped
    raw_paths = dict(zip(raw_images["image_id"], raw_images["path"]))
    assert len(graded_images) > 0
    for image_id, path in zip(graded_images["image_id"], graded_images["path"]):
        assert raw_paths[image_id] == path

    store = write_roi_store(tmp_path / "rois", raw)                  # made for the raw one
    sources = FeatureSources(graded, rois=store)
    assert sources.images_missing == 0
    with_images = {i for ids in sources.item_images.values() for i in ids}
    assert with_images == set(graded_images["image_id"])
    one = graded_images["image_id"].iloc[0]
    assert np.array_equal(sources.rois.features(one), FeatureSources(raw, rois=store)
                          .rois.features(one))
