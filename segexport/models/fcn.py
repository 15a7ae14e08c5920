"""FCN-32s, FCN-16s and FCN-8s.

Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015 (https://arxiv.org/abs/1411.4038). ``paper`` size reproduces the VGG16 networks:
fc6/fc7 as 7x7 and 1x1 convolutions (4096 channels), class scores at pool5, zero-initialised
skip scores at pool4 (16s, 8s) and pool3 (8s), transposed-conv upsampling initialised with
bilinear kernels. 'Same' padding replaces the paper's 100-pixel pad and crop, so the input
must be a multiple of 32. ``tiny`` is the same graph on a narrow VGG-BN backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from segexport.errors import ConfigError
from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel
from segexport.nn import build_backbone
from segexport.nn.blocks import bilinear_kernel

UPSAMPLING_MODES = ("paper", "fixed", "learned")


def bilinear_upsampler(channels: int, factor: int, *, learnable: bool) -> nn.ConvTranspose2d:
    """``ConvTranspose2d`` (kernel 2f, stride f, padding f/2, no bias) holding a bilinear kernel."""
    up = nn.ConvTranspose2d(
        channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False
    )
    up.weight.data.copy_(bilinear_kernel(channels, 2 * factor))
    up.weight.requires_grad_(learnable)
    return up


class FCNHead(nn.Module):
    """fc6 -> fc7 -> score_fr, then skip fusion at pool4/pool3 and transposed-conv upsampling.

    Args:
        feature_channels: channels of the backbone's (pool1..pool5) features.
        num_classes: output classes.
        skips: 0 (FCN-32s), 1 (FCN-16s, pool4) or 2 (FCN-8s, pool4 and pool3).
        fc_channels: channels of fc6/fc7 (4096 in the paper).
        fc6_kernel: fc6 kernel size (7 in the paper).
        upsampling: "paper" (in-network 2x upsamplers learned, the final one fixed),
            "fixed" (every upsampler frozen at its bilinear kernel) or "learned" (all learned).
        dropout: after fc6 and fc7 (0.5 in the paper).
    """

    def __init__(
        self,
        feature_channels: tuple[int, ...],
        num_classes: int,
        *,
        skips: int,
        fc_channels: int,
        fc6_kernel: int,
        upsampling: str = "paper",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if upsampling not in UPSAMPLING_MODES:
            raise ConfigError(f"upsampling must be one of {', '.join(UPSAMPLING_MODES)}, not {upsampling!r}")
        self.skips = skips
        c5 = feature_channels[4]
        self.fc6 = nn.Conv2d(c5, fc_channels, fc6_kernel, padding=fc6_kernel // 2)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(dropout)
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        learn_inner = upsampling != "fixed"
        learn_final = upsampling == "learned"
        self.score_pools = nn.ModuleList()
        self.upscores = nn.ModuleList()
        for i in range(skips):
            score = nn.Conv2d(feature_channels[3 - i], num_classes, 1)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.score_pools.append(score)
            self.upscores.append(bilinear_upsampler(num_classes, 2, learnable=learn_inner))
        self.upscore_final = bilinear_upsampler(num_classes, 32 >> skips, learnable=learn_final)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.drop(self.relu(self.fc6(feats[4])))
        x = self.drop(self.relu(self.fc7(x)))
        x = self.score_fr(x)
        for i in range(self.skips):
            x = self.upscores[i](x) + self.score_pools[i](feats[3 - i])
        return self.upscore_final(x)


def _build_fcn(
    skips: int, size: str, num_classes: int, upsampling: str
) -> SegmentationModel:
    if size == "paper":
        backbone = build_backbone("vgg16")
        fc_channels, fc6_kernel, dropout = 4096, 7, 0.5
    else:
        backbone = build_backbone("vgg_tiny")
        # 128-channel fc layers cannot afford the paper's 50% dropout.
        fc_channels, fc6_kernel, dropout = 128, 3, 0.1
    head = FCNHead(
        backbone.feature_info.channels,
        num_classes,
        skips=skips,
        fc_channels=fc_channels,
        fc6_kernel=fc6_kernel,
        upsampling=upsampling,
        dropout=dropout,
    )
    return SegmentationModel(backbone, head, upsample_to_input=False, input_divisor=32)


_PAPER = "Long et al., Fully Convolutional Networks for Semantic Segmentation, CVPR 2015"


@register_model("fcn32s", summary="FCN-32s: VGG16, scores at pool5, 32x bilinear-initialised deconv", paper=_PAPER)
def fcn32s(*, size: str = "tiny", num_classes: int = 21, upsampling: str = "paper") -> SegmentationModel:
    """FCN-32s (https://arxiv.org/abs/1411.4038)."""
    return _build_fcn(0, size, num_classes, upsampling)


@register_model("fcn16s", summary="FCN-16s: FCN-32s plus a pool4 skip", paper=_PAPER)
def fcn16s(*, size: str = "tiny", num_classes: int = 21, upsampling: str = "paper") -> SegmentationModel:
    """FCN-16s (https://arxiv.org/abs/1411.4038)."""
    return _build_fcn(1, size, num_classes, upsampling)


@register_model("fcn8s", summary="FCN-8s: FCN-16s plus a pool3 skip, 8x deconv", paper=_PAPER)
def fcn8s(*, size: str = "tiny", num_classes: int = 21, upsampling: str = "paper") -> SegmentationModel:
    """FCN-8s (https://arxiv.org/abs/1411.4038)."""
    return _build_fcn(2, size, num_classes, upsampling)
