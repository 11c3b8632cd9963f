"""Why an image's regions cannot be stored: no region, NaN or inf, or features beyond float16.

Every region stage (extract-rois, import-rois) asks `storage_check` before it stores an image,
and stores the features it returns (already cast to the storage dtype); an image with a problem
is a listed failure (failures.jsonl: the image, a `reason` and a `detail` saying the cause and
what to do), never a row of the store. A store row with no region, or with values the trainer
cannot use, would otherwise count as a covered image.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Storable(NamedTuple):
    """The verdict on one image's regions: `problem` (reason, detail) when they cannot be
    stored, else `features` [n, D] in the storage dtype, ready to store."""

    problem: tuple[str, str] | None
    features: np.ndarray | None = None


def _non_finite(arrays: dict[str, np.ndarray]) -> list[str]:
    return [name for name, values in arrays.items() if not np.isfinite(values).all()]


def storage_check(features: np.ndarray, others: dict[str, np.ndarray], feature_dtype,
                  source: str) -> Storable:
    """Whether the regions of one image can be stored, and their features cast for it.

    `features` [n, D] as computed (before the cast to the storage dtype `feature_dtype`);
    `others` the per-region arrays besides them by name (boxes [n, 4], confidences [n]);
    `source` says where the values came from, for the detail ("the detector", "the file").
    """
    if features.shape[0] == 0:
        return Storable(("no-regions", f"{source} gave no region for this image"))
    bad = _non_finite({"features": features, **others})
    if bad:
        return Storable(("non-finite", f"{source} gave NaN or infinite {', '.join(bad)}"))
    with np.errstate(over="ignore"):      # the overflow is what is looked for
        stored = features.astype(feature_dtype, copy=False)
    # A cast to a narrower type can overflow to inf; no cast (the same dtype) cannot.
    if stored is not features and not np.isfinite(stored).all():
        largest = float(np.abs(features).max())
        return Storable((f"{np.dtype(feature_dtype).name}-overflow", (
            f"its features reach {largest:.6g}, beyond {np.dtype(feature_dtype).name}'s largest "
            f"value {float(np.finfo(feature_dtype).max):g}, so they would be stored as inf: "
            f"store them with --dtype float32, or check where such large values come from")))
    return Storable(None, stored)
