"""The second detector: torchvision's `fasterrcnn_resnet50_fpn_v2` (COCO, 91 labels), for
users who have its weight file. Regions get the 1024-d output of its box head.

It takes the same inputs as `BUTDDetector` (resized RGB 0-255 in, regions out) so the
stage runs either. There is no attribute head: `attr_id` is -1 and `attr_conf` 0.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .boxes import clip_boxes

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


class TorchvisionFRCNN(nn.Module):
    feature_dim = 1024

    def __init__(self, *, conf_thresh: float = 0.2, nms_thresh: float = 0.5,
                 min_boxes: int = 10, max_boxes: int = 100, rpn_pre_nms_top_n: int = 1000,
                 rpn_post_nms_top_n: int = 1000):
        super().__init__()
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

        # Score threshold 0 so that images with few confident boxes can still fill min_boxes.
        self.detector = fasterrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=91, box_score_thresh=0.0,
            box_nms_thresh=nms_thresh, box_detections_per_img=max_boxes,
            rpn_pre_nms_top_n_test=rpn_pre_nms_top_n, rpn_post_nms_top_n_test=rpn_post_nms_top_n)
        self.conf_thresh = conf_thresh
        self.min_boxes = min_boxes
        self.max_boxes = max_boxes
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1) * 255,
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1) * 255,
                             persistent=False)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb.float() - self.pixel_mean) / self.pixel_std

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor, scales: torch.Tensor,
                original_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        from torchvision.models.detection.image_list import ImageList

        # The FPN needs sides divisible by 32; pad with zeros (the normalized mean).
        height, width = images.shape[-2:]
        images = F.pad(images, (0, (-width) % 32, 0, (-height) % 32))
        sizes = [(int(h), int(w)) for h, w in image_sizes.tolist()]
        image_list = ImageList(images, sizes)
        detector = self.detector
        features = detector.backbone(images)
        # False where the backbone's arithmetic overflowed (see extract.detector_problem)
        backbone_finite = torch.stack([torch.isfinite(level).flatten(1).all(dim=1)
                                       for level in features.values()]).all(dim=0)
        proposals, _ = detector.rpn(image_list, features)
        detections, _ = detector.roi_heads(features, proposals, sizes)
        boxes = [d["boxes"] for d in detections]
        pooled = detector.roi_heads.box_roi_pool(features, boxes, sizes)
        region_features = detector.roi_heads.box_head(pooled)
        outputs = []
        for i, (found, feats) in enumerate(zip(detections, region_features.split(
                [b.shape[0] for b in boxes]))):
            confident = int((found["scores"] >= self.conf_thresh).sum())
            count = min(max(confident, self.min_boxes), self.max_boxes, found["scores"].shape[0])
            kept = clip_boxes(found["boxes"][:count] / scales[i], original_sizes[i, 0],
                              original_sizes[i, 1])
            outputs.append({"features": feats[:count], "boxes": kept,
                            "object_id": found["labels"][:count],
                            "object_conf": found["scores"][:count],
                            "attr_id": torch.full_like(found["labels"][:count], -1),
                            "attr_conf": torch.zeros_like(found["scores"][:count]),
                            "backbone_finite": backbone_finite[i]})
        return outputs
