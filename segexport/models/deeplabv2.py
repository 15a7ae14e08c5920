"""DeepLab v2 (ASPP-L on ResNet-101).

Chen, Papandreou, Kokkinos, Murphy and Yuille, "DeepLab: Semantic Image Segmentation with
Deep Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2017
(https://arxiv.org/abs/1606.00915). ``paper`` size reproduces the ResNet-101 network with
ASPP-L: the trunk at output stride 8 (``layer3`` dilated by 2, ``layer4`` by 4) and four
parallel 3x3 atrous convolutions with rates 6, 12, 18 and 24, each producing class scores
directly from the 2048-channel feature, summed; the shell resizes the stride-8 scores
bilinearly to the input size. Not included: the multi-scale input fusion (MSC), COCO
pre-training and the fully connected CRF, a host-side post-process. The trunk is
torchvision's ResNet v1.5 (stride on the 3x3 conv) rather than the original Caffe ResNet.
ResNet-50 is available as a cheaper trunk.

``tiny`` is the same graph on ``resnet_tiny`` at output stride 8 with rates 2/4/6/8: a 128x128
input gives a 16x16 map, where a rate of 24 would only ever touch zero padding; the rates
shrink by 3, the same scaling as the tiny deeplabv3 and deeplabv3p.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel, choose_backbone
from segexport.nn import build_backbone

PAPER_BACKBONES = ("resnet101", "resnet50")
TINY_BACKBONES = ("resnet_tiny",)
PAPER_RATES = (6, 12, 18, 24)
TINY_RATES = (2, 4, 6, 8)


class ASPPv2(nn.Module):
    """DeepLab v2's ASPP: parallel 3x3 atrous convs to class scores, summed (no BN, no projection).

    Args:
        cin: channels of the deepest feature.
        num_classes: output classes.
        rates: dilation of each branch.
    """

    def __init__(self, cin: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(cin, num_classes, 3, padding=r, dilation=r) for r in rates
        )
        for conv in self.branches:
            # Small weights so that the sum of four branches starts near zero, not four times
            # the scale of one randomly initialised classifier.
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


@register_model(
    "deeplabv2",
    summary="DeepLab v2: ResNet-101 at OS8, ASPP-L rates 6/12/18/24 summed",
    paper=(
        "Chen et al., DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, "
        "Atrous Convolution, and Fully Connected CRFs, TPAMI 2017"
    ),
    backbones=PAPER_BACKBONES + TINY_BACKBONES,
    default_backbone={"paper": "resnet101", "tiny": "resnet_tiny"},
)
def deeplabv2(*, size: str = "tiny", num_classes: int = 21, backbone: str | None = None) -> SegmentationModel:
    """DeepLab v2 ASPP-L (https://arxiv.org/abs/1606.00915); output stride 8 by definition.

    Args:
        size: "paper" (rates 6/12/18/24) or "tiny" (rates 2/4/6/8).
        num_classes: output classes.
        backbone: one of PAPER_BACKBONES (paper) or TINY_BACKBONES (tiny).

    Raises:
        ConfigError: a backbone of the other size.
    """
    paper = size == "paper"
    name = choose_backbone("deeplabv2", size, backbone, PAPER_BACKBONES, TINY_BACKBONES)
    body = build_backbone(name, output_stride=8)
    head = ASPPv2(body.feature_info.channels[-1], num_classes, PAPER_RATES if paper else TINY_RATES)
    return SegmentationModel(body, head, input_divisor=body.feature_info.output_stride)
