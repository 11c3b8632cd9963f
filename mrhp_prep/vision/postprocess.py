"""Which regions of an image to keep, by the rule the bottom-up-attention extractors use.

For every proposal and every object class (background excluded), the proposal survives
that class if per-class NMS over all proposals (scored by that class) keeps it. A
proposal's confidence is its best score over the classes it survives. Regions with
confidence >= `conf_thresh` are kept, then the count is brought into
[`min_boxes`, `max_boxes`] by confidence.

Done literally, that is one NMS per class (1600 calls per image). Here it costs one NMS
call over the (proposal, class) pairs scoring at least the threshold: a pair's fate in its
class depends only on pairs of the same class with higher scores, so dropping lower pairs
changes nothing for confidences above the threshold. Only when too few regions pass is
the exact confidence of the others computed, all classes at once (`greedy_confidence`).
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms as torchvision_batched_nms
from torchvision.ops import box_iou


def thresholded_confidence(boxes: torch.Tensor, fg_scores: torch.Tensor, nms_thresh: float,
                           floor: float, batched_nms=torchvision_batched_nms) -> torch.Tensor:
    """Per-proposal confidence [R], exact where it is >= `floor`, 0 elsewhere.

    `boxes` [R, 4]; `fg_scores` [R, K] class probabilities without the background column.
    """
    box_index, class_index = torch.nonzero(fg_scores >= floor, as_tuple=True)
    confidence = torch.zeros(boxes.shape[0], dtype=fg_scores.dtype, device=boxes.device)
    if box_index.numel() == 0:
        return confidence
    pair_scores = fg_scores[box_index, class_index]
    keep = batched_nms(boxes[box_index].float(), pair_scores.float(), class_index, nms_thresh)
    return confidence.scatter_reduce_(0, box_index[keep], pair_scores[keep], reduce="amax")


def greedy_confidence(boxes: torch.Tensor, fg_scores: torch.Tensor,
                      nms_thresh: float) -> torch.Tensor:
    """Exact per-proposal confidence [R] over all K classes, greedy NMS run for every class
    at once: one step per rank, each step touching a [K, R] table. Stops early once no
    unvisited (class, proposal) pair can raise a proposal's confidence."""
    num_boxes = boxes.shape[0]
    scores = fg_scores.t().float()                                   # [K, R]
    overlaps = box_iou(boxes.float(), boxes.float()) > nms_thresh    # [R, R]
    sorted_scores, order = scores.sort(dim=1, descending=True)
    suppressed = torch.zeros_like(scores, dtype=torch.bool)
    confidence = torch.zeros(num_boxes, dtype=torch.float32, device=boxes.device)
    rows = torch.arange(scores.shape[0], device=boxes.device)
    for rank in range(num_boxes):
        if rank % 8 == 0:
            pending = sorted_scores[:, rank:] > confidence[order[:, rank:]]
            if not bool(pending.any()):
                break
        index = order[:, rank]                                       # [K] proposal per class
        alive = ~suppressed[rows, index]
        confidence.scatter_reduce_(0, index[alive], sorted_scores[alive, rank], reduce="amax")
        suppressed |= overlaps[index] & alive[:, None]
    return confidence.to(fg_scores.dtype)


def select_regions(boxes: torch.Tensor, class_probs: torch.Tensor, *, nms_thresh: float = 0.3,
                   conf_thresh: float = 0.2, min_boxes: int = 10,
                   max_boxes: int = 100,
                   batched_nms=torchvision_batched_nms) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the kept proposals, best first, and their confidences.

    `boxes` [R, 4] proposals; `class_probs` [R, 1 + K] softmax with background in column 0.
    Returns (indices [n], confidence [n]) with n = clamp(#confident, min_boxes, max_boxes),
    or all R proposals when there are fewer than `min_boxes`.
    """
    fg_scores = class_probs[:, 1:]
    confidence = thresholded_confidence(boxes, fg_scores, nms_thresh, conf_thresh, batched_nms)
    num_confident = int((confidence >= conf_thresh).sum())
    if num_confident < min_boxes and num_confident < boxes.shape[0]:
        confidence = greedy_confidence(boxes, fg_scores, nms_thresh)
    count = min(max(num_confident, min_boxes), max_boxes, boxes.shape[0])
    # Stable sort: equal confidences keep proposal order, so results do not depend on the device.
    order = torch.sort(confidence, descending=True, stable=True).indices[:count]
    return order, confidence[order]
