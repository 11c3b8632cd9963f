"""Which regions of an image to keep, by the rule the bottom-up-attention extractors use.

For every proposal and every object class (background excluded), the proposal survives
that class if per-class NMS over all proposals (scored by that class) keeps it. A
proposal's confidence is its best score over the classes it survives. Regions with
confidence >= `conf_thresh` are kept, then the count is brought into
[`min_boxes`, `max_boxes`] by confidence.

Done literally, that is one NMS per class (1600 calls per image). Here it costs one NMS
call over the (proposal, class) pairs scoring at least the threshold: a pair's fate in its
class depends only on pairs of the same class with higher scores, so dropping lower pairs
changes nothing for confidences above the threshold. Only when too few regions pass are
the best of the rest found, by visiting pairs from the top score down
(`top_confidences`).
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


def top_confidences(boxes: torch.Tensor, fg_scores: torch.Tensor, nms_thresh: float,
                    count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` proposals of highest confidence, exactly, with their confidences.

    Visits (proposal, class) pairs from the highest score down. When a pair is reached,
    every higher pair of its class has been visited, so whether it survives that class's
    NMS is already decided by the survivors so far; a proposal's first surviving pair gives
    its confidence. Stops once `count` proposals have one, which for any score
    distribution is usually after a few dozen pairs. Proposals that never survive get 0.
    """
    num_boxes, num_classes = fg_scores.shape
    count = min(count, num_boxes)
    overlaps = (box_iou(boxes.float(), boxes.float()) > nms_thresh).cpu().numpy()
    flat = fg_scores.reshape(-1)
    survivors: dict[int, list[int]] = {}
    found: dict[int, float] = {}
    visited, window = 0, 256
    while len(found) < count and visited < flat.numel():
        window = min(window, flat.numel())
        scores, order = flat.topk(window)
        scores, order = scores[visited:].tolist(), order[visited:].tolist()
        for score, index in zip(scores, order):
            box, cls = divmod(index, num_classes)
            kept = survivors.setdefault(cls, [])
            if not kept or not overlaps[box, kept].any():
                kept.append(box)
                if box not in found:
                    found[box] = score
                    if len(found) == count:
                        break
        visited, window = window, window * 4
    confidence = torch.zeros(num_boxes, dtype=fg_scores.dtype, device=fg_scores.device)
    if found:
        index = torch.tensor(list(found), device=fg_scores.device)
        confidence[index] = torch.tensor(list(found.values()), dtype=fg_scores.dtype,
                                         device=fg_scores.device)
    order = torch.sort(confidence, descending=True, stable=True).indices[:count]
    return order, confidence[order]


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
    count = min(max(num_confident, min_boxes), max_boxes, boxes.shape[0])
    if num_confident < count:
        return top_confidences(boxes, fg_scores, nms_thresh, count)
    # Stable sort: equal confidences keep proposal order, so results do not depend on the device.
    order = torch.sort(confidence, descending=True, stable=True).indices[:count]
    return order, confidence[order]
