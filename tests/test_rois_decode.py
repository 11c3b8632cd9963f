"""Every kind of bad or unusual image the crawlers bring back, on real photographs."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mrhp_prep.vision.decode import ImageError, decode_image
from mrhp_prep.vision.resize import resize_scale, resized_shape
from rois_support import photo


@pytest.fixture
def rgb() -> np.ndarray:
    return photo("astronaut")


def _save(path, image: Image.Image, **params):
    image.save(path, **params)
    return path


def test_plain_jpeg_decodes_to_rgb(tmp_path, rgb):
    path = _save(tmp_path / "a.jpg", Image.fromarray(rgb), quality=95)
    out = decode_image(path)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 4  # JPEG loss only


def test_cmyk_jpeg_comes_back_as_rgb(tmp_path, rgb):
    path = _save(tmp_path / "cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=95)
    assert Image.open(path).mode == "CMYK"
    out = decode_image(path)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 6


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path, rgb):
    gray8 = np.asarray(Image.fromarray(rgb).convert("L"))
    gray16 = gray8.astype(np.uint16) * 257  # full 16-bit range
    path = tmp_path / "deep.png"
    Image.fromarray(gray16).save(path)
    assert Image.open(path).mode.startswith("I")
    out = decode_image(path)
    assert out.shape == (*gray8.shape, 3)
    assert np.abs(out[..., 0].astype(int) - gray8.astype(int)).max() <= 1


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = photo("camera")
    path = _save(tmp_path / "gray.png", Image.fromarray(gray))
    out = decode_image(path)
    assert out.shape == (*gray.shape, 3)
    assert all((out[..., channel] == gray).all() for channel in range(3))


def test_palette_with_transparency_is_composited_on_white(tmp_path, rgb):
    palette = Image.fromarray(rgb).quantize(64)
    palette.info["transparency"] = 0  # palette entry 0 is transparent
    path = tmp_path / "palette.png"
    palette.save(path, transparency=0)
    indices = np.asarray(Image.open(path))
    assert Image.open(path).mode == "P" and (indices == 0).any()
    out = decode_image(path)
    assert (out[indices == 0] == 255).all()              # transparent -> white
    opaque = indices != 0
    expected = np.asarray(palette.convert("RGB"))
    assert (out[opaque] == expected[opaque]).all()       # the rest keeps its colour


def test_rgba_png_is_composited_on_white(tmp_path, rgb):
    alpha = np.zeros(rgb.shape[:2], dtype=np.uint8)
    alpha[:, : rgb.shape[1] // 2] = 255
    path = _save(tmp_path / "alpha.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
    out = decode_image(path)
    half = rgb.shape[1] // 2
    assert (out[:, half:] == 255).all()
    assert (out[:, :half] == rgb[:, :half]).all()


def test_exif_rotation_is_applied(tmp_path):
    rgb = photo("coffee")                       # 120 high, 180 wide
    exif = Image.Exif()
    exif[0x0112] = 6                            # orientation: rotate 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).save(path, exif=exif, quality=95)
    out = decode_image(path)
    assert out.shape == (180, 120, 3)           # upright: now portrait
    expected = np.rot90(rgb, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 4


@pytest.mark.parametrize("case, reason", [
    ("missing", "missing"), ("empty", "empty"), ("html", "not-an-image"),
    ("truncated", "truncated"), ("corrupt", "corrupt"), ("tiny", "too-small"),
    ("bomb", "too-large"),
])
def test_bad_files_fail_with_a_reason(tmp_path, rgb, case, reason):
    path = tmp_path / f"{case}.jpg"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "html":
        path.write_text("<html><body>404 Not Found</body></html>")
    elif case == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=95)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif case == "corrupt":
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        data = bytearray(buffer.getvalue())
        start = data.index(b"IDAT") + 40
        data[start:start + 200] = bytes(200)     # damage the compressed pixel stream
        path.write_bytes(bytes(data))
    elif case == "tiny":
        Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    elif case == "bomb":
        path.write_bytes(_png_header_only(50_000, 50_000))
    with pytest.raises(ImageError) as caught:
        decode_image(path, min_side=10)
    assert caught.value.reason == reason


def _png_header_only(width: int, height: int) -> bytes:
    """A small PNG whose header claims a huge 1-bit image: a decompression bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_resize_rule_matches_the_extractors():
    # Shorter side to 600 unless the longer would pass 1000.
    # one float64 division each: the same expression gives the same number
    assert resize_scale(480, 640, 600, 1000) == 600 / 480 == 1.25
    assert resized_shape(480, 640, 1.25) == (600, 800)
    scale = resize_scale(300, 900, 600, 1000)
    assert scale == 1000 / 900
    assert resized_shape(300, 900, scale) == (333, 1000)
