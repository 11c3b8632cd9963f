"""Resizing an image for the detector exactly as the reference extractor does.

The reference scales by `s = min_size / shorter side` (or `max_size / longer side` when the
longer side would round above `max_size`) with `cv2.resize(im, None, fx=s, fy=s,
INTER_LINEAR)`. OpenCV rounds `h * s` and `w * s` half to even for the output size and
samples the source with a step of `1 / s` (half-pixel centres, no antialiasing). Asking
torch for an output *size* instead samples with a step of `w / w'`, which differs
whenever `w * s` is not a whole number (up to 0.2 px, tens of grey levels at edges); so
`resize_like_opencv` passes both the size and the factor to torch's bilinear kernel.
"""

from __future__ import annotations

import torch


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """The factor that brings the shorter side to `min_size` with the longer <= `max_size`
    (the longer side is tested after rounding half to even, as the reference does)."""
    scale = min_size / min(height, width)
    if round(scale * max(height, width)) > max_size:
        scale = max_size / max(height, width)
    return scale


def resized_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """OpenCV's output size for `fx = fy = scale`: each side times the factor, rounded
    half to even (at least 1)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_like_opencv(images: torch.Tensor, scale: float) -> torch.Tensor:
    """[N, C, H, W] floating images -> [N, C, round(H*s), round(W*s)], bilinear with
    OpenCV's sampling step `1 / scale` (what `cv2.resize(fx=s, fy=s, INTER_LINEAR)` does)."""
    height, width = images.shape[-2:]
    size = list(resized_shape(int(height), int(width), scale))
    return torch.ops.aten.upsample_bilinear2d.default(images, size, False, scale, scale)
