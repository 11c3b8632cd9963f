"""The regions of one image a view shows: the most confident first, with their labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..vision.store import RoiStore
from .class_names import ClassNames


@dataclass
class TopRegions:
    """The `k` most confident regions of an image (by object confidence; equal ones in stored
    order): boxes [k, 4] in original pixels, labels [k], and how many the store holds."""

    image_id: str
    height: int
    width: int
    boxes: np.ndarray
    labels: list[str]
    stored: int


def top_regions(store: RoiStore, names: ClassNames, image_id: str, k: int) -> TopRegions:
    """Raises KeyError when the store has no regions for `image_id`."""
    data = store.image(image_id)
    order = np.argsort(-data["object_conf"].astype(np.float64), kind="stable")[:max(k, 0)]
    labels = [names.label(data["object_id"][i], data["attr_id"][i], data["object_conf"][i])
              for i in order]
    return TopRegions(image_id, int(data["image_h"]), int(data["image_w"]),
                      np.asarray(data["boxes"][order], dtype=np.float32), labels,
                      len(data["object_id"]))
