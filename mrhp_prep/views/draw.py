"""Regions drawn on a photograph with Pillow: coloured boxes with a label each, or, on small
thumbnails, with a number that a caption beside the picture explains.

Boxes come in original-image pixels (x1, y1, x2, y2), as `rois.h5` stores them; the drawing
functions scale them with the picture.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Saturated colours that rarely occur in photographs, told apart easily; box i gets
# PALETTE[i % len(PALETTE)].
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (255, 225, 25), (0, 128, 128), (170, 110, 40))
# Pictures narrower than this are enlarged for drawing, so the labels stay readable.
MIN_DRAW_SIDE = 480


def box_colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


@dataclass
class Drawn:
    """A picture with regions drawn: `image` and the factor its boxes were scaled by."""

    image: Image.Image
    scale: float


def display_scale(width: int, height: int, max_side: int | None) -> float:
    """The factor a picture is drawn at: up to MIN_DRAW_SIDE on its long side when it is
    smaller, down to `max_side` when it is larger (None or 0: no limit)."""
    long_side = max(width, height)
    if long_side < MIN_DRAW_SIDE:
        return MIN_DRAW_SIDE / long_side
    if max_side and long_side > max_side:
        return max_side / long_side
    return 1.0


def draw_regions(pixels: np.ndarray, boxes: np.ndarray, labels: Sequence[str], *,
                 max_side: int | None = 1200) -> Drawn:
    """`pixels` [H, W, 3] uint8 RGB; `boxes` [n, 4] in its pixels; `labels` [n]. Box i is drawn
    in box_colour(i) with its label above it (inside it at the top edge); later boxes under
    earlier ones, so the first (most confident) stays on top."""
    height, width = pixels.shape[:2]
    scale = display_scale(width, height, max_side)
    image = Image.fromarray(pixels, "RGB")
    if scale != 1.0:
        image = image.resize((round(width * scale), round(height * scale)), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(image.size) / 45)))
    scaled = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale
    for index in reversed(range(len(scaled))):
        x1, y1, x2, y2 = scaled[index]
        draw.rectangle((x1, y1, x2, y2), outline=box_colour(index), width=line)
    for index in reversed(range(len(scaled))):
        x1, y1, _, _ = scaled[index]
        left, top, right, bottom = draw.textbbox((0, 0), labels[index], font=font)
        text_w, text_h = right - left + 6, bottom - top + 4
        y = y1 - text_h if y1 - text_h >= 0 else y1 + line
        x = min(max(x1, 0), max(image.size[0] - text_w, 0))
        draw.rectangle((x, y, x + text_w, y + text_h), fill=box_colour(index))
        draw.text((x + 3 - left, y + 2 - top), labels[index], font=font,
                  fill=_text_colour(box_colour(index)))
    return Drawn(image, scale)


def thumbnail(pixels: np.ndarray, boxes: np.ndarray, *, size: int = 160) -> Image.Image:
    """A thumbnail at most `size` pixels on its long side, box i drawn in box_colour(i) with
    the number i + 1 in its corner."""
    height, width = pixels.shape[:2]
    scale = min(1.0, size / max(width, height))
    image = Image.fromarray(pixels, "RGB")
    if scale != 1.0:
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                             Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=10)
    scaled = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale
    for index in reversed(range(len(scaled))):
        x1, y1, x2, y2 = scaled[index]
        colour = box_colour(index)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        tag = str(index + 1)
        left, top, right, bottom = draw.textbbox((0, 0), tag, font=font)
        x, y = max(x1, 0), max(y1, 0)
        draw.rectangle((x, y, x + right - left + 3, y + bottom - top + 2), fill=colour)
        draw.text((x + 2 - left, y + 1 - top), tag, font=font, fill=_text_colour(colour))
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, quality: int = 80) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    """The bytes inline, for an <img src=...> that needs no other file."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
