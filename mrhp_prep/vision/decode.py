"""Turning an image file into RGB pixels the detector can read, or a reason why not.

Crawled product photographs come in every shape: CMYK and YCCK JPEGs, 16-bit PNGs, palette
images with transparency, grayscale, EXIF-rotated phone pictures, 1x1 tracking pixels,
truncated downloads, HTML error pages saved as .jpg, and now and then a decompression bomb.
`decode_image` returns an [H, W, 3] uint8 RGB array for everything that can be read right,
and raises `ImageError` with a short machine-readable reason for the rest.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Above this many pixels an image is refused as a likely decompression bomb: Pillow's own
# default refusal (twice its warning limit of 89,478,485 pixels, about 13400 x 13400).
DEFAULT_MAX_PIXELS = 2 * 89_478_485

# Transparent areas are composited onto white, as product photos are shown on web pages.
_BACKGROUND = (255, 255, 255)


class ImageError(Exception):
    """An image that cannot be used; `reason` is one of the REASONS keys."""

    REASONS = {
        "missing": "the file does not exist",
        "unreadable": "the path cannot be opened (a symlink loop, a name too long, no access)",
        "empty": "the file has zero bytes",
        "not-an-image": "the bytes are not an image format Pillow can read",
        "truncated": "the file ends before the image data does",
        "corrupt": "the image data is damaged",
        "too-small": "the image is smaller than --min-image-side",
        "too-large": "the image has more pixels than the decompression-bomb limit",
        "non-finite": "the detector gave NaN or infinite values for the image",
    }

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16- or 32-bit integer gray: scale the used range of 0..65535 down to 8 bits.
        array = np.asarray(image, dtype=np.uint32)
        top = 65535 if array.max(initial=0) > 255 else 255
        gray = np.clip(array * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        gray = ((array - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(array))
        return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    # L, 1, CMYK, YCbCr, LAB, HSV and the rest: Pillow's conversions are right for these.
    return image.convert("RGB")


def decode_image(path: str | Path, *, min_side: int = 1,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """[H, W, 3] uint8 RGB, upright (EXIF orientation applied). Raises `ImageError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("missing", str(path)) from None
    except OSError as exc:  # ELOOP, ENAMETOOLONG, EACCES: this image, not the run, fails
        raise ImageError("unreadable", f"{exc.strerror or exc} ({str(path)[:200]})") from None
    if size == 0:
        raise ImageError("empty", str(path))
    try:
        with warnings.catch_warnings():
            # Pillow warns (and errors at twice the limit) for bombs; we decide by our limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with Image.open(path) as image:
                    width, height = image.size
                    if width * height > max_pixels:
                        raise ImageError("too-large", f"{width}x{height} pixels")
                    image.load()
                    image = ImageOps.exif_transpose(image)
                    rgb = _to_rgb(image)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError("not-an-image", str(exc)) from None
    except OSError as exc:
        text = str(exc)
        reason = "truncated" if "truncated" in text or "premature" in text.lower() else "corrupt"
        raise ImageError(reason, text) from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError("corrupt", str(exc)) from None
    array = np.array(rgb, dtype=np.uint8)  # a writable copy: torch refuses read-only memory
    if min(array.shape[0], array.shape[1]) < min_side:
        raise ImageError("too-small", f"{array.shape[1]}x{array.shape[0]} pixels")
    return array
