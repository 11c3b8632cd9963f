"""Box arithmetic in the Caffe convention the bottom-up-attention weights were trained with.

Coordinates are inclusive pixel indices: a box [x1, y1, x2, y2] is x2 - x1 + 1 pixels wide.
Deltas (dx, dy, dw, dh) move the centre by a fraction of the size and scale the size by exp.
"""

from __future__ import annotations

import math

import torch

# Caps dw/dh so that exp() cannot overflow: no box grows more than 1000/16 times.
SCALE_CLAMP = math.log(1000.0 / 16)


def decode_deltas(deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Apply `deltas` [N, 4k] to `boxes` [N, 4]; returns [N, 4k] boxes (k boxes per row)."""
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0::4], deltas[:, 1::4]
    dw = deltas[:, 2::4].clamp(max=SCALE_CLAMP)
    dh = deltas[:, 3::4].clamp(max=SCALE_CLAMP)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    out = torch.empty_like(deltas)
    out[:, 0::4] = pred_ctr_x - 0.5 * pred_w
    out[:, 1::4] = pred_ctr_y - 0.5 * pred_h
    out[:, 2::4] = pred_ctr_x + 0.5 * pred_w
    out[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    return out


def clip_boxes(boxes: torch.Tensor, height: float | torch.Tensor,
               width: float | torch.Tensor) -> torch.Tensor:
    """Clip [..., 4] boxes to [0, width - 1] x [0, height - 1] (out of place)."""
    x = boxes[..., 0::2].clamp(min=0)
    y = boxes[..., 1::2].clamp(min=0)
    x = torch.minimum(x, torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device) - 1)
    y = torch.minimum(y, torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device) - 1)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def box_sides(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive widths and heights of [N, 4] boxes."""
    return boxes[:, 2] - boxes[:, 0] + 1.0, boxes[:, 3] - boxes[:, 1] + 1.0


def caffe_cell_anchors(base_size: int = 16, ratios=(0.5, 1.0, 2.0),
                       scales=(4, 8, 16, 32)) -> torch.Tensor:
    """The anchors of one feature-map cell, [len(ratios) * len(scales), 4], ratio-major.

    A base square of `base_size` pixels is reshaped to each aspect ratio (height / width)
    keeping its area, with side lengths rounded to whole pixels, then scaled; all anchors
    share the base square's centre. With the defaults: 12 anchors from 64 to 512 pixels.
    """
    center = (base_size - 1) / 2.0
    area = float(base_size * base_size)
    anchors = []
    for ratio in ratios:
        width = round(math.sqrt(area / ratio))
        height = round(width * ratio)
        for scale in scales:
            w, h = width * scale, height * scale
            anchors.append([center - 0.5 * (w - 1), center - 0.5 * (h - 1),
                            center + 0.5 * (w - 1), center + 0.5 * (h - 1)])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(cell_anchors: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """All anchors of a [height, width] feature map: [height * width * A, 4], ordered
    (y, x, anchor) to match a [A*?, H, W] head output permuted to (H, W, A)."""
    device = cell_anchors.device
    shift_x = torch.arange(width, device=device, dtype=torch.float32) * stride
    shift_y = torch.arange(height, device=device, dtype=torch.float32) * stride
    sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack((sx, sy, sx, sy), dim=-1).reshape(-1, 1, 4)
    return (shifts + cell_anchors.reshape(1, -1, 4)).reshape(-1, 4)
