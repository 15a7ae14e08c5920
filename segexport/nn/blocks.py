"""Shared layers: conv-BN-ReLU, depthwise-separable conv, ASPP, bilinear kernels.

Sequential containers keep torchvision's layouts (``.0`` conv, ``.1`` BN) so heads built from
them share torchvision's state-dict keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, *, dilation: int = 1) -> nn.Sequential:
    """``Conv2d(no bias) -> BatchNorm2d -> ReLU`` with 'same' padding."""
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def separable_conv_bn_relu(cin: int, cout: int, kernel: int = 3, *, dilation: int = 1) -> nn.Sequential:
    """Depthwise conv -> pointwise conv -> BN -> ReLU (DeepLabv3+'s atrous separable conv)."""
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cin, kernel, padding=pad, dilation=dilation, groups=cin, bias=False),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ImagePooling(nn.Sequential):
    """Adaptive average pool to ``bins x bins`` -> 1x1 conv-BN-ReLU -> bilinear resize back.

    ``bins=1`` is ASPP's image-level branch; larger ``bins`` are PSPNet's pyramid levels.
    """

    def __init__(self, cin: int, cout: int, bins: int = 1) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(bins),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with image pooling (DeepLabv3), torchvision's key layout.

    Args:
        cin: input channels.
        rates: dilation of each 3x3 branch (a 1x1 branch and image pooling are always added).
        cout: channels of every branch and of the projection.
        separable: depthwise-separable 3x3 branches (DeepLabv3+).
        dropout: dropout after the projection.
    """

    def __init__(
        self,
        cin: int,
        rates: Sequence[int],
        cout: int = 256,
        *,
        separable: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branch = separable_conv_bn_relu if separable else conv_bn_relu
        convs: list[nn.Module] = [conv_bn_relu(cin, cout, 1)]
        convs += [branch(cin, cout, 3, dilation=r) for r in rates]
        convs.append(ImagePooling(cin, cout))
        self.convs = nn.ModuleList(convs)
        self.project = nn.Sequential(
            nn.Conv2d(cout * len(convs), cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Channel-diagonal bilinear upsampling kernel ``[C, C, k, k]`` (the FCN initialisation).

    Used with ``ConvTranspose2d(C, C, k, stride=k // 2, padding=k // 4)`` it interpolates
    bilinearly by a factor ``k // 2``.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - center).abs() / factor
    filt = (filt1d[:, None] * filt1d[None, :]).float()
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    idx = torch.arange(channels)
    weight[idx, idx] = filt
    return weight
