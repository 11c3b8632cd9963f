"""Per-region part of the detector: RoI max pooling (as the Caffe model), the res5 head and the
predictors.

For R proposals: RoI max pooling on res4 -> [R, 1024, 14, 14] -> res5 -> [R, 2048, 14, 14]
-> mean over space -> the region feature [R, 2048]. From the feature: class scores over
1601 Visual Genome classes (index 0 = background), class-specific box deltas [R, 1601*4],
and 401 attribute scores (index 0 = no attribute) from a small head that also sees an
embedding of the predicted class.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from .backbone import make_res5_head
from .ops import DetectionOps, get_ops


class BoxPredictor(nn.Module):
    """`cls_score` [R, num_classes] logits and `bbox_pred` [R, 4 * num_classes] deltas."""

    def __init__(self, in_features: int = 2048, num_classes: int = 1601):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, 4 * num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class AttributePredictor(nn.Module):
    """Attribute logits [R, num_attributes] from the region feature concatenated with an
    embedding of the arg-max class: Linear(2048 + 256 -> 512), ReLU, Linear(512 -> 401)."""

    def __init__(self, in_features: int = 2048, num_classes: int = 1601,
                 num_attributes: int = 401, embed_dim: int = 256, hidden: int = 512):
        super().__init__()
        self.cls_embed = nn.Embedding(num_classes, embed_dim)
        self.fc = nn.Linear(in_features + embed_dim, hidden)
        self.attr_score = nn.Linear(hidden, num_attributes)

    def forward(self, x: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
        embedded = self.cls_embed(class_logits.argmax(dim=1))
        hidden = F.relu(self.fc(torch.cat([x, embedded.to(x.dtype)], dim=1)))
        return self.attr_score(hidden)


class BUTDRoIHeads(nn.Module):
    # res5 runs on at most this many regions at a time: one [256, 2048, 14, 14] float32
    # activation is 400 MB, and 300 proposals x a batch of images would otherwise be GBs.
    region_chunk = 256

    def __init__(self, *, depth: int = 101, pool_size: int = 14, stride: int = 16,
                 res5_dilation: int = 2, num_classes: int = 1601,
                 num_attributes: int = 401, ops: DetectionOps | None = None):
        super().__init__()
        self.ops = ops or get_ops()
        self.pool_size = pool_size
        self.spatial_scale = 1.0 / stride
        self.res5 = make_res5_head(depth, dilation=res5_dilation)
        self.box_predictor = BoxPredictor(2048, num_classes)
        self.attribute_predictor = AttributePredictor(2048, num_classes, num_attributes)

    def pool(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """`rois` [R, 5] rows of (image index, x1, y1, x2, y2) -> [R, C, 14, 14]."""
        # Pool in float32 whatever the autocast dtype: coordinates up to 1000 px need it.
        return self.ops.roi_pool(features.float(), rois, self.pool_size, self.spatial_scale)

    def forward(self, features: torch.Tensor, proposals: list[torch.Tensor]) -> dict:
        """Returns `features` [R, 2048], `class_logits` [R, C], `box_deltas` [R, 4C] and
        `attr_logits` [R, A] for the proposals of all images, concatenated in order."""
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1)
                          for i, b in enumerate(p.float() for p in proposals)])
        region = torch.cat([self.res5(self.pool(features, chunk)).mean(dim=(2, 3))
                            for chunk in rois.split(self.region_chunk)])
        class_logits, box_deltas = self.box_predictor(region)
        attr_logits = self.attribute_predictor(region, class_logits)
        return {"features": region, "class_logits": class_logits, "box_deltas": box_deltas,
                "attr_logits": attr_logits}
