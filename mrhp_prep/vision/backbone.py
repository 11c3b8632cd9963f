"""The ResNet body of the bottom-up-attention detector, in its Caffe form.

The detector is a "C4" Faster R-CNN: the stem and stages res2-res4 run once per image
(stride 16, 1024 channels); stage res5 runs once per region on the pooled 14x14 crop.
Differences from torchvision's ResNet, all inherited from the Caffe model the weights
were trained as:

- batch norm is a fixed affine layer (running statistics folded in at load time);
- the stride of a block sits in its first 1x1 convolution, not in the 3x3 one;
- the stem's max pool has no padding and rounds its output size up;
- res5 keeps stride 1 and dilates its 3x3 convolutions by 2, so a 14x14 crop stays 14x14.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

# Blocks per stage (res2, res3, res4, res5) for the depths the Caffe models came in.
RESNET_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class ConvNorm(nn.Sequential):
    """A bias-free convolution followed by a frozen batch norm (`.conv`, `.norm`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, bias=False)
        self.norm = FrozenBatchNorm2d(out_channels)


class Bottleneck(nn.Module):
    """1x1 (carries the stride) -> 3x3 (may be dilated) -> 1x1, plus a projection shortcut
    when the shape changes. Input [N, in_channels, H, W] -> [N, out_channels, H/s, W/s]."""

    def __init__(self, in_channels: int, bottleneck_channels: int, out_channels: int, *,
                 stride: int = 1, dilation: int = 1):
        super().__init__()
        self.shortcut = (ConvNorm(in_channels, out_channels, 1, stride=stride)
                         if in_channels != out_channels or stride != 1 else None)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, stride=stride)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, 3,
                              padding=dilation, dilation=dilation)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        # In place: on 300 regions this tensor is ~0.5 GB, and a new one per block costs
        # more than the addition (the sum is the same either way).
        out += self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out)


def make_stage(num_blocks: int, in_channels: int, bottleneck_channels: int, out_channels: int,
               *, first_stride: int, dilation: int = 1) -> nn.Sequential:
    blocks = []
    for index in range(num_blocks):
        blocks.append(Bottleneck(in_channels, bottleneck_channels, out_channels,
                                 stride=first_stride if index == 0 else 1, dilation=dilation))
        in_channels = out_channels
    return nn.Sequential(*blocks)


class CaffeStem(nn.Module):
    """7x7/2 convolution, ReLU, 3x3/2 max pool without padding (ceil mode): stride 4."""

    def __init__(self, out_channels: int = 64):
        super().__init__()
        self.conv1 = ConvNorm(3, out_channels, 7, stride=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)


class ResNetC4Body(nn.Module):
    """Stem, res2, res3, res4. Input [N, 3, H, W] BGR minus the pixel mean, output
    [N, 1024, ~H/16, ~W/16] (the `res4` map the RPN and the RoI pooling read)."""

    stride = 16
    out_channels = 1024

    def __init__(self, depth: int = 101):
        super().__init__()
        if depth not in RESNET_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_BLOCKS)}, not {depth}")
        blocks = RESNET_BLOCKS[depth]
        self.stem = CaffeStem(64)
        self.res2 = make_stage(blocks[0], 64, 64, 256, first_stride=1)
        self.res3 = make_stage(blocks[1], 256, 128, 512, first_stride=2)
        self.res4 = make_stage(blocks[2], 512, 256, 1024, first_stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res4(self.res3(self.res2(self.stem(x))))


def make_res5_head(depth: int = 101, *, dilation: int = 2) -> nn.Sequential:
    """res5 as a per-region head: [R, 1024, 14, 14] -> [R, 2048, 14, 14].

    With `dilation=2` (the Caffe model) the stage keeps stride 1; with `dilation=1` it
    downsamples by 2, as torchvision/detectron2 C4 heads do.
    """
    stride = 1 if dilation > 1 else 2
    return make_stage(RESNET_BLOCKS[depth][3], 1024, 512, 2048, first_stride=stride,
                      dilation=dilation)
