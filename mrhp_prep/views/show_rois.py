"""`show-rois`: one image's stored regions drawn on the photograph, written as a PNG."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_path
from ..data.manifest import Manifest
from ..errors import InputError
from ..vision.decode import ImageError
from ..vision.store import RoiStore
from .class_names import ClassNames, names_for_store
from .draw import draw_regions, png_bytes
from .regions import top_regions
from .sources import ImageFiles, photos_of, store_inputs

log = logging.getLogger(__name__)


@dataclass
class ShowRoisResult:
    """The PNGs written, the images that could not be drawn (image_id, reason, detail), the
    names used and where the output went (a file for one image, else a folder)."""

    written: list[Path]
    names: ClassNames
    output: Path
    failures: list[dict] = field(default_factory=list)


def output_name(image_id: str) -> str:
    """"B00X/pic_0.jpg" -> "B00X_pic_0-rois.png"."""
    stem = image_id.rsplit(".", 1)[0] if "." in image_id.rsplit("/", 1)[-1] else image_id
    return stem.replace("/", "_").replace("\\", "_") + "-rois.png"


def show_rois(rois: str | Path, *, image_ids: Sequence[str] = (), products: Sequence[str] = (),
              reviews: Sequence[str] = (), manifest: str | Path | None = None,
              images_root: str | Path | None = None, top: int = 10,
              out: str | Path | None = None, naming: str = "auto",
              max_side: int | None = 1200) -> ShowRoisResult:
    """Draw the `top` most confident regions of each chosen image.

    The images are `image_ids` plus the photos of `products` and `reviews` (which need the
    manifest). The manifest and images root default to what the store recorded. `out`: a
    .png file for a single image, else a folder (default: the current one).
    """
    recorded = store_inputs(rois)
    manifest_path = manifest or recorded.manifest
    root = images_root or recorded.images_root
    loaded = Manifest(manifest_path) if manifest_path else None
    chosen = list(image_ids)
    if products or reviews:
        if loaded is None:
            raise InputError("--product and --review need the manifest, and the store does not "
                             "record one", file=str(rois), hint="pass --manifest")
        chosen += photos_of(loaded, products=products, reviews=reviews)
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        raise InputError("no image to draw: the products or reviews have no photos",
                         hint="pass --image-id, or a --product / --review with photos")
    if root is None:
        raise InputError("the store does not record where its images are", file=str(rois),
                         hint="pass --images-root (the folder extract-rois read them from)")
    files = ImageFiles(root, loaded)
    single = len(chosen) == 1 and out is not None and str(out).lower().endswith(".png")
    target = Path(out) if out is not None else Path(".")
    with RoiStore(rois) as store:
        names = names_for_store(store.attrs, store.format_version, naming)
        result = ShowRoisResult([], names, target)
        for image_id in chosen:
            if image_id not in store:
                result.failures.append({
                    "image_id": image_id, "reason": "not-in-store",
                    "detail": f"{store.path} has no regions for it ({len(store)} images; "
                              "the extraction may have listed it in failures.jsonl)"})
                continue
            regions = top_regions(store, names, image_id, top)
            try:
                pixels = files.pixels(image_id, (regions.height, regions.width))
            except ImageError as exc:
                result.failures.append({"image_id": image_id, "reason": exc.reason,
                                        "detail": exc.detail or str(files.path(image_id))})
                continue
            drawn = draw_regions(pixels, regions.boxes, regions.labels, max_side=max_side)
            path = target if single else target / output_name(image_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(png_bytes(drawn.image))
            log.info("show-rois: %s: %d of %d regions -> %s", image_id, len(regions.labels),
                     regions.stored, path)
            result.written.append(path)
    if not result.written:
        first = result.failures[0]
        raise InputError(f"image {first['image_id']!r}: {first['reason']}: {first['detail']}",
                         file=str(rois), hint=_hint(first["reason"]))
    if single:
        result.output = target
    return result


def _hint(reason: str) -> str:
    if reason == "not-in-store":
        return "check the image id (ids look like B00XYZ/pic_0.jpg), or pass the store that " \
               "extracted it"
    if reason in ("missing", "unreadable", "no-images-root"):
        return "pass --images-root: the folder the images were extracted from"
    if reason == "changed":
        return "re-run extract-rois on the current images (or restore the old files)"
    return "the image file cannot be read; see the detail"
