"""The two detection kernels the detector calls, chosen by `--backend`.

`torch` (default) takes RoI pooling and NMS from torchvision. `detectron2` takes them from
`detectron2.layers` for sites that run detectron2's builds of these kernels; it fails
cleanly when detectron2 is not importable. Either NMS kernel has torchvision's conventions;
`nms.caffe_nms` turns it into the reference's rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import InputError

BACKENDS = ("torch", "detectron2")


@dataclass(frozen=True)
class DetectionOps:
    name: str
    roi_pool: Callable      # (features, [R, 5] (image index, x1, y1, x2, y2), size, scale)
    nms: Callable           # (boxes [N, 4], scores [N], iou_threshold) -> keep, best first


def get_ops(backend: str = "torch") -> DetectionOps:
    if backend == "torch":
        from torchvision.ops import nms, roi_pool

        return DetectionOps("torch", roi_pool, nms)
    if backend == "detectron2":
        try:
            from detectron2 import layers as d2_layers
        except Exception as exc:  # ImportError, or an ABI error from a mismatched build
            raise InputError(
                f"--backend detectron2 needs detectron2, which cannot be imported here ({exc})",
                hint="use the default --backend torch (same model, torchvision kernels), or "
                     "install a detectron2 build matching your torch") from None

        def roi_pool(features, rois, output_size, spatial_scale):
            return d2_layers.ROIPool(output_size, spatial_scale)(features, rois)

        return DetectionOps("detectron2", roi_pool, d2_layers.nms)
    raise InputError(f"unknown backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}")
