"""Building a detector by name, with weights from a file or seeded random ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..verify import file_sha256
from ..errors import InputError
from .checkpoints import (RANDOM, LoadReport, init_random, load_butd_weights, load_into,
                          read_checkpoint, warn_random_weights)

log = logging.getLogger(__name__)

MODELS = {
    "butd-r101": "bottom-up-attention Faster R-CNN, ResNet-101 C4, Visual Genome 1601 classes "
                 "/ 401 attributes, 2048-d regions",
    "frcnn-r50-fpn-v2": "torchvision fasterrcnn_resnet50_fpn_v2, COCO 91 labels, 1024-d regions",
}

FEATURE_DIMS = {"butd-r101": 2048, "frcnn-r50-fpn-v2": 1024}


@dataclass
class DetectorSettings:
    model: str = "butd-r101"
    weights: str = RANDOM
    seed: int = 0
    backend: str = "torch"
    min_size: int = 600
    max_size: int = 1000
    nms_thresh: float = 0.3
    conf_thresh: float = 0.2
    min_boxes: int = 10
    max_boxes: int = 100
    rpn_pre_nms_top_n: int = 6000
    rpn_post_nms_top_n: int = 300


def weights_identity(weights: str, seed: int) -> str:
    """What goes into the fingerprint and the store: a file's sha256, or random:SEED."""
    return f"{RANDOM}:{seed}" if weights == RANDOM else file_sha256(weights)


def build_detector(settings: DetectorSettings) -> tuple[nn.Module, str]:
    """(model in eval mode on the CPU, weights sha256 or 'random:SEED')."""
    if settings.min_boxes > settings.max_boxes:
        raise InputError(f"--min-boxes {settings.min_boxes} exceeds --max-boxes "
                         f"{settings.max_boxes}", hint="choose min-boxes <= max-boxes")
    if settings.model == "butd-r101":
        from .butd import BUTDConfig, BUTDDetector
        from .ops import get_ops

        config = BUTDConfig(
            nms_thresh=settings.nms_thresh, conf_thresh=settings.conf_thresh,
            min_boxes=settings.min_boxes, max_boxes=settings.max_boxes,
            rpn_pre_nms_top_n=settings.rpn_pre_nms_top_n,
            rpn_post_nms_top_n=settings.rpn_post_nms_top_n)
        model = BUTDDetector(config, ops=get_ops(settings.backend))
        if settings.weights == RANDOM:
            init_random(model, settings.seed)
            warn_random_weights(settings.seed)
            identity = f"{RANDOM}:{settings.seed}"
        else:
            identity = load_butd_weights(model, settings.weights).sha256
    elif settings.model == "frcnn-r50-fpn-v2":
        if settings.backend != "torch":
            raise InputError("frcnn-r50-fpn-v2 runs on the torch backend only",
                             hint="drop --backend or use --model butd-r101")
        from .torchvision_frcnn import TorchvisionFRCNN

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            model = TorchvisionFRCNN(
                conf_thresh=settings.conf_thresh, nms_thresh=settings.nms_thresh,
                min_boxes=settings.min_boxes, max_boxes=settings.max_boxes,
                rpn_pre_nms_top_n=settings.rpn_pre_nms_top_n,
                rpn_post_nms_top_n=settings.rpn_post_nms_top_n)
        if settings.weights == RANDOM:
            warn_random_weights(settings.seed)
            identity = f"{RANDOM}:{settings.seed}"
        else:
            state = read_checkpoint(settings.weights)
            report = LoadReport(layout="torchvision", sha256=file_sha256(settings.weights))
            load_into(model.detector, state, report)
            identity = report.sha256
    else:
        raise InputError(f"unknown model {settings.model!r}",
                         hint="choose one of: " + ", ".join(MODELS))
    return model.eval(), identity
