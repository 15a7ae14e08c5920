"""MobileNetV2 backbones with torchvision's ``features.0`` .. ``features.18`` keys.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
https://arxiv.org/abs/1801.04381. Module names and shapes follow
``torchvision.models.mobilenet_v2``, so its state dict without ``classifier.*`` loads with
``strict=True``.

The five features are the outputs of the last block at each reduction (2, 4, 8, 16, 32):
``features.1``, ``.3``, ``.6``, ``.13`` and ``.17``. The deepest is the 320-channel output
of the last inverted residual, as DeepLabv3+ and timm use it; ``features.18`` (the 1x1 conv
to 1280 channels that feeds torchvision's classifier) is kept so torchvision checkpoints load
strictly, but it is not run. Below output stride 32, stages trade stride for dilation of their
depthwise convs; as in ResNet, the first block of a dilated stage keeps the previous dilation.
"""

from __future__ import annotations

import torch
from torch import nn

from segexport.errors import ConfigError
from segexport.nn.backbone import Backbone, FeatureInfo, dilated_stages

OUTPUT_STRIDES = (8, 16, 32)
_NOMINAL_REDUCTIONS = (2, 4, 8, 16, 32)
# expansion t, channels c, repeats n, stride s of each group (torchvision's table)
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_FEATURE_INDICES = (1, 3, 6, 13, 17)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels as torchvision (and the TF reference) do: to a multiple of ``divisor``,
    never more than 10% below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNReLU6(nn.Sequential):
    """torchvision's ``Conv2dNormActivation`` with ReLU6 (keys ``0`` conv, ``1`` BN)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3, strided or dilated), linear project (1x1)."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(Backbone):
    """MobileNetV2 trunk returning features at reductions 2, 4, 8, 16, 32.

    Args:
        width_mult: channel multiplier (1.0 is the paper's network).
        output_stride: 8, 16 or 32.

    Raises:
        ConfigError: for an unsupported output stride or a non-positive width multiplier.
    """

    def __init__(self, width_mult: float = 1.0, *, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ConfigError(f"MobileNetV2 supports output stride {OUTPUT_STRIDES}, got {output_stride}")
        if width_mult <= 0:
            raise ConfigError(f"width_mult must be positive, got {width_mult}")
        # stage k (reduction 2**(k+1)) is entered by the k-th stride-2 layer: stem, then groups
        dilate = iter(dilated_stages(_NOMINAL_REDUCTIONS, output_stride)[1:])
        cin = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
        dilation = 1
        for t, c, n, s in _SETTING:
            cout = make_divisible(c * width_mult)
            first_dilation = dilation
            if s == 2 and next(dilate):
                dilation, s = dilation * 2, 1
            layers.append(InvertedResidual(cin, cout, s, t, first_dilation))
            layers += [InvertedResidual(cout, cout, 1, t, dilation) for _ in range(n - 1)]
            cin = cout
        layers.append(ConvBNReLU6(cin, make_divisible(1280 * max(1.0, width_mult)), kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.feature_info = FeatureInfo(
            channels=tuple(_out_channels(self.features[i]) for i in _FEATURE_INDICES),
            reductions=tuple(min(r, output_stride) for r in _NOMINAL_REDUCTIONS),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features[: _FEATURE_INDICES[-1] + 1]):
            x = layer(x)
            if i in _FEATURE_INDICES:
                outs.append(x)
        return outs


def _out_channels(block: nn.Module) -> int:
    return [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: He-normal (fan_out) convs, unit BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def mobilenet_v2(*, output_stride: int = 32) -> MobileNetV2:
    """MobileNetV2 (https://arxiv.org/abs/1801.04381); channels 16, 24, 32, 96, 320."""
    return MobileNetV2(1.0, output_stride=output_stride)


def mobilenet_v2_tiny(*, output_stride: int = 32) -> MobileNetV2:
    """MobileNetV2 at width 0.35 for fast CPU training; channels 8, 8, 16, 32, 112."""
    return MobileNetV2(0.35, output_stride=output_stride)
