"""DeepLabv3+.

Chen, Zhu, Papandreou, Schroff and Adam, "Encoder-Decoder with Atrous Separable Convolution
for Semantic Image Segmentation", ECCV 2018 (https://arxiv.org/abs/1802.02611). ``paper``
size reproduces the ResNet variant at output stride 16: ASPP (1x1, three atrous separable 3x3
branches at rates 6/12/18, image pooling; 256 channels) and the decoder that fuses the
4x-upsampled encoder output with a 48-channel projection of the stride-4 features, two 3x3
separable convs, then a 4x bilinear resize. ``tiny`` keeps the graph on a narrow ResNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import ConfigError
from segexport.models.deeplabv3 import scaled_rates
from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel, choose_backbone
from segexport.nn import build_backbone
from segexport.nn.blocks import ASPP, conv_bn_relu, separable_conv_bn_relu

PAPER_BACKBONES = ("resnet50", "resnet101", "xception65", "mobilenet_v2")
TINY_BACKBONES = ("resnet_tiny", "xception_tiny", "mobilenet_v2_tiny")


class DeepLabV3PlusHead(nn.Module):
    """ASPP on the deepest feature, decoder with a projected stride-4 skip.

    Args:
        high_channels: channels of the deepest backbone feature.
        low_channels: channels of the stride-4 feature.
        low_index: index of the stride-4 feature in the backbone's list.
        num_classes: output classes.
        rates: ASPP atrous rates at the backbone's output stride.
        aspp_channels, low_channels_out, decoder_channels: widths (256, 48, 256 in the paper).
    """

    def __init__(
        self,
        high_channels: int,
        low_channels: int,
        low_index: int,
        num_classes: int,
        *,
        rates: Sequence[int],
        aspp_channels: int = 256,
        low_channels_out: int = 48,
        decoder_channels: int = 256,
    ) -> None:
        super().__init__()
        self.low_index = low_index
        self.aspp = ASPP(high_channels, rates, aspp_channels, separable=True, dropout=0.1)
        self.project_low = conv_bn_relu(low_channels, low_channels_out, 1)
        self.decoder = nn.Sequential(
            separable_conv_bn_relu(aspp_channels + low_channels_out, decoder_channels),
            separable_conv_bn_relu(decoder_channels, decoder_channels),
        )
        self.cls = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        low = self.project_low(feats[self.low_index])
        high = self.aspp(feats[-1])
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.cls(self.decoder(torch.cat([high, low], dim=1)))


@register_model(
    "deeplabv3p",
    summary="DeepLabv3+: ASPP encoder, decoder with 48-ch stride-4 skip, separable convs",
    paper="Chen et al., Encoder-Decoder with Atrous Separable Convolution, ECCV 2018",
    backbones=PAPER_BACKBONES + TINY_BACKBONES,
    default_backbone={"paper": "resnet50", "tiny": "resnet_tiny"},
)
def deeplabv3p(
    *,
    size: str = "tiny",
    num_classes: int = 21,
    backbone: str | None = None,
    output_stride: int = 16,
) -> SegmentationModel:
    """DeepLabv3+ (https://arxiv.org/abs/1802.02611).

    Args:
        size: "paper" (256-channel ASPP/decoder, rates 6/12/18 at OS16) or "tiny".
        num_classes: output classes.
        backbone: one of PAPER_BACKBONES (paper) or TINY_BACKBONES (tiny).
        output_stride: 16 (paper default) or 8.
    """
    paper = size == "paper"
    name = choose_backbone("deeplabv3p", size, backbone, PAPER_BACKBONES, TINY_BACKBONES)
    body = build_backbone(name, output_stride=output_stride)
    info = body.feature_info
    if 4 not in info.reductions:
        raise ConfigError(f"backbone {name} has no stride-4 feature for the decoder")
    widths = (256, 48, 256) if paper else (64, 16, 64)
    # Tiny models see 128x128 inputs: an 8x8 map at OS16, so the paper's rates would only
    # ever touch zero padding; scale them to the feature map.
    rates = scaled_rates("deeplabv3p", output_stride, (6, 12, 18) if paper else (2, 4, 6))
    head = DeepLabV3PlusHead(
        info.channels[-1],
        info.channels[info.reductions.index(4)],
        info.reductions.index(4),
        num_classes,
        rates=rates,
        aspp_channels=widths[0],
        low_channels_out=widths[1],
        decoder_channels=widths[2],
    )
    return SegmentationModel(body, head, input_divisor=info.output_stride)
