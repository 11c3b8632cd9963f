"""How the detector's arithmetic is laid out: `--kernels reference|fused`.

- `reference`: each convolution, then its frozen batch norm as a separate affine step
  (`x * scale + shift`), activations in NCHW: the order Caffe and detectron2 compute in.
- `fused`: each frozen norm folded into its convolution (weight `w * scale`, bias `shift`),
  weights and activations in channels-last layout, which oneDNN (CPU) and cuDNN (GPU) run
  without reordering. The same function, one pass over each activation fewer; float32
  rounding differs, by about 1e-6 relative (measured in docs/extract-rois.md).

Folding only touches the bottom-up-attention model's `ConvNorm` blocks (stem, res2-res5);
the torchvision model runs as it is whichever is chosen.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .backbone import ConvNorm

log = logging.getLogger(__name__)

KERNELS = ("reference", "fused")


def fold_frozen_norms(model: nn.Module) -> int:
    """Fold every `ConvNorm`'s frozen norm into its convolution, in place; the norm becomes
    an identity. Returns how many were folded (0 when there is nothing to fold)."""
    folded = 0
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, ConvNorm) or not isinstance(module.norm, FrozenBatchNorm2d):
                continue
            conv, norm = module.conv, module.norm
            # FrozenBatchNorm2d computes x * scale + shift with these two [C] vectors.
            scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
            shift = norm.bias - norm.running_mean * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(shift.clone(), requires_grad=False)  # ConvNorm: bias-free
            module.norm = nn.Identity()
            folded += 1
    return folded


def prepare_kernels(model: nn.Module, kernels: str) -> bool:
    """Apply `kernels` to a model that is already on its device, in place. Returns whether
    inputs should be passed channels-last."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, not {kernels!r}")
    if kernels == "reference":
        return False
    folded = fold_frozen_norms(model)
    if folded == 0:
        log.info("--kernels fused: nothing to fold in this model; it runs as it is")
        return False
    model.to(memory_format=torch.channels_last)
    log.info("--kernels fused: %d frozen norms folded into their convolutions, "
             "channels-last layout", folded)
    return True
