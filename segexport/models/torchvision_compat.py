"""torchvision's FCN-ResNet and DeepLabV3-ResNet segmentation models, without torchvision.

These reproduce ``torchvision.models.segmentation.{fcn,deeplabv3}_resnet{50,101}`` module for
module, so torchvision's state dicts (the COCO-with-VOC-labels weights included) load with
``strict=True`` and the state-dict keys and shapes match torchvision's at ``size="paper"``:

- backbone: ResNet with ``replace_stride_with_dilation=[False, True, True]`` (our
  ``output_stride=8``), no ``fc``;
- ``classifier``: FCN's head (3x3 conv to in/4 channels, BN, ReLU, dropout 0.1, 1x1 conv) or
  DeepLabv3's (ASPP at rates 12/24/36 with 256 channels, 3x3 conv, BN, ReLU, 1x1 conv) on the
  deepest feature;
- ``aux_classifier``: an FCN head on layer3 (1024 channels), used only for the training loss.

FCN: Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015 (https://arxiv.org/abs/1411.4038). DeepLabv3: Chen, Papandreou, Schroff and Adam,
"Rethinking Atrous Convolution for Semantic Image Segmentation", 2017
(https://arxiv.org/abs/1706.05587). ``size="tiny"`` builds the same graph on ``resnet_tiny``
with narrow heads (the ResNet-50 and ResNet-101 variants are then identical).
"""

from __future__ import annotations

import torch
from torch import nn

from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel
from segexport.nn import build_backbone
from segexport.nn.blocks import ASPP, conv_bn_relu

# ASPP rates at output stride 8. torchvision trains at 520x520 crops (a 65x65 map); tiny
# models see 128x128 inputs (a 16x16 map), where rates 12-36 would mostly read zero padding,
# so they use a quarter of the paper's rates.
PAPER_RATES = (12, 24, 36)
TINY_RATES = (3, 6, 9)
# layer3 in the backbone's feature list (layer1..layer4): torchvision's "aux" feature.
AUX_FEATURE = 2


class FeatureHead(nn.Sequential):
    """A ``Sequential`` run on one feature of the backbone's list.

    Keeps torchvision's flat key layout (``classifier.0.weight``, ``classifier.4.bias``) while
    taking the feature list every segexport head takes.

    Args:
        feature_index: which feature to use (-1: the deepest).
        *layers: the layers, in order.
    """

    def __init__(self, feature_index: int, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.feature_index = feature_index

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(feats[self.feature_index])


def fcn_head(cin: int, num_classes: int, feature_index: int = -1) -> FeatureHead:
    """torchvision's ``FCNHead``: 3x3 conv (no bias) to ``cin // 4``, BN, ReLU, dropout 0.1, 1x1 conv."""
    inter = cin // 4
    return FeatureHead(
        feature_index, *conv_bn_relu(cin, inter, 3), nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1)
    )


def deeplab_head(
    cin: int, num_classes: int, *, rates: tuple[int, ...], channels: int = 256
) -> FeatureHead:
    """torchvision's ``DeepLabHead``: ASPP, 3x3 conv (no bias), BN, ReLU, 1x1 conv, on the deepest feature."""
    return FeatureHead(
        -1, ASPP(cin, rates, channels), *conv_bn_relu(channels, channels, 3), nn.Conv2d(channels, num_classes, 1)
    )


def _build(head: str, depth: int, size: str, num_classes: int, aux: bool) -> SegmentationModel:
    paper = size == "paper"
    backbone = build_backbone(f"resnet{depth}" if paper else "resnet_tiny", output_stride=8)
    info = backbone.feature_info
    if head == "fcn":
        classifier = fcn_head(info.channels[-1], num_classes)
    else:
        rates, channels = (PAPER_RATES, 256) if paper else (TINY_RATES, 64)
        classifier = deeplab_head(info.channels[-1], num_classes, rates=rates, channels=channels)
    aux_classifier = fcn_head(info.channels[AUX_FEATURE], num_classes, AUX_FEATURE) if aux else None
    return SegmentationModel(
        backbone, classifier, aux_classifier=aux_classifier, input_divisor=info.output_stride
    )


_FCN_PAPER = "Long et al., Fully Convolutional Networks for Semantic Segmentation, CVPR 2015"
_DEEPLAB_PAPER = "Chen et al., Rethinking Atrous Convolution for Semantic Image Segmentation, 2017"
_RESNET50 = {"paper": "resnet50", "tiny": "resnet_tiny"}
_RESNET101 = {"paper": "resnet101", "tiny": "resnet_tiny"}
# Every builder takes:
#   size: "paper" (torchvision's configuration) or "tiny" (resnet_tiny, narrow heads);
#   num_classes: output classes (torchvision's pretrained weights: 21);
#   aux: build the auxiliary FCN head on layer3. Default True, as in torchvision's pretrained
#       weights, so their files load as they are; it only adds a training loss and never runs
#       in ``forward`` or in exported graphs.


@register_model(
    "fcn_resnet50",
    summary="torchvision's FCN-ResNet50: dilated ResNet-50 (OS8), FCN head, aux head on layer3",
    paper=_FCN_PAPER,
    default_backbone=_RESNET50,
)
def fcn_resnet50(*, size: str = "tiny", num_classes: int = 21, aux: bool = True) -> SegmentationModel:
    """torchvision's ``fcn_resnet50`` (https://arxiv.org/abs/1411.4038)."""
    return _build("fcn", 50, size, num_classes, aux)


@register_model(
    "fcn_resnet101",
    summary="torchvision's FCN-ResNet101: dilated ResNet-101 (OS8), FCN head, aux head on layer3",
    paper=_FCN_PAPER,
    default_backbone=_RESNET101,
)
def fcn_resnet101(*, size: str = "tiny", num_classes: int = 21, aux: bool = True) -> SegmentationModel:
    """torchvision's ``fcn_resnet101`` (https://arxiv.org/abs/1411.4038)."""
    return _build("fcn", 101, size, num_classes, aux)


@register_model(
    "deeplabv3_resnet50",
    summary="torchvision's DeepLabV3-ResNet50: dilated ResNet-50 (OS8), ASPP 12/24/36, aux head",
    paper=_DEEPLAB_PAPER,
    default_backbone=_RESNET50,
)
def deeplabv3_resnet50(*, size: str = "tiny", num_classes: int = 21, aux: bool = True) -> SegmentationModel:
    """torchvision's ``deeplabv3_resnet50`` (https://arxiv.org/abs/1706.05587)."""
    return _build("deeplabv3", 50, size, num_classes, aux)


@register_model(
    "deeplabv3_resnet101",
    summary="torchvision's DeepLabV3-ResNet101: dilated ResNet-101 (OS8), ASPP 12/24/36, aux head",
    paper=_DEEPLAB_PAPER,
    default_backbone=_RESNET101,
)
def deeplabv3_resnet101(*, size: str = "tiny", num_classes: int = 21, aux: bool = True) -> SegmentationModel:
    """torchvision's ``deeplabv3_resnet101`` (https://arxiv.org/abs/1706.05587)."""
    return _build("deeplabv3", 101, size, num_classes, aux)
