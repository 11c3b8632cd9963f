"""The bottom-up-attention Faster R-CNN (ResNet-101 C4, Visual Genome heads), assembled from
the parts in `backbone`, `rpn`, `roi_heads` and `postprocess`.

Input: a padded batch [N, 3, H, W] of BGR images minus the Caffe pixel mean, resized so
the shorter side is `min_size` (the longer at most `max_size`). Output per image: the kept
regions with their 2048-d features, boxes in original-image pixels, the arg-max object
class and attribute over the non-background columns, counted from 0 (the line of the
Visual Genome vocabulary files, as the reference extractor stores them), with their
probabilities.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .backbone import ResNetC4Body
from .ops import DetectionOps, get_ops
from .postprocess import regions_to_store
from .roi_heads import BUTDRoIHeads
from .rpn import RegionProposalNetwork

# Caffe's ImageNet pixel mean, BGR order, 0-255 scale.
PIXEL_MEAN_BGR = (102.9801, 115.9465, 122.7717)


@dataclass(frozen=True)
class BUTDConfig:
    """Architecture and inference settings; the defaults are the Caffe model's."""

    depth: int = 101
    num_classes: int = 1601              # Visual Genome objects + background (index 0)
    num_attributes: int = 401            # Visual Genome attributes + "none" (index 0)
    anchor_scales: tuple = (4, 8, 16, 32)
    anchor_ratios: tuple = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n: int = 6000
    rpn_post_nms_top_n: int = 300
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 16.0
    pool_size: int = 14
    res5_dilation: int = 2
    nms_thresh: float = 0.3              # per-class NMS when choosing regions
    conf_thresh: float = 0.2
    min_boxes: int = 10
    max_boxes: int = 100

    def replace(self, **changes) -> "BUTDConfig":
        return dataclasses.replace(self, **changes)


class BUTDDetector(nn.Module):
    feature_dim = 2048

    def __init__(self, config: BUTDConfig = BUTDConfig(), ops: DetectionOps | None = None):
        super().__init__()
        self.config = config
        self.ops = ops or get_ops()
        self.backbone = ResNetC4Body(config.depth)
        self.rpn = RegionProposalNetwork(
            in_channels=self.backbone.out_channels, stride=self.backbone.stride,
            anchor_scales=config.anchor_scales, anchor_ratios=config.anchor_ratios,
            pre_nms_top_n=config.rpn_pre_nms_top_n, post_nms_top_n=config.rpn_post_nms_top_n,
            nms_thresh=config.rpn_nms_thresh, min_size=config.rpn_min_size, ops=self.ops)
        self.roi_heads = BUTDRoIHeads(
            depth=config.depth, pool_size=config.pool_size, stride=self.backbone.stride,
            res5_dilation=config.res5_dilation, num_classes=config.num_classes,
            num_attributes=config.num_attributes, ops=self.ops)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN_BGR).view(1, 3, 1, 1),
                             persistent=False)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] RGB 0-255 (any dtype) -> BGR float minus the pixel mean."""
        return rgb.flip(1).float() - self.pixel_mean

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor, scales: torch.Tensor,
                original_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """`images` [N, 3, H, W] from `normalize`, zero-padded; `image_sizes` [N, 2] and
        `original_sizes` [N, 2] (height, width) after and before resizing; `scales` [N].

        Returns per image (see `postprocess.regions_to_store`): `features` [n, 2048],
        `boxes` [n, 4] xyxy original pixels (not clipped), `object_id` [n] int64 (0..1599),
        `object_conf` [n], `attr_id` [n] int64 (0..399), `attr_conf` [n]; and
        `backbone_finite` (0-d bool): False when the backbone's arithmetic overflowed."""
        res4 = self.backbone(images)
        backbone_finite = torch.isfinite(res4).flatten(1).all(dim=1)
        proposals = self.rpn(res4, image_sizes, scales)
        heads = self.roi_heads(res4, proposals)
        class_probs = F.softmax(heads["class_logits"].float(), dim=1)
        attr_probs = F.softmax(heads["attr_logits"].float(), dim=1)
        counts = [p.shape[0] for p in proposals]
        return [{**regions_to_store(boxes, scales[i], probs, attrs, feats,
                                    nms_thresh=self.config.nms_thresh,
                                    conf_thresh=self.config.conf_thresh,
                                    min_boxes=self.config.min_boxes,
                                    max_boxes=self.config.max_boxes, nms_kernel=self.ops.nms),
                 "backbone_finite": backbone_finite[i]}
                for i, (boxes, probs, attrs, feats) in enumerate(zip(
                    proposals, class_probs.split(counts), attr_probs.split(counts),
                    heads["features"].split(counts)))]
