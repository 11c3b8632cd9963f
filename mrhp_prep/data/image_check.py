"""Is a downloaded file really an image, and is it stored as JPEG?

Every file is decoded in full with Pillow (a header check alone misses truncated data). JPEG
files (and MPO, the multi-picture JPEG that phones write) keep their bytes as served: no
re-encoding loss, and the file matches the server's byte for byte. Any other format Pillow
reads (PNG, WebP, GIF, BMP, TIFF, ...) is converted to an RGB JPEG, with transparent pixels
laid on white and only the first frame of an animation kept, because the layout the earlier
systems used names every file `pic_{k}.jpg`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .fetch_http import FetchError

KEPT_FORMATS = frozenset({"JPEG", "MPO"})


def check_and_convert(path: Path, jpeg_quality: int = 95) -> tuple[Path, str]:
    """Decode `path`; return (the file to keep, the source format).

    The file to keep is `path` itself for a JPEG, or a new temporary JPEG beside it (the caller
    removes both). Raises FetchError (not retryable) when the data is not a decodable image.
    """
    from PIL import Image, UnidentifiedImageError

    source_format = "unknown"
    try:
        with Image.open(path) as image:
            source_format = image.format or "unknown"
            image.load()
            if source_format in KEPT_FORMATS:
                return path, source_format
            rgb = _to_rgb(image)
    except UnidentifiedImageError:
        raise FetchError(f"not an image: {_describe_non_image(path)}") from None
    except Image.DecompressionBombError as exc:
        raise FetchError(f"image too large to decode safely: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise FetchError(f"not a valid image ({source_format}): {exc}") from None
    fd, converted = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".jpg.part",
                                     dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        rgb.save(handle, format="JPEG", quality=jpeg_quality)
    return Path(converted), source_format


def _to_rgb(image):
    """RGB pixels of the first frame; transparency becomes white, not black."""
    from PIL import Image

    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _describe_non_image(path: Path) -> str:
    """A hint at what the body was instead (error pages are the usual case)."""
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head or b"<body" in head:
        return "the body is an HTML page"
    if head.startswith((b"<?xml", b"<")):
        return "the body is XML/markup"
    if head.startswith((b"{", b"[")):
        return "the body looks like JSON"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "Pillow cannot identify the data"
    return "the body is text"


def verify_image(path: Path) -> None:
    """Decode `path` in full; raise FetchError when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except UnidentifiedImageError:
        raise FetchError(f"not an image: {_describe_non_image(path)}") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise FetchError(f"not a valid image: {exc}") from None
