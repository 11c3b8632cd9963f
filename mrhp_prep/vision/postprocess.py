"""Which regions of an image to keep and store, by the rule of the reference extractor
(MILVLG bottom-up-attention, caffe mode).

For every proposal and every object class (background excluded), the proposal survives
that class if per-class NMS over all proposals (scored by that class, Caffe's rule: see
`nms`) keeps it. A proposal's confidence is its best score over the classes it survives.
Proposals with confidence >= `conf_thresh` are kept in proposal order (the RPN's order);
only when fewer than `min_boxes` or more than `max_boxes` pass are the `min_boxes` or
`max_boxes` most confident kept instead, most confident first.

Done literally, that is one NMS per class (1600 calls per image). Here it costs one NMS
per class present among the (proposal, class) pairs scoring at least the threshold: a
pair's fate in its class depends only on pairs of the same class with higher scores, so
dropping lower pairs changes nothing for confidences above the threshold. Only when too
few regions pass are the best of the rest found, by visiting pairs from the top score
down (`top_confidences`).
"""

from __future__ import annotations

import torch

from .nms import NmsKernel, torchvision_nms, caffe_batched_nms, caffe_iou


def thresholded_confidence(boxes: torch.Tensor, fg_scores: torch.Tensor, nms_thresh: float,
                           floor: float, nms_kernel: NmsKernel = torchvision_nms) -> torch.Tensor:
    """Per-proposal confidence [R], exact where it is >= `floor`, 0 elsewhere.

    `boxes` [R, 4]; `fg_scores` [R, K] class probabilities without the background column.
    """
    box_index, class_index = torch.nonzero(fg_scores >= floor, as_tuple=True)
    confidence = torch.zeros(boxes.shape[0], dtype=fg_scores.dtype, device=boxes.device)
    if box_index.numel() == 0:
        return confidence
    pair_scores = fg_scores[box_index, class_index]
    keep = caffe_batched_nms(boxes[box_index], pair_scores, class_index, nms_thresh, nms_kernel)
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
    overlaps = (caffe_iou(boxes, boxes) >= nms_thresh).cpu().numpy()
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
                   conf_thresh: float = 0.2, min_boxes: int = 10, max_boxes: int = 100,
                   nms_kernel: NmsKernel = torchvision_nms) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the kept proposals in the order they are stored, and their confidences.

    `boxes` [R, 4] proposals; `class_probs` [R, 1 + K] softmax with background in column 0.
    Returns (indices [n], confidence [n]): the confident proposals in proposal order when
    there are `min_boxes` to `max_boxes` of them, else the min(`min_boxes`, R) or
    `max_boxes` most confident, most confident first.
    """
    fg_scores = class_probs[:, 1:]
    confidence = thresholded_confidence(boxes, fg_scores, nms_thresh, conf_thresh, nms_kernel)
    confident = torch.nonzero(confidence >= conf_thresh, as_tuple=True)[0]
    if confident.numel() < min_boxes:
        return top_confidences(boxes, fg_scores, nms_thresh, min_boxes)
    if confident.numel() > max_boxes:
        # Stable sort: equal confidences keep proposal order, so results do not depend on
        # the device.
        order = torch.sort(confidence, descending=True, stable=True).indices[:max_boxes]
        return order, confidence[order]
    return confident, confidence[confident]


def regions_to_store(proposals: torch.Tensor, scale: torch.Tensor, class_probs: torch.Tensor,
                     attr_probs: torch.Tensor, features: torch.Tensor, *, nms_thresh: float,
                     conf_thresh: float, min_boxes: int, max_boxes: int,
                     nms_kernel: NmsKernel = torchvision_nms) -> dict[str, torch.Tensor]:
    """The stored regions of one image, as the reference stores them.

    `proposals` [R, 4] in resized-image pixels; `scale` the resize factor (0-d); the class
    [R, 1 + K] and attribute [R, 1 + A] probabilities (column 0: background / no
    attribute); `features` [R, D]. Returns `features` [n, D]; `boxes` [n, 4]: the proposals
    divided by the scale, not clipped again; `object_id`, `attr_id` [n]: the arg-max over
    the columns after 0, counted from 0 (the line of the vocabulary file); `object_conf`,
    `attr_conf` [n]: their probabilities.
    """
    boxes = proposals / scale
    keep, _ = select_regions(boxes, class_probs, nms_thresh=nms_thresh,
                             conf_thresh=conf_thresh, min_boxes=min_boxes,
                             max_boxes=max_boxes, nms_kernel=nms_kernel)
    object_conf, object_id = class_probs[keep, 1:].max(dim=1)
    attr_conf, attr_id = attr_probs[keep, 1:].max(dim=1)
    return {"features": features[keep], "boxes": boxes[keep], "object_id": object_id,
            "object_conf": object_conf, "attr_id": attr_id, "attr_conf": attr_conf}
