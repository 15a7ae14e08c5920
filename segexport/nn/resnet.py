"""ResNet backbones with torchvision's module names, minus the classifier.

He et al., "Deep Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385.

Module names and shapes follow ``torchvision.models.resnet`` exactly (``conv1``, ``bn1``,
``layer1``..``layer4``, blocks with ``conv1``/``bn1``/.../``downsample.0``/``downsample.1``), so
a torchvision state dict without ``fc.*`` loads with ``strict=True``. Dilation follows
torchvision's ``replace_stride_with_dilation``: a stage that gives up its stride multiplies the
running dilation by 2, and its first block still uses the previous dilation.
"""

from __future__ import annotations

import torch
from torch import nn

from segexport.errors import ConfigError
from segexport.nn.backbone import Backbone, FeatureInfo, dilated_stages

OUTPUT_STRIDES = (8, 16, 32)
_NOMINAL_REDUCTIONS = (4, 8, 16, 32)


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs. Unlike torchvision's, it accepts dilation > 1 (for dilated ResNet-18)."""

    expansion = 1

    def __init__(
        self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, dilated), 1x1 expand; stride on the 3x3 as in torchvision (v1.5)."""

    expansion = 4

    def __init__(
        self, cin: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """ResNet trunk returning the outputs of ``layer1``..``layer4``.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: number of blocks per stage.
        widths: ``planes`` per stage; the stem has ``widths[0]`` channels.
        output_stride: 8, 16 or 32; layer3/layer4 trade stride for dilation below 32.
        multi_grid: DeepLabv3's unit rates for layer4, one per block, each multiplied by the
            stage's dilation (the first block included). ``None`` keeps torchvision's rule.

    Raises:
        ConfigError: for an unsupported output stride or a multi-grid of the wrong length.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        *,
        output_stride: int = 32,
        multi_grid: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ConfigError(f"ResNet supports output stride {OUTPUT_STRIDES}, got {output_stride}")
        if multi_grid is not None and (len(multi_grid) != layers[3] or min(multi_grid) < 1):
            raise ConfigError(
                f"multi_grid needs one positive rate per block of layer4 ({layers[3]} blocks), "
                f"got {tuple(multi_grid)}"
            )
        self._cin = widths[0]
        self._dilation = 1
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dilate = dilated_stages(_NOMINAL_REDUCTIONS, output_stride)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1, dilate[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2, dilate[1])
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2, dilate[2])
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2, dilate[3], multi_grid)
        self.feature_info = FeatureInfo(
            channels=tuple(w * block.expansion for w in widths),
            reductions=tuple(min(r, output_stride) for r in _NOMINAL_REDUCTIONS),
        )
        _init_weights(self)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        dilate: bool,
        multi_grid: tuple[int, ...] | None = None,
    ) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        if multi_grid is None:
            rates = [previous_dilation] + [self._dilation] * (blocks - 1)
        else:
            rates = [self._dilation * unit for unit in multi_grid]
        cout = planes * block.expansion
        downsample = None
        if stride != 1 or self._cin != cout:
            downsample = nn.Sequential(_conv1x1(self._cin, cout, stride), nn.BatchNorm2d(cout))
        layers = [block(self._cin, planes, stride, rates[0], downsample)]
        layers += [block(cout, planes, 1, rate) for rate in rates[1:]]
        self._cin = cout
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: He-normal (fan_out) convs, unit BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet18(*, output_stride: int = 32, multi_grid: tuple[int, ...] | None = None) -> ResNet:
    """ResNet-18 (https://arxiv.org/abs/1512.03385); channels 64, 128, 256, 512."""
    return ResNet(BasicBlock, (2, 2, 2, 2), output_stride=output_stride, multi_grid=multi_grid)


def resnet50(*, output_stride: int = 32, multi_grid: tuple[int, ...] | None = None) -> ResNet:
    """ResNet-50 (https://arxiv.org/abs/1512.03385); channels 256, 512, 1024, 2048."""
    return ResNet(Bottleneck, (3, 4, 6, 3), output_stride=output_stride, multi_grid=multi_grid)


def resnet101(*, output_stride: int = 32, multi_grid: tuple[int, ...] | None = None) -> ResNet:
    """ResNet-101 (https://arxiv.org/abs/1512.03385); channels 256, 512, 1024, 2048."""
    return ResNet(Bottleneck, (3, 4, 23, 3), output_stride=output_stride, multi_grid=multi_grid)


def resnet_tiny(*, output_stride: int = 32, multi_grid: tuple[int, ...] | None = None) -> ResNet:
    """Narrow ResNet for fast CPU training: one BasicBlock per stage, channels 16, 32, 64, 128.

    Same module names as torchvision's ResNet-18; ``multi_grid`` must then have one rate.
    """
    return ResNet(
        BasicBlock, (1, 1, 1, 1), (16, 32, 64, 128), output_stride=output_stride, multi_grid=multi_grid
    )
