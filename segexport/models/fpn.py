"""Semantic FPN.

Kirillov, Girshick, He and Dollár, "Panoptic Feature Pyramid Networks", CVPR 2019
(https://arxiv.org/abs/1901.02446), its semantic-segmentation branch on the feature pyramid of
Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017. ``paper`` size: a
ResNet-50/101 backbone (torchvision's keys, so ImageNet files load through
``--backbone-checkpoint``), lateral 1x1 convs and a top-down path of 2x nearest upsampling and
sums into 256-channel P2-P5, 3x3 output convs, then the semantic head: each level is brought to
1/4 scale by repeated (3x3 conv, 128 channels, GroupNorm(32), ReLU, 2x bilinear) stages (one
conv without upsampling for P2), the four maps are summed, a 1x1 conv gives the classes and a
4x bilinear resize the input size. ``tiny`` keeps the graph on a narrow ResNet with 32-channel
pyramid and head and GroupNorm(8).

Every resize takes its size from the tensor it is added to (never a constant), so the graph
exports with dynamic height and width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segexport.models.registry import register_model
from segexport.models.shell import SegmentationModel, choose_backbone
from segexport.nn import build_backbone

PAPER_BACKBONES = ("resnet50", "resnet101")
TINY_BACKBONES = ("resnet_tiny",)


def conv_gn_relu(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True))


class SemanticFPNHead(nn.Module):
    """FPN (laterals, top-down sums, 3x3 outputs) and the semantic head summing every level at 1/4.

    Args:
        in_channels: channels of the backbone's stride-4, 8, 16 and 32 features.
        num_classes: output classes.
        fpn_channels: pyramid width (256 in the paper).
        head_channels: semantic head width (128 in the paper).
        groups: GroupNorm groups (32 in the paper).
    """

    def __init__(self, in_channels: tuple[int, ...], num_classes: int, *, fpn_channels: int = 256,
                 head_channels: int = 128, groups: int = 32) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, fpn_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1) for _ in in_channels)
        # Level i (stride 4 * 2^i) needs max(1, i) conv stages and i 2x upsamplings to reach 1/4.
        self.scale_heads = nn.ModuleList(
            nn.ModuleList(conv_gn_relu(fpn_channels if k == 0 else head_channels, head_channels, groups)
                          for k in range(max(1, i)))
            for i in range(len(in_channels)))
        self.cls = nn.Conv2d(head_channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse to fine
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        pyramid = [conv(p) for conv, p in zip(self.output, laterals)]
        out = None
        for i, (level, stages) in enumerate(zip(pyramid, self.scale_heads)):
            y = level
            for k, stage in enumerate(stages):
                y = stage(y)
                if i > 0:
                    target = pyramid[i - k - 1].shape[-2:]  # the next finer level's size: tracks the input
                    y = F.interpolate(y, size=target, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return self.cls(out)


@register_model(
    "fpn",
    summary="Semantic FPN: ResNet feature pyramid, per-level conv+GN+upsample heads summed at 1/4",
    paper="Kirillov et al., Panoptic Feature Pyramid Networks, CVPR 2019",
    backbones=PAPER_BACKBONES + TINY_BACKBONES,
    default_backbone={"paper": "resnet50", "tiny": "resnet_tiny"},
)
def fpn(*, size: str = "tiny", num_classes: int = 21, backbone: str | None = None) -> SegmentationModel:
    """Semantic FPN (https://arxiv.org/abs/1901.02446).

    Args:
        size: "paper" (256-channel pyramid, 128-channel head, GroupNorm(32)) or "tiny" (32, 32, GroupNorm(8)).
        num_classes: output classes.
        backbone: one of PAPER_BACKBONES (paper) or TINY_BACKBONES (tiny).
    """
    paper = size == "paper"
    name = choose_backbone("fpn", size, backbone, PAPER_BACKBONES, TINY_BACKBONES)
    body = build_backbone(name)
    fpn_channels, head_channels, groups = (256, 128, 32) if paper else (32, 32, 8)
    head = SemanticFPNHead(body.feature_info.channels, num_classes, fpn_channels=fpn_channels,
                           head_channels=head_channels, groups=groups)
    return SegmentationModel(body, head, input_divisor=body.feature_info.output_stride)
