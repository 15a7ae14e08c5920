"""Aligned Xception backbones as modified for DeepLabv3+.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation", https://arxiv.org/abs/1802.02611 (section 3.2), after Chollet's Xception
(https://arxiv.org/abs/1610.02357) and the aligned Xception of Deformable ConvNets. As in the
reference (TensorFlow ``deeplab/core/xception.py``): every max-pool is replaced by a strided
separable conv, each depthwise conv is followed by batch norm, the middle flow has 16 units,
and a unit's stride sits on its last separable conv. Below output stride 32, units trade
stride for dilation; the first unit of a dilated stage keeps the previous dilation.

There is no torchvision equivalent, so the key names are segexport's own: ``stem``,
``entry1``..``entry3``, ``middle.N``, ``exit1``, ``exit2``.
"""

from __future__ import annotations

import torch
from torch import nn

from segexport.errors import ConfigError
from segexport.nn.backbone import Backbone, FeatureInfo, dilated_stages

OUTPUT_STRIDES = (8, 16, 32)
_NOMINAL_REDUCTIONS = (4, 8, 16, 32)


class SeparableConv(nn.Module):
    """3x3 depthwise conv + BN, then 1x1 pointwise conv + BN; optional ReLU after each BN."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, relu: bool = False) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, dilation, dilation=dilation, groups=cin, bias=False)
        self.bn_depthwise = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_pointwise = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn_depthwise(self.depthwise(x)))
        return self.act(self.bn_pointwise(self.pointwise(x)))


class XceptionUnit(nn.Module):
    """Three separable convs and a shortcut (``"conv"``: 1x1 conv + BN, ``"sum"``, ``"none"``).

    With ``relu_inside=False`` (entry and middle flow) a ReLU precedes each separable conv; with
    True (the last exit unit) ReLUs follow each BN inside the separable convs instead.
    """

    def __init__(
        self,
        cin: int,
        depths: tuple[int, int, int],
        *,
        stride: int = 1,
        dilation: int = 1,
        skip: str = "conv",
        relu_inside: bool = False,
    ) -> None:
        super().__init__()
        self.pre_relu = not relu_inside
        self.relu = nn.ReLU()  # not in place: the input is also the shortcut
        widths = (cin, *depths)
        self.convs = nn.ModuleList(
            SeparableConv(widths[i], widths[i + 1], stride if i == 2 else 1, dilation, relu_inside) for i in range(3)
        )
        self.add_input = skip == "sum"
        self.shortcut = None
        if skip == "conv":
            self.shortcut = nn.Sequential(nn.Conv2d(cin, depths[2], 1, stride, bias=False), nn.BatchNorm2d(depths[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.convs:
            out = conv(self.relu(out) if self.pre_relu else out)
        if self.shortcut is not None:
            return out + self.shortcut(x)
        return out + x if self.add_input else out


class Xception(Backbone):
    """Aligned Xception trunk returning features at reductions 4, 8, 16, 32.

    The features are the outputs of ``entry1`` (the decoder's low-level feature), ``entry2``,
    the middle flow and ``exit2``.

    Args:
        stem: channels of the two stem convs (3x3 stride 2, 3x3).
        entry: depth of the three entry units (each stride 2).
        middle_units: number of middle-flow units (16 in Xception-65).
        exit_depths: depths of the two exit units (the first strided, the second without shortcut).
        output_stride: 8, 16 or 32.

    Raises:
        ConfigError: for an unsupported output stride or no middle unit.
    """

    def __init__(
        self,
        stem: tuple[int, int] = (32, 64),
        entry: tuple[int, int, int] = (128, 256, 728),
        middle_units: int = 16,
        exit_depths: tuple[tuple[int, int, int], tuple[int, int, int]] = ((728, 1024, 1024), (1536, 1536, 2048)),
        *,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ConfigError(f"Xception supports output stride {OUTPUT_STRIDES}, got {output_stride}")
        if middle_units < 1:
            raise ConfigError(f"Xception needs at least one middle-flow unit, got {middle_units}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem[0], 3, 2, 1, bias=False), nn.BatchNorm2d(stem[0]), nn.ReLU(inplace=True),
            nn.Conv2d(stem[0], stem[1], 3, 1, 1, bias=False), nn.BatchNorm2d(stem[1]), nn.ReLU(inplace=True),
        )  # fmt: skip
        dilate = dilated_stages(_NOMINAL_REDUCTIONS, output_stride)
        # (stride, dilation of the stage's first unit, dilation of the rest) per stage
        plan, dilation = [], 1
        for flag in dilate:
            plan.append((1, dilation, dilation * 2) if flag else (2, dilation, dilation))
            dilation = plan[-1][2]
        self.entry1 = XceptionUnit(stem[1], (entry[0],) * 3, stride=plan[0][0], dilation=plan[0][1])
        self.entry2 = XceptionUnit(entry[0], (entry[1],) * 3, stride=plan[1][0], dilation=plan[1][1])
        self.entry3 = XceptionUnit(entry[1], (entry[2],) * 3, stride=plan[2][0], dilation=plan[2][1])
        self.middle = nn.Sequential(
            *(XceptionUnit(entry[2], (entry[2],) * 3, dilation=plan[2][2], skip="sum") for _ in range(middle_units))
        )
        self.exit1 = XceptionUnit(entry[2], exit_depths[0], stride=plan[3][0], dilation=plan[3][1])
        self.exit2 = XceptionUnit(exit_depths[0][2], exit_depths[1], dilation=plan[3][2], skip="none", relu_inside=True)
        self.feature_info = FeatureInfo(
            channels=(entry[0], entry[1], entry[2], exit_depths[1][2]),
            reductions=tuple(min(r, output_stride) for r in _NOMINAL_REDUCTIONS),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.entry1(self.stem(x))
        c2 = self.entry2(c1)
        c3 = self.middle(self.entry3(c2))
        c4 = self.exit2(self.exit1(c3))
        return [c1, c2, c3, c4]


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def xception65(*, output_stride: int = 32) -> Xception:
    """Aligned Xception-65 of DeepLabv3+ (https://arxiv.org/abs/1802.02611); channels 128, 256, 728, 2048."""
    return Xception(output_stride=output_stride)


def xception_tiny(*, output_stride: int = 32) -> Xception:
    """Narrow Xception with two middle units for fast CPU training; channels 16, 32, 64, 128."""
    return Xception((8, 16), (16, 32, 64), 2, ((64, 96, 96), (128, 128, 128)), output_stride=output_stride)
