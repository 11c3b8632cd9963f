"""How the detector's arithmetic is laid out: `--kernels reference|fused`.

- `reference`: each convolution, then its frozen batch norm as a separate affine step
  (`x * scale + shift`), activations in NCHW: the order Caffe and detectron2 compute in.
- `fused`: each frozen norm folded into its convolution (weight `w * scale`, bias `shift`),
  weights and activations in channels-last layout, which oneDNN (CPU) and cuDNN (GPU) run
  without reordering. The same function, one pass over each activation fewer; in float32
  the rounding differs, by about 1e-6 relative (measured in docs/extract-rois.md). Under
  fp16/bf16 autocast the residual sums are then half precision too (unfused, the norm's
  float32 buffers lift them to float32).

Folding only touches the bottom-up-attention model's `ConvNorm` blocks (stem, res2-res5);
the torchvision model runs as it is whichever is chosen. On CUDA every model runs
channels-last.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ..choices import require_choice
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
            # FrozenBatchNorm2d computes y * scale + shift with these two [C] vectors.
            scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
            shift = norm.bias - norm.running_mean * scale
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias.clone(), requires_grad=False)
            module.norm = nn.Identity()
            folded += 1
    return folded


def check_kernels(kernels: str) -> str:
    return require_choice(kernels, KERNELS, what="kernels", option="--kernels")


def changes_arithmetic(kernels: str, model_name: str) -> bool:
    """Whether `kernels` computes `model_name` differently from the reference order."""
    return kernels == "fused" and model_name == "butd-r101"


def prepare_kernels(model: nn.Module, kernels: str, device: torch.device | None = None) -> bool:
    """Apply `kernels` to a model that is already on `device`, in place. Returns whether
    inputs should be passed channels-last: always on CUDA, where cuDNN prefers it for any
    order of arithmetic; on a CPU only with folded norms."""
    check_kernels(kernels)
    folded = fold_frozen_norms(model) if kernels == "fused" else 0
    channels_last = folded > 0 or (device is not None and device.type == "cuda")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if kernels == "fused":
        if folded:
            log.info("--kernels fused: %d frozen norms folded into their convolutions, "
                     "channels-last layout", folded)
        else:
            log.info("--kernels fused: nothing to fold in this model; it runs as it is")
    return channels_last
