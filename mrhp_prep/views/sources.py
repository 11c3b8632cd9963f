"""Where a view finds what it shows: the manifest and the images a RoI store was made from,
the photos of a product or a review, and each photo's file.

A finished stage folder records where its inputs were (`input_paths` in MANIFEST.json, see
`cache.recorded_input`); a merged store follows its first shard.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import MANIFEST_NAME, read_manifest, recorded_input
from ..data.manifest import Manifest
from ..errors import InputError
from ..vision.decode import ImageError, decode_image


@dataclass
class StoreInputs:
    """The manifest and images folder a RoI store was made from (None: not recorded)."""

    manifest: Path | None = None
    images_root: Path | None = None


def store_inputs(rois: str | Path) -> StoreInputs:
    """What the RoI store at `rois` (an output folder or its rois.h5) recorded of its inputs:
    extract-rois records --manifest and --images-root (or --images), import-rois --manifest,
    merge-rois its shards (the first shard's are taken)."""
    path = Path(rois)
    folder = path if path.is_dir() else path.parent
    if not (folder / MANIFEST_NAME).is_file():
        return StoreInputs()
    if read_manifest(folder).get("stage") == "merge-rois":
        shard = recorded_input(folder, "shard0")
        return store_inputs(shard) if shard else StoreInputs()
    return StoreInputs(recorded_input(folder, "manifest"),
                       recorded_input(folder, "images_root") or recorded_input(folder, "images"))


def photos_of(manifest: Manifest, *, products: Iterable[str] = (),
              reviews: Iterable[str] = ()) -> list[str]:
    """Image ids of the products' and reviews' photos, item by item, each in its order (k).
    An id the manifest does not know is an InputError."""
    images = manifest.images
    wanted = [("prd", p, "products", manifest.products["product_id"]) for p in products]
    wanted += [("rvw", r, "reviews", manifest.reviews["review_id"]) for r in reviews]
    found = []
    for role, item, table, known in wanted:
        if not (known == item).any():
            raise InputError(f"{'product' if role == 'prd' else 'review'} {item!r} is not in "
                             "the manifest", file=str(manifest.table_path(table)),
                             hint="check the id, or pass the --manifest it belongs to")
        rows = images[(images["role"] == role) & (images["item_id"] == item)].sort_values("k")
        found.extend(rows["image_id"].tolist())
    return found


class ImageFiles:
    """The file of an image id: `root / <the manifest's path>` for a manifest's image,
    `root / <image id>` for a store made from a folder of images (--images)."""

    def __init__(self, root: str | Path | None, manifest: Manifest | None):
        self.root = Path(root) if root is not None else None
        self._paths = (dict(zip(manifest.images["image_id"], manifest.images["path"]))
                       if manifest is not None else {})

    def path(self, image_id: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / self._paths.get(image_id, image_id)

    def pixels(self, image_id: str, expected_size: tuple[int, int]) -> np.ndarray:
        """[H, W, 3] uint8 RGB as extract-rois decodes it (EXIF orientation applied).

        Raises ImageError ("missing", "corrupt", ..., or "changed" when the file's size is
        not the (height, width) the store recorded: its boxes would be misplaced)."""
        path = self.path(image_id)
        if path is None:
            raise ImageError("no-images-root", "the store does not record where its images "
                                               "are: pass --images-root")
        pixels = decode_image(path)
        height, width = pixels.shape[:2]
        if (height, width) != tuple(expected_size):
            raise ImageError("changed", f"{path} is {width}x{height} pixels but the store "
                                        f"recorded {expected_size[1]}x{expected_size[0]}: the "
                                        "file changed since the regions were extracted")
        return pixels
