"""ParseNet.

Liu, Rabinovich and Berg, "ParseNet: Looking Wider to See Better", ICLR 2016 workshop
(https://arxiv.org/abs/1506.04579). An FCN-32s whose fc7 features are joined by global
context: global average pooling of fc7, L2 normalisation, "unpooling" (the vector broadcast
back over the map) and concatenation with the L2-normalised local fc7 map, each normalised map
multiplied by a learned per-channel scale (initialised to 10, as the paper's); a 1x1 classifier;
and, as in the paper's best model, the scores of the L2-normalised pool4 features added at
stride 16 (zero-initialised, FCN-16s style) before a bilinear resize to the input size.
``paper`` size: VGG16 with fc6/fc7 as 7x7 and 1x1 convolutions of 4096 channels (torchvision's
keys, so ImageNet VGG16 files load through ``--backbone-checkpoint``). ``tiny`` keeps the graph
on a narrow VGG-BN backbone with 128-channel fc layers (FCN-32s-style tiny models stop near
0.59 mIoU on the built-in data; the pool4 branch is what lifts it).

The L2 normalisation first divides by the largest magnitude over channels, then by the root
of the sum of squares, which exports as ``Abs``/``ReduceMax``/``Div``/``Pow``/``ReduceSum``/
``Sqrt``: operators TensorRT's ONNX parser takes. The prescaling keeps every square <= 1, so no
intermediate overflows FP16's 65504 (a plain sum of squares of 4096 fc7 channels would), and
the FP16 graph keeps the sums in FP32 anyway (``precision.fp16.SENSITIVE_OPS``). The global
pooling is a mean over the map's own height and width, so it tracks the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel
from segexport.nn import build_backbone

SCALE_INIT = 10.0
EPS = 1e-6


class L2Norm(nn.Module):
    """L2 normalisation over channels, times a learned per-channel scale."""

    def __init__(self, channels: int, scale: float = SCALE_INIT) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x / ||x|| == y / ||y|| for y = x / max|x|: every square is <= 1, so the sum of squares
        # stays finite in FP16 (4096 channels of fc7 values in the tens would pass 65504).
        y = x / x.abs().amax(dim=1, keepdim=True).clamp_min(EPS)
        # The sum over channels as a 1x1 convolution with ones: ONNX Runtime's ReduceSum rounds
        # differently at batch 1 and 4, its convolution does not (a max needs no rounding).
        squares = F.conv2d(y.square(), y.new_ones(1, y.shape[1], 1, 1))
        return y / torch.sqrt(squares + EPS) * self.scale


class ParseNetHead(nn.Module):
    """fc6 -> fc7 -> [L2Norm(fc7), broadcast L2Norm(global mean of fc7)] -> 1x1 classifier, plus
    the scores of L2Norm(pool4) at stride 16.

    Args:
        channels: channels of the deepest (pool5) backbone feature.
        pool4_channels: channels of the pool4 feature.
        num_classes: output classes.
        fc_channels: fc6/fc7 width (4096 in the paper).
        fc6_kernel: fc6's kernel (7 in the paper).
        dropout: after fc6 and fc7, and on the joined features (0.5 in the paper).
    """

    def __init__(self, channels: int, pool4_channels: int, num_classes: int, *, fc_channels: int, fc6_kernel: int,
                 dropout: float) -> None:
        super().__init__()
        self.fc6 = nn.Conv2d(channels, fc_channels, fc6_kernel, padding=fc6_kernel // 2)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(dropout)
        self.norm_local = L2Norm(fc_channels)
        self.norm_context = L2Norm(fc_channels)
        self.score = nn.Conv2d(2 * fc_channels, num_classes, 1)
        # The paper's best model also scores the L2-normalised pool4 features (FCN-16s style);
        # zero-initialised, as FCN's skip scores, so training starts from the fc7 model.
        self.norm_pool4 = L2Norm(pool4_channels)
        self.score_pool4 = nn.Conv2d(pool4_channels, num_classes, 1)
        nn.init.zeros_(self.score_pool4.weight)
        nn.init.zeros_(self.score_pool4.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.drop(self.relu(self.fc6(feats[-1])))
        x = self.drop(self.relu(self.fc7(x)))
        context = self.norm_context(F.adaptive_avg_pool2d(x, 1)).expand_as(x)  # "unpool": broadcast
        scores = self.score(self.drop(torch.cat([self.norm_local(x), context], dim=1)))
        pool4 = feats[-2]
        scores = F.interpolate(scores, size=pool4.shape[-2:], mode="bilinear", align_corners=False)
        return scores + self.score_pool4(self.norm_pool4(pool4))


@register_model(
    "parsenet",
    summary="ParseNet: FCN-32s with L2-normalised global context concatenated at fc7",
    paper="Liu, Rabinovich and Berg, ParseNet: Looking Wider to See Better, 2015",
)
def parsenet(*, size: str = "tiny", num_classes: int = 21) -> SegmentationModel:
    """ParseNet (https://arxiv.org/abs/1506.04579).

    Args:
        size: "paper" (VGG16, 4096-channel fc6 7x7 / fc7) or "tiny" (narrow VGG-BN, 128 channels, fc6 3x3).
        num_classes: output classes.
    """
    if size == "paper":
        body, fc_channels, fc6_kernel, dropout = build_backbone("vgg16"), 4096, 7, 0.5
    else:
        body, fc_channels, fc6_kernel, dropout = build_backbone("vgg_tiny"), 128, 3, 0.1
    head = ParseNetHead(body.feature_info.channels[-1], body.feature_info.channels[-2], num_classes, fc_channels=fc_channels,
                        fc6_kernel=fc6_kernel, dropout=dropout)
    return SegmentationModel(body, head, input_divisor=body.feature_info.output_stride)
