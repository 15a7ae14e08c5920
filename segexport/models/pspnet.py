"""PSPNet.

Zhao, Shi, Qi, Wang and Jia, "Pyramid Scene Parsing Network", CVPR 2017
(https://arxiv.org/abs/1612.01105). ``paper`` size reproduces the ResNet-50 network of the
paper's ablations: a dilated ResNet at output stride 8, the pyramid pooling module (adaptive
average pooling to 1x1, 2x2, 3x3 and 6x6 bins, each reduced by a 1x1 conv-BN-ReLU to a quarter
of the 2048 channels, resized bilinearly and concatenated with the feature), a 3x3
conv-BN-ReLU to 512 channels, dropout 0.1 and a 1x1 classifier; plus the deeply supervised
auxiliary head on ``layer3`` (res4b22), weighted 0.4 in the loss (the recipe's
``aux_weight``) and used in training only. ResNet-101 is available too. Differences from the
released Caffe model: torchvision's ResNet v1.5 trunk (7x7 stem, stride on the 3x3 conv)
instead of the paper's deep-stem ResNet, and ``align_corners=False`` resizes.

The pooling stays ``nn.AdaptiveAvgPool2d``; a deployment rewrite replaces it with fixed
pooling for a static input shape, including bins that do not divide the feature map.
``tiny`` is the same graph on ``resnet_tiny`` with a narrow pyramid and bottleneck.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segexport.errors import ConfigError
from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel, choose_backbone
from segexport.models.torchvision_compat import fcn_head
from segexport.nn import build_backbone
from segexport.nn.blocks import ImagePooling, conv_bn_relu

PAPER_BACKBONES = ("resnet50", "resnet101")
TINY_BACKBONES = ("resnet_tiny",)
BINS = (1, 2, 3, 6)
OUTPUT_STRIDES = (8, 16)


class PyramidPooling(nn.Module):
    """Pool the feature to each bin size, reduce, resize back and concatenate with the input.

    Args:
        cin: input channels.
        bins: output sizes of the adaptive average pools (1, 2, 3, 6 in the paper).
        branch_channels: channels of each pooled branch (``cin / len(bins)`` in the paper).
    """

    def __init__(self, cin: int, bins: Sequence[int] = BINS, branch_channels: int | None = None) -> None:
        super().__init__()
        width = branch_channels or cin // len(bins)
        self.stages = nn.ModuleList(ImagePooling(cin, width, b) for b in bins)
        self.out_channels = cin + width * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [stage(x) for stage in self.stages], dim=1)


class PSPHead(nn.Module):
    """Pyramid pooling on the deepest feature, 3x3 conv-BN-ReLU, dropout, 1x1 classifier."""

    def __init__(self, cin: int, num_classes: int, *, branch_channels: int, channels: int) -> None:
        super().__init__()
        self.ppm = PyramidPooling(cin, BINS, branch_channels)
        self.bottleneck = conv_bn_relu(self.ppm.out_channels, channels, 3)
        self.dropout = nn.Dropout(0.1)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.cls(self.dropout(self.bottleneck(self.ppm(feats[-1]))))


@register_model(
    "pspnet",
    summary="PSPNet: dilated ResNet (OS8), pyramid pooling bins 1/2/3/6, auxiliary head",
    paper="Zhao et al., Pyramid Scene Parsing Network, CVPR 2017",
    backbones=PAPER_BACKBONES + TINY_BACKBONES,
    default_backbone={"paper": "resnet50", "tiny": "resnet_tiny"},
)
def pspnet(
    *,
    size: str = "tiny",
    num_classes: int = 21,
    backbone: str | None = None,
    output_stride: int = 8,
) -> SegmentationModel:
    """PSPNet (https://arxiv.org/abs/1612.01105).

    Args:
        size: "paper" (512-channel pyramid branches and bottleneck) or "tiny".
        num_classes: output classes.
        backbone: one of PAPER_BACKBONES (paper) or TINY_BACKBONES (tiny).
        output_stride: 8 (the paper) or 16 (cheaper; not in the paper).

    Raises:
        ConfigError: a backbone of the other size or an unsupported output stride.
    """
    paper = size == "paper"
    name = choose_backbone("pspnet", size, backbone, PAPER_BACKBONES, TINY_BACKBONES)
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"pspnet supports output stride 8 (the paper) or 16, not {output_stride}")
    body = build_backbone(name, output_stride=output_stride)
    info = body.feature_info
    # Paper: 2048 -> four 512-channel branches -> 512. Tiny keeps the ratios
    # of the branches but a narrower bottleneck, since the 3x3 conv over the concatenation
    # at output stride 8 dominates the head's cost.
    branch, bottleneck = (512, 512) if paper else (32, 48)
    head = PSPHead(info.channels[-1], num_classes, branch_channels=branch, channels=bottleneck)
    # The paper's auxiliary head is torchvision's FCNHead (3x3 conv to a quarter, dropout 0.1).
    aux = fcn_head(info.channels[2], num_classes, feature_index=2)
    return SegmentationModel(body, head, aux_classifier=aux, input_divisor=info.output_stride)
