"""VGG-16 backbones with torchvision's ``features.N`` indices, minus the classifier.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
https://arxiv.org/abs/1409.1556. The DeepLab v1 variant (``output_stride=8``) follows Chen et
al., "Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected CRFs",
https://arxiv.org/abs/1412.7062: pool4 and pool5 keep stride 1 and conv5 is dilated by 2.

Pooling and dilation change no parameter, so torchvision's ``vgg16``/``vgg16_bn`` state dicts
without ``classifier.*`` load with ``strict=True`` whatever the options.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from segexport.errors import CheckpointError, ConfigError
from segexport.nn.backbone import Backbone, FeatureInfo

OUTPUT_STRIDES = (8, 32)
POOLS = ("max2", "max3")
_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
_VGG16_WIDTHS = (64, 128, 256, 512, 512)


def _pool(kind: str, stride: int) -> nn.MaxPool2d:
    if stride == 1:
        return nn.MaxPool2d(3, stride=1, padding=1)
    if kind == "max3":
        return nn.MaxPool2d(3, stride=2, padding=1)
    return nn.MaxPool2d(2, stride=2)


class VGG(Backbone):
    """VGG trunk returning the output of each of its five max-pools (reductions 2..32).

    Args:
        widths: channels of the five conv stages.
        batch_norm: the ``vgg16_bn`` layout (conv, BN, ReLU) instead of (conv, ReLU).
        output_stride: 32, or 8 for DeepLab v1 (stride-1 3x3 pool4/pool5, conv5 dilated by 2).
        pool: ``"max2"`` for torchvision's 2x2 stride-2 pools, ``"max3"`` for DeepLab v1's 3x3
            stride-2 pad-1 pools (pool4/pool5 at output stride 8 are 3x3 stride 1 either way).

    Raises:
        ConfigError: for an unsupported output stride or pool kind.
    """

    def __init__(
        self,
        widths: tuple[int, int, int, int, int] = _VGG16_WIDTHS,
        *,
        batch_norm: bool = False,
        output_stride: int = 32,
        pool: str = "max2",
    ) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ConfigError(f"VGG supports output stride {OUTPUT_STRIDES}, got {output_stride}")
        if pool not in POOLS:
            raise ConfigError(f"VGG pool must be one of {POOLS}, got {pool!r}")
        layers: list[nn.Module] = []
        pool_indices: list[int] = []
        cin = 3
        for stage, (n_convs, width) in enumerate(zip(_CONVS_PER_STAGE, widths)):
            dilation = 2 if output_stride == 8 and stage == 4 else 1
            for _ in range(n_convs):
                layers.append(nn.Conv2d(cin, width, 3, padding=dilation, dilation=dilation))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
                cin = width
            stride = 1 if output_stride == 8 and stage >= 3 else 2
            pool_indices.append(len(layers))
            layers.append(_pool(pool, stride))
        self.features = nn.Sequential(*layers)
        self._pool_indices = frozenset(pool_indices)
        self.feature_info = FeatureInfo(
            channels=tuple(widths),
            reductions=tuple(min(r, output_stride) for r in (2, 4, 8, 16, 32)),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._pool_indices:
                outs.append(x)
        return outs


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation: He-normal (fan_out) convs with zero bias, unit BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def vgg_fc_to_conv(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reshape torchvision VGG's fc6/fc7 (``classifier.0``/``classifier.3``) into conv weights.

    FCN and DeepLab v1 turn the classifier's fully connected layers into convolutions over the
    7x7x512 pool5 map: fc6 becomes a 7x7 conv (512 -> 4096) and fc7 a 1x1 conv (4096 -> 4096).
    The input is not modified.

    Args:
        state_dict: a torchvision ``vgg16``/``vgg16_bn`` state dict (other keys are ignored).

    Returns:
        ``fc6.weight`` [4096, 512, 7, 7], ``fc6.bias`` [4096], ``fc7.weight`` [4096, 4096, 1, 1],
        ``fc7.bias`` [4096] (new tensors).

    Raises:
        CheckpointError: if a classifier key is missing or has an unexpected shape.
    """
    plan = {
        "fc6.weight": ("classifier.0.weight", (4096, 25088), (4096, 512, 7, 7)),
        "fc6.bias": ("classifier.0.bias", (4096,), (4096,)),
        "fc7.weight": ("classifier.3.weight", (4096, 4096), (4096, 4096, 1, 1)),
        "fc7.bias": ("classifier.3.bias", (4096,), (4096,)),
    }
    out = {}
    for new_key, (old_key, old_shape, new_shape) in plan.items():
        if old_key not in state_dict:
            raise CheckpointError(
                f"{old_key!r} is missing: vgg_fc_to_conv needs a full torchvision VGG-16 state dict "
                "(with its classifier)"
            )
        tensor = state_dict[old_key]
        if tuple(tensor.shape) != old_shape:
            raise CheckpointError(f"{old_key!r} has shape {tuple(tensor.shape)}, expected {old_shape}")
        out[new_key] = tensor.detach().reshape(new_shape).clone()
    return out


def vgg16(*, output_stride: int = 32, pool: str = "max2") -> VGG:
    """VGG-16 (https://arxiv.org/abs/1409.1556), torchvision's ``vgg16`` features."""
    return VGG(output_stride=output_stride, pool=pool)


def vgg16_bn(*, output_stride: int = 32, pool: str = "max2") -> VGG:
    """VGG-16 with batch norm (https://arxiv.org/abs/1409.1556), torchvision's ``vgg16_bn``."""
    return VGG(batch_norm=True, output_stride=output_stride, pool=pool)


def vgg_tiny(*, output_stride: int = 32, pool: str = "max2") -> VGG:
    """Narrow ``vgg16_bn`` layout for fast CPU training: channels 8, 16, 32, 64, 64."""
    return VGG((8, 16, 32, 64, 64), batch_norm=True, output_stride=output_stride, pool=pool)
