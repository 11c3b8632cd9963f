"""Non-maximum suppression with the Caffe rule the bottom-up-attention extractor used.

The reference kernel measures boxes in inclusive pixels: a box is `x2 - x1 + 1` wide, and
the intersection gets the same `+ 1`. It suppresses a box when its IoU with a kept one is
at least (`>=`) the threshold. torchvision's kernels use `x2 - x1` and `>`. Two identities
let those fast kernels (CPU and CUDA) do the Caffe rule:

- the `+ 1` IoU of boxes equals the plain IoU of the same boxes with `x2 + 1, y2 + 1`;
- for float32 IoUs, `iou >= t` equals `iou > t'` with `t'` the float32 just below `t`.

Both hold exactly in real arithmetic; in float32 the shifted sums can round differently
in the last bit, which changes a decision only for an IoU within ~1e-7 of the threshold.
The tests check the identities against a literal Caffe-rule loop.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

# (boxes [N, 4], scores [N], iou_threshold) -> kept indices [K], by decreasing score.
NmsKernel = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def torchvision_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    from torchvision.ops import nms

    return nms(boxes, scores, threshold)


def inclusive_to_exclusive(boxes: torch.Tensor) -> torch.Tensor:
    """[N, 4] inclusive-pixel boxes -> float32 boxes with `x2 + 1, y2 + 1`."""
    boxes = boxes.float()
    return torch.cat([boxes[:, :2], boxes[:, 2:] + 1.0], dim=1)


def strict_threshold(threshold: float) -> float:
    """The largest float32 below float32(`threshold`): `iou > it` iff `iou >= threshold`
    for float32 IoUs (the reference compares in float32). At 0 every IoU suppresses, so -1
    (a subnormal below 0 could be flushed to zero on a GPU)."""
    if threshold <= 0:
        return -1.0
    return float(np.nextafter(np.float32(threshold), np.float32(0.0)))


def caffe_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float,
              kernel: NmsKernel = torchvision_nms) -> torch.Tensor:
    """Indices of the boxes [N, 4] (inclusive pixels) kept by the Caffe rule, by decreasing
    score. `kernel` is any NMS with torchvision's conventions."""
    return kernel(inclusive_to_exclusive(boxes), scores.float(), strict_threshold(threshold))


def caffe_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                      threshold: float, kernel: NmsKernel = torchvision_nms) -> torch.Tensor:
    """`caffe_nms` within each group (boxes of different groups never suppress each other).

    Runs one NMS per group on the boxes' own coordinates: torchvision's batched NMS may
    shift each group by a large offset (class x image size, over a million for 1600
    classes), which rounds float32 coordinates to 1/16 or 1/8 px and so changes IoUs.
    Returns kept indices [K] in no particular order.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    _, counts = torch.unique_consecutive(sorted_groups, return_counts=True)
    kept = []
    for indices in order.split(counts.tolist()):
        kept.append(indices[caffe_nms(boxes[indices], scores[indices], threshold, kernel)])
    return torch.cat(kept)


def caffe_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, M] IoU of inclusive-pixel boxes `a` [N, 4] and `b` [M, 4], computed in float32
    in the reference kernel's order of operations."""
    a, b = a.float(), b.float()
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    width = (torch.minimum(a[:, None, 2], b[None, :, 2])
             - torch.maximum(a[:, None, 0], b[None, :, 0]) + 1).clamp(min=0)
    height = (torch.minimum(a[:, None, 3], b[None, :, 3])
              - torch.maximum(a[:, None, 1], b[None, :, 1]) + 1).clamp(min=0)
    inter = width * height
    return inter / (area_a[:, None] + area_b[None, :] - inter)
