"""DeepLabv3.

Chen, Papandreou, Schroff and Adam, "Rethinking Atrous Convolution for Semantic Image
Segmentation", 2017 (https://arxiv.org/abs/1706.05587). ``paper`` size reproduces the
ResNet-101 network at output stride 16 (the paper's training configuration): multi-grid
(1, 2, 4) in ``layer4``, so its three blocks use dilations (2, 4, 8); ASPP with a 1x1 branch,
three 3x3 atrous branches at rates 6/12/18 and image pooling, each 256 channels with batch
norm, concatenated and projected by a 1x1 conv-BN-ReLU; then a 1x1 classifier. At output
stride 8 the rates double (12/24/36), as in the paper. ResNet-50 is available too. The
projection's dropout is 0.1 (the released TensorFlow code; the paper names none).

``tiny`` is the same graph on ``resnet_tiny`` with 64-channel ASPP and rates 2/4/6. Its
``layer4`` has a single block, so it cannot take the three-rate multi-grid and keeps
torchvision's dilation rule (a stage's first block keeps the previous dilation, so at OS16
that block runs undilated, as in the tiny deeplabv3p). The torchvision-compatible DeepLabV3
models (3x3 conv head, no multi-grid, OS8) live in ``torchvision_compat``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from segexport.errors import ConfigError
from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel, choose_backbone
from segexport.models.torchvision_compat import FeatureHead
from segexport.nn import build_backbone
from segexport.nn.blocks import ASPP

PAPER_BACKBONES = ("resnet101", "resnet50")
TINY_BACKBONES = ("resnet_tiny",)
MULTI_GRID = (1, 2, 4)
PAPER_RATES = (6, 12, 18)
# Tiny models see 128x128 inputs, an 8x8 map at OS16, where rates 12 and 18 would only read
# zero padding; the rates shrink by 3, the same scaling as the tiny deeplabv3p.
TINY_RATES = (2, 4, 6)


def scaled_rates(arch: str, output_stride: int, rates_at_16: Sequence[int]) -> tuple[int, ...]:
    """ASPP rates at ``output_stride``, given those at 16: DeepLabv3 doubles them at 8.

    Raises:
        ConfigError: an output stride other than 8 or 16.
    """
    if output_stride not in (8, 16):
        raise ConfigError(f"{arch} supports output stride 8 or 16, not {output_stride}")
    return tuple(r * (16 // output_stride) for r in rates_at_16)


def deeplabv3_head(cin: int, num_classes: int, *, rates: Sequence[int], channels: int) -> FeatureHead:
    """ASPP (with its 1x1 projection) on the deepest feature, then a 1x1 classifier."""
    return FeatureHead(-1, ASPP(cin, rates, channels, dropout=0.1), nn.Conv2d(channels, num_classes, 1))


@register_model(
    "deeplabv3",
    summary="DeepLabv3: ResNet with multi-grid, ASPP with BN and image pooling (OS16)",
    paper="Chen et al., Rethinking Atrous Convolution for Semantic Image Segmentation, 2017",
    backbones=PAPER_BACKBONES + TINY_BACKBONES,
    default_backbone={"paper": "resnet101", "tiny": "resnet_tiny"},
)
def deeplabv3(
    *,
    size: str = "tiny",
    num_classes: int = 21,
    backbone: str | None = None,
    output_stride: int = 16,
) -> SegmentationModel:
    """DeepLabv3 (https://arxiv.org/abs/1706.05587).

    Args:
        size: "paper" (multi-grid (1, 2, 4), 256-channel ASPP, rates 6/12/18 at OS16) or "tiny".
        num_classes: output classes.
        backbone: one of PAPER_BACKBONES (paper) or TINY_BACKBONES (tiny).
        output_stride: 16 (the paper's default) or 8 (rates doubled).

    Raises:
        ConfigError: a backbone of the other size or an unsupported output stride.
    """
    paper = size == "paper"
    name = choose_backbone("deeplabv3", size, backbone, PAPER_BACKBONES, TINY_BACKBONES)
    rates = scaled_rates("deeplabv3", output_stride, PAPER_RATES if paper else TINY_RATES)
    body = build_backbone(name, output_stride=output_stride, multi_grid=MULTI_GRID if paper else None)
    info = body.feature_info
    head = deeplabv3_head(info.channels[-1], num_classes, rates=rates, channels=256 if paper else 64)
    return SegmentationModel(body, head, input_divisor=info.output_stride)
