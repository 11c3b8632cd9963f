"""The three feature stores the trainer joins by id, each opened by its stage's own reader.

- RoI features: `vision/store.py`'s `RoiStore` (an extract-rois, merge-rois or import-rois
  folder; `features` memory-mapped when stored in one block, as this version writes them);
- text: `text/store.py`'s `TextShards`, one field ("product" or "review");
- probe masks: `probe/shards.py`'s `ProbeShards`.

Each reader checks its folder's files against the sizes and SHA-256 digests its MANIFEST.json
records before anything is read (`verify.py`), and reopens itself in a new process
(DataLoader workers). Here only what training computes from them: the token probe mask.
"""

from __future__ import annotations

import os

import numpy as np

from ...probe.shards import ProbeShards
from ...text.store import TextShards
from ...vision.store import RoiStore

__all__ = ["ProbeShards", "RoiStore", "TextShards", "open_rois", "text_mode", "token_probe_mask"]


def text_mode(text: str | os.PathLike) -> str:
    """The mode ("static", "ids", "features") of an embed-text output."""
    return TextShards(text, "review").mode


def open_rois(path: str | os.PathLike) -> RoiStore:
    """The RoI store of a finished RoI stage folder, checked."""
    return RoiStore.of_stage(path)


def token_probe_mask(token_start: np.ndarray, token_end: np.ndarray, span_starts: np.ndarray,
                     span_ends: np.ndarray) -> np.ndarray:
    """[L] float32: 1 where a token overlaps a marked sentence [start, end), else 0.

    Tokens without characters (special tokens with start == end) are never marked.
    """
    if len(span_starts) == 0 or len(token_start) == 0:
        return np.zeros(len(token_start), dtype=np.float32)
    ts, te = token_start[:, None], token_end[:, None]
    overlap = (ts < span_ends[None, :]) & (te > span_starts[None, :]) & (te > ts)
    return overlap.any(axis=1).astype(np.float32)
