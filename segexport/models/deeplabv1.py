"""DeepLab v1 (DeepLab-LargeFOV).

Chen, Papandreou, Kokkinos, Murphy and Yuille, "Semantic Image Segmentation with Deep
Convolutional Nets and Fully Connected CRFs", ICLR 2015 (https://arxiv.org/abs/1412.7062).
``paper`` size reproduces DeepLab-LargeFOV: VGG-16 with 3x3 stride-2 pools, pool4 and pool5
at stride 1 and conv5 dilated by 2 (output stride 8); fc6 a 3x3 conv with dilation 12 and 1024
channels, fc7 a 1x1 conv with 1024 channels, ReLU and dropout 0.5 after each, fc8 a 1x1 conv to
the classes; the shell resizes the stride-8 scores bilinearly to the input size. The fully
connected CRF is a host-side post-process and is not part of the network.

Weights: the VGG-16 trunk loads torchvision's ImageNet ``vgg16`` features directly. ImageNet
fc6/fc7 (:func:`segexport.nn.vgg.vgg_fc_to_conv` gives them as ``fc6.*``/``fc7.*`` conv
weights, 4096 x 512 x 7 x 7 and 4096 x 4096) do *not* load into ``classifier.fc6``/``fc7``
as they are: the paper subsamples them to 3x3 kernels and 1024 channels, so an adapter has to
decimate them first. The head keeps the names ``fc6``/``fc7``/``fc8`` for that purpose.

``tiny`` is the same graph on ``vgg_tiny`` with 128-channel fc6/fc7 and fc6 dilation 3. The
dilation scales with the feature map: the tiny model sees 128x128 inputs, a 16x16 map, a
quarter of the 64x64 map of a 512x512 input to the paper model, so 12 / 4 = 3 keeps the
paper's geometry. At dilation 12 on a 16x16 map, 84% of the off-centre taps, averaged over
positions, would read zero padding (26% for 12 on 64x64 or 3 on 16x16).
"""

from __future__ import annotations

import torch
from torch import nn

from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel
from segexport.nn import build_backbone


class LargeFOVHead(nn.Module):
    """fc6 (dilated 3x3) -> fc7 (1x1) -> fc8 (1x1 to classes), ReLU and dropout between.

    Args:
        cin: channels of pool5.
        num_classes: output classes.
        fc_channels: channels of fc6 and fc7 (1024 in the paper).
        dilation: fc6's dilation (12 in the paper).
    """

    def __init__(self, cin: int, num_classes: int, *, fc_channels: int, dilation: int) -> None:
        super().__init__()
        self.fc6 = nn.Conv2d(cin, fc_channels, 3, padding=dilation, dilation=dilation)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.fc8 = nn.Conv2d(fc_channels, num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        # Caffe's element-wise dropout, as in the released model.
        self.drop = nn.Dropout(0.5)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.drop(self.relu(self.fc6(feats[-1])))
        x = self.drop(self.relu(self.fc7(x)))
        return self.fc8(x)


@register_model(
    "deeplabv1",
    summary="DeepLab-LargeFOV: VGG16 at OS8, atrous conv5, fc6 3x3 dilation 12",
    paper="Chen et al., Semantic Image Segmentation with Deep Convolutional Nets and Fully Connected CRFs, ICLR 2015",
    backbones=("vgg16", "vgg_tiny"),
    default_backbone={"paper": "vgg16", "tiny": "vgg_tiny"},
)
def deeplabv1(*, size: str = "tiny", num_classes: int = 21) -> SegmentationModel:
    """DeepLab-LargeFOV (https://arxiv.org/abs/1412.7062); output stride 8 by definition.

    Args:
        size: "paper" (VGG-16, 1024-channel fc6/fc7, dilation 12) or "tiny".
        num_classes: output classes.
    """
    paper = size == "paper"
    body = build_backbone("vgg16" if paper else "vgg_tiny", output_stride=8, pool="max3")
    fc_channels, dilation = (1024, 12) if paper else (128, 3)
    head = LargeFOVHead(body.feature_info.channels[-1], num_classes, fc_channels=fc_channels, dilation=dilation)
    return SegmentationModel(body, head, input_divisor=body.feature_info.output_stride)
