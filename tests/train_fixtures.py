"""Fixtures and helpers shared by the training and model tests.

A test module takes the fixtures by importing them (pytest finds fixtures in a module's
namespace):

    from train_fixtures import one_torch_thread, sample_stores  # noqa: F401

`one_torch_thread` is autouse, so importing it is enough to run the module on one thread;
`sample_stores` provides the fixture named `stores`.
"""

from __future__ import annotations

import contextlib
from typing import Mapping

import pytest
import torch

from feature_stores import stores_for
from mrhp_prep.train.settings.config import resolve_config
from mrhp_prep.train.data.dataset import DataConfig, FeatureSources, ReviewDataset
from mrhp_prep.train.models import build_model
from mrhp_prep.train.loop.trainer import Trainer


@contextlib.contextmanager
def single_thread():
    """Torch on one thread: tiny models run much faster than with threads spinning on a busy
    2-core machine. Restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module", name="stores")
def sample_stores(sample_manifest, tmp_path_factory):
    """Text (static, 8-d), RoI (8-d) and probe stores of the bundled sample:
    {manifest, text, rois, probes}."""
    return stores_for(sample_manifest, tmp_path_factory.mktemp("stores"), text_dim=8, roi_dim=8)


class Crash(Exception):
    """Raised by a `crashing_after` dataset to stand in for a killed process."""


def crashing_after(rows: int) -> type:
    """A `ReviewDataset` wrapper class that raises `Crash` once more than `rows` rows have been
    read (counted over all its instances), so a training run stops mid-epoch."""

    class Crashing(ReviewDataset):
        count = 0

        def __init__(self, inner: ReviewDataset):
            super().__init__(inner.sources, inner.table, inner.config)

        def __getitems__(self, indices):
            Crashing.count += len(indices)
            if Crashing.count > rows:
                raise Crash("killed")
            return super().__getitems__(indices)

    return Crashing


def make_trainer(sources: FeatureSources, model: str, run_dir, overrides=(),
                 dataset_wrapper: type | None = None, seed: int = 0,
                 preset: str = "none") -> Trainer:
    """A CPU Trainer for `model` on the sources' train and dev splits (Amazon threshold 1).

    `seed` seeds the model's initial weights; `dataset_wrapper` (e.g. `crashing_after(n)`)
    wraps the training set; `preset` names a column of the model's presets."""
    config = resolve_config(model, overrides=list(overrides), relevance_threshold=1,
                            preset=preset, text_mode=sources.text_mode)
    torch.manual_seed(seed)
    built = build_model(model, config["model"], sources.model_inputs())
    data = DataConfig.from_config(config["data"])
    train_set = ReviewDataset(sources, sources.split("train"), data)
    if dataset_wrapper is not None:
        train_set = dataset_wrapper(train_set)
    torch.manual_seed(config["train"]["seed"])
    return Trainer(built, train_set, ReviewDataset(sources, sources.split("dev"), data), config,
                   run_dir, device=torch.device("cpu"), relevance_threshold=1, show_progress=False)


def comparable(history: list[dict]) -> list[dict]:
    """Epoch records without their timings, which differ from run to run."""
    return [{k: v for k, v in r.items() if k not in {"seconds", "data_share"}} for r in history]


def widest_sum(config: Mapping, *input_dims: int) -> int:
    """The widest sum a training config's model takes, for tolerances.network_rtol: the
    largest of its widths (hidden sizes, feed-forward and task dims, which the next layer
    sums over), the data's longest sequences (tokens, image rows: attention and pooling sum
    over them) and `input_dims` (the stores' text and RoI widths, a transformer's own)."""
    widths = [value for key, value in config["model"].items()
              if isinstance(value, int) and not isinstance(value, bool)
              and (key.endswith("dim") or "hidden" in key)]
    data = config["data"]
    return max([*widths, int(data["max_text_tokens"]), int(data["max_image_rows"]),
                *input_dims])
