"""U-Net.

Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (https://arxiv.org/abs/1505.04597). ``paper`` size reproduces the
published network: five levels of two 3x3 conv-ReLU layers (64, 128, 256, 512, 1024 channels),
2x2 stride-2 max-pools down (4 down / 4 up), learned 2x2 stride-2 transposed convs up that
halve the channels, skip features concatenated before each decoder level, dropout (0.5) at the
end of the contracting path, a 1x1 classifier, He-normal initialisation (the classifier keeps
PyTorch's smaller default) and no batch norm. One deliberate change: the convs are padded, so the output has the input's size and no
crop of the skip features is needed (the paper's unpadded convs map 572x572 to 388x388).
Inputs must be multiples of 16.

``tiny`` is the same graph with widths 24-24-32-64-128, batch norm after every 3x3 conv and
no dropout: a modern choice that lets the narrow network train in minutes on a CPU. Its
recipe weights the loss by class frequency (median frequency balancing), as the paper's
weight map does for its class-frequency term, and trains on 96x96 scenes: every step works at
full resolution, and at 128x128 the 4-minute training budget was not enough (BENCHMARKS.md).
The full-resolution level is the widest one relative to the paper: the classifier reads the
last decoder level, and at widths 6-12-24-48-96 its 6 channels could not even fit 16 training
images (loss 0.46 after 120 steps, where 24 channels reached 0.03); widening the deep levels
instead (24-32-64-128-256) did not help.

The contracting path is a :class:`~segexport.nn.backbone.Backbone` (:class:`UNetEncoder`,
features at reductions 1, 2, 4, 8, 16) and the expanding path is the shell's classifier
(:class:`UNetDecoder`), so the generic backbone contract holds for the U-Net too.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel
from segexport.nn.backbone import Backbone, FeatureInfo
from segexport.nn.blocks import conv_bn_relu

PAPER_WIDTHS = (64, 128, 256, 512, 1024)
TINY_WIDTHS = (24, 24, 32, 64, 128)


def double_conv(cin: int, cout: int, *, batch_norm: bool) -> nn.Sequential:
    """Two padded 3x3 convs, each followed by ReLU (conv-BN-ReLU with ``batch_norm``)."""
    if batch_norm:
        return nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class UNetEncoder(Backbone):
    """The contracting path: a double conv at full resolution, then (2x2 max-pool, double conv)
    four times. Returns the output of each of the five levels (reductions 1, 2, 4, 8, 16).

    Args:
        widths: channels of the five levels.
        batch_norm: BN after every conv (not in the paper).
    """

    def __init__(self, widths: tuple[int, ...], *, batch_norm: bool) -> None:
        super().__init__()
        stages: list[nn.Module] = [double_conv(3, widths[0], batch_norm=batch_norm)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            stages.append(
                nn.Sequential(nn.MaxPool2d(2, stride=2), double_conv(cin, cout, batch_norm=batch_norm))
            )
        self.stages = nn.ModuleList(stages)
        self.feature_info = FeatureInfo(
            channels=tuple(widths), reductions=tuple(2**i for i in range(len(widths)))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class UNetDecoder(nn.Module):
    """The expanding path: per level a learned 2x2 stride-2 transposed conv halving the
    channels, concatenation with the encoder feature of that level, a double conv; then a
    1x1 classifier.

    Args:
        widths: channels of the encoder's levels, shallowest first.
        num_classes: output classes.
        batch_norm: BN after every 3x3 conv.
        dropout: dropout on the deepest feature (the end of the contracting path).
    """

    def __init__(
        self, widths: tuple[int, ...], num_classes: int, *, batch_norm: bool, dropout: float
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Ordered deepest first, the order they run in.
        pairs = list(zip(widths[:-1], widths[1:]))[::-1]
        self.ups = nn.ModuleList(nn.ConvTranspose2d(deep, skip, 2, stride=2) for skip, deep in pairs)
        self.stages = nn.ModuleList(
            double_conv(2 * skip, skip, batch_norm=batch_norm) for skip, _ in pairs
        )
        self.cls = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.drop(feats[-1])
        skips = feats[-2::-1]
        for up, stage, skip in zip(self.ups, self.stages, skips):
            x = stage(torch.cat([skip, up(x)], dim=1))
        return self.cls(x)


def _init_he_normal(model: nn.Module) -> None:
    """The paper's initialisation: Gaussian with std sqrt(2 / fan_in), zero bias."""
    for m in model.modules():
        if m is model.classifier.cls:
            # It feeds no ReLU, and He-sized initial logits slowed the start of training
            # measurably: it keeps PyTorch's default.
            continue
        if isinstance(m, nn.ConvTranspose2d):
            # A 2x2 stride-2 transposed conv feeds each output pixel from one input pixel of
            # each channel, so its fan-in is in_channels (torch's fan rules assume overlap).
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / m.in_channels))
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@register_model(
    "unet",
    summary="U-Net: 4 down / 4 up stages, concatenated skips, learned 2x2 transposed convs",
    paper="Ronneberger et al., U-Net: Convolutional Networks for Biomedical Image Segmentation, MICCAI 2015",
)
def unet(*, size: str = "tiny", num_classes: int = 21) -> SegmentationModel:
    """U-Net (https://arxiv.org/abs/1505.04597).

    Args:
        size: "paper" (widths 64..1024, no BN, dropout 0.5) or "tiny" (widths 24..128, BN).
        num_classes: output classes.
    """
    paper = size == "paper"
    widths = PAPER_WIDTHS if paper else TINY_WIDTHS
    encoder = UNetEncoder(widths, batch_norm=not paper)
    decoder = UNetDecoder(widths, num_classes, batch_norm=not paper, dropout=0.5 if paper else 0.0)
    model = SegmentationModel(encoder, decoder, upsample_to_input=False, input_divisor=16)
    _init_he_normal(model)
    return model
