"""The images extract-rois reads: where they are listed (a manifest or a folder), how each
is decoded and resized in a worker, and how decoded images are grouped into batches."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Iterator, Sequence

from .decode import DEFAULT_MAX_PIXELS, ImageError, decode_image
from .resize import resize_like_opencv, resize_scale

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".jfif"}


@dataclass
class ImageSettings:
    min_image_side: int = 10
    max_image_pixels: int = DEFAULT_MAX_PIXELS


# --- inputs ---------------------------------------------------------------------------------

def manifest_images(manifest_dir: str | Path, images_root: str | Path) -> tuple[str, list]:
    from ..data.manifest import Manifest

    manifest = Manifest(manifest_dir)
    table = manifest.images
    root = Path(images_root)
    items = [(str(i), root / str(p)) for i, p in zip(table["image_id"], table["path"])]
    return manifest.name, items


def folder_images(folder: str | Path) -> list[tuple[str, Path]]:
    folder = Path(folder)
    items = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        # A broken or looping link is kept: decoding lists it as a failure, not a silent gap.
        # (is_symlink first: is_file raises on a link whose target name is too long.)
        if (path.is_symlink() or path.is_file()) and path.suffix.lower() in IMAGE_SUFFIXES:
            items.append((rel.as_posix(), path))
    return items


# --- decoding in workers --------------------------------------------------------------------

def outside_root(path: str | Path, root: str | Path | None) -> bool:
    """Whether `path` (the images root joined with a manifest's path) leaves the folder
    `root`: an absolute path or a `..` in the manifest (`leaves_images_root`: lexical, links
    inside the root are followed)."""
    from ..data.manifest import leaves_images_root

    if root is None:
        return False
    try:
        rel = PurePath(path).relative_to(root)
    except ValueError:
        return True
    return leaves_images_root(rel.as_posix())


def unsafe_path_failure(image_id: str, path: str | Path) -> dict:
    """The failure sample of an image whose path leaves the images root (never opened)."""
    return {"image_id": image_id, "image": None, "reason": "outside-images-root",
            "detail": "the manifest's path leaves the images root (a '..' or an absolute "
                      "path); the file was not read", "path": str(path)}


class ImageDataset:
    """Item i -> dict(image_id, image [3, h, w] float32 RGB 0-255 resized, or None with a
    failure reason, original_size (H, W), scale). With `root`, a path that leaves it is a
    failure and is never opened."""

    def __init__(self, items: Sequence[tuple[str, Path]], *, min_size: int, max_size: int,
                 image_settings: ImageSettings, root: str | Path | None = None):
        self.items = list(items)
        self.min_size = min_size
        self.max_size = max_size
        self.image_settings = image_settings
        self.root = root

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        import torch

        image_id, path = self.items[index]
        if outside_root(path, self.root):
            return unsafe_path_failure(image_id, path)
        try:
            pixels = decode_image(path, min_side=self.image_settings.min_image_side,
                                  max_pixels=self.image_settings.max_image_pixels)
        except ImageError as exc:
            return {"image_id": image_id, "image": None, "reason": exc.reason,
                    "detail": exc.detail, "path": str(path)}
        height, width = pixels.shape[:2]
        scale = resize_scale(height, width, self.min_size, self.max_size)
        image = resize_pixels(torch.from_numpy(pixels).permute(2, 0, 1), scale)
        return {"image_id": image_id, "image": image, "original_size": (height, width),
                "scale": scale, "path": str(path)}


def resize_pixels(pixels, scale: float):
    """[3, H, W] RGB pixels (uint8 or float, any device) -> [3, h, w] float32 resized by
    `scale` as the reference extractor does. Both decoders (CPU workers, GPU) resize here."""
    return resize_like_opencv(pixels[None].float(), scale)[0]


class ShapeBatcher:
    """Groups decoded images into batches of similar shape to cut padding.

    A batch leaves as soon as `batch_size` images of one exact shape are waiting; when more
    than `window` images wait, the most similar ones (by aspect ratio) leave together, but
    only as many as keep the padded batch within `max_padding` times their own pixels.
    """

    def __init__(self, batch_size: int, window: int | None = None, max_padding: float = 1.25):
        self.batch_size = batch_size
        self.window = window or 4 * batch_size
        self.max_padding = max_padding
        self.pending: dict[tuple, list] = defaultdict(list)
        self.waiting = 0

    def add(self, sample: dict) -> Iterator[list[dict]]:
        shape = tuple(sample["image"].shape[-2:])
        self.pending[shape].append(sample)
        self.waiting += 1
        if len(self.pending[shape]) >= self.batch_size:
            yield self._take([shape])
        while self.waiting > self.window:
            yield self._take(self._by_aspect())

    def flush(self) -> Iterator[list[dict]]:
        while self.waiting:
            yield self._take(self._by_aspect())

    def _by_aspect(self) -> list[tuple]:
        return sorted((s for s in self.pending if self.pending[s]), key=lambda s: s[0] / s[1])

    def _take(self, shapes: list[tuple]) -> list[dict]:
        batch, area, height, width = [], 0, 0, 0
        for shape in shapes:
            while self.pending[shape] and len(batch) < self.batch_size:
                grown = (max(height, shape[0]), max(width, shape[1]))
                padded = grown[0] * grown[1] * (len(batch) + 1)
                if batch and padded > self.max_padding * (area + shape[0] * shape[1]):
                    break
                batch.append(self.pending[shape].pop())
                self.waiting -= 1
                area += shape[0] * shape[1]
                height, width = grown
            if not self.pending[shape]:
                del self.pending[shape]
            if len(batch) == self.batch_size or (batch and shape in self.pending):
                break
        return batch
