"""The region proposal network on the res4 map (stride 16, 12 anchors per cell).

`RPNHead` predicts, per anchor, a background/object score pair (the Caffe model's two-way
softmax) and four box deltas. `RegionProposalNetwork` turns them into at most
`post_nms_top_n` proposals per image: decode, clip, drop boxes not larger than `min_size`
(in original-image pixels; strictly, as the reference), keep the `pre_nms_top_n` best, NMS
at `nms_thresh` with the reference's Caffe rule (`nms.caffe_nms`).

The 12 cell anchors are Caffe's `generate_anchors` unless a checkpoint brings its own
(`set_cell_anchors`): the reference model keeps them in a persistent buffer and uses the
ones stored in its file.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .boxes import box_sides, caffe_cell_anchors, clip_boxes, decode_deltas, grid_anchors
from .nms import caffe_nms
from .ops import DetectionOps, get_ops


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs: `objectness_logits` [N, 2A, H, W] (A background
    logits, then A object logits) and `anchor_deltas` [N, 4A, H, W]."""

    def __init__(self, in_channels: int = 1024, hidden_channels: int = 512,
                 num_anchors: int = 12):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(hidden_channels, 2 * num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(hidden_channels, 4 * num_anchors, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.conv(x))
        return self.objectness_logits(hidden), self.anchor_deltas(hidden)


class RegionProposalNetwork(nn.Module):
    def __init__(self, *, in_channels: int = 1024, hidden_channels: int = 512, stride: int = 16,
                 anchor_scales=(4, 8, 16, 32), anchor_ratios=(0.5, 1.0, 2.0),
                 pre_nms_top_n: int = 6000, post_nms_top_n: int = 300, nms_thresh: float = 0.7,
                 min_size: float = 16.0, ops: DetectionOps | None = None):
        super().__init__()
        self.ops = ops or get_ops()
        cell = caffe_cell_anchors(stride, anchor_ratios, anchor_scales)
        self.register_buffer("cell_anchors", cell, persistent=False)
        self.head = RPNHead(in_channels, hidden_channels, cell.shape[0])
        self.stride = stride
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self._anchor_cache: dict[tuple, torch.Tensor] = {}

    def set_cell_anchors(self, anchors: torch.Tensor) -> None:
        """Use `anchors` [A, 4] (x1, y1, x2, y2 around the first cell) instead of the built
        ones; the count must match the head's."""
        if tuple(anchors.shape) != tuple(self.cell_anchors.shape):
            raise ValueError(f"cell anchors of shape {tuple(anchors.shape)}, the model needs "
                             f"{tuple(self.cell_anchors.shape)}")
        self.cell_anchors.copy_(anchors.to(self.cell_anchors.dtype))
        self._anchor_cache.clear()

    def anchors(self, height: int, width: int) -> torch.Tensor:
        key = (height, width, self.cell_anchors.device)
        if key not in self._anchor_cache:
            if len(self._anchor_cache) > 64:
                self._anchor_cache.clear()
            self._anchor_cache[key] = grid_anchors(self.cell_anchors, height, width, self.stride)
        return self._anchor_cache[key]

    def forward(self, features: torch.Tensor, image_sizes: torch.Tensor,
                scales: torch.Tensor) -> list[torch.Tensor]:
        """`features` [N, C, H, W]; `image_sizes` [N, 2] (height, width) of each resized image
        inside the padded batch; `scales` [N] resize factors. Returns N proposal tensors
        [R_i, 4] (resized-image pixels), best first."""
        logits, deltas = self.head(features)
        n, _, height, width = logits.shape
        num_anchors = self.cell_anchors.shape[0]
        # Object probability of the two-way softmax, ordered (image, y, x, anchor).
        pair = logits.float().reshape(n, 2, num_anchors, height, width)
        scores = F.softmax(pair, dim=1)[:, 1].permute(0, 2, 3, 1).reshape(n, -1)
        deltas = deltas.float().reshape(n, num_anchors, 4, height, width)
        deltas = deltas.permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        anchors = self.anchors(height, width)
        proposals = decode_deltas(deltas.reshape(-1, 4), anchors.repeat(n, 1)).reshape(n, -1, 4)

        return [self.select_proposals(proposals[i], scores[i], image_sizes[i], scales[i])
                for i in range(n)]

    def select_proposals(self, boxes: torch.Tensor, scores: torch.Tensor,
                         image_size: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """One image's decoded boxes [A, 4] and object scores [A] -> its proposals [R, 4],
        best first, by the reference's steps: clip to the resized image `image_size`
        (height, width); keep boxes with x2 > x1, y2 > y1 and both inclusive sides *above*
        `min_size * scale`; the `pre_nms_top_n` best; Caffe-rule NMS; the first
        `post_nms_top_n`."""
        boxes = clip_boxes(boxes, image_size[0], image_size[1])
        widths, heights = box_sides(boxes)
        threshold = self.min_size * scale
        keep = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                & (widths > threshold) & (heights > threshold))
        boxes, scores = boxes[keep], scores[keep]
        top = scores.topk(min(self.pre_nms_top_n, scores.numel())).indices
        boxes, scores = boxes[top], scores[top]
        # One NMS per image, as the reference runs it (one image at a time).
        order = caffe_nms(boxes, scores, self.nms_thresh, self.ops.nms)
        return boxes[order[: self.post_nms_top_n]]
