"""Mask R-CNN.

He, Gkioxari, Dollár and Girshick, "Mask R-CNN", ICCV 2017 (https://arxiv.org/abs/1703.06870),
on the ResNet-FPN backbone of Lin et al., "Feature Pyramid Networks for Object Detection", CVPR
2017. ``paper`` size is torchvision's ``maskrcnn_resnet50_fpn`` module for module (ResNet-50,
256-channel pyramid P2-P6, RPN with 3 aspect ratios per level, RoIAlign 7x7 box and 14x14 mask
pooling assigned by scale, two 1024-wide FC layers, four 256-channel mask convs and a 2x
transposed conv to 28x28), so its state dicts load key for key without torchvision.
``tiny`` keeps the graph on a narrow ResNet (32-channel pyramid P2-P5 without P6, anchors
16-128 px for 64-128 px images, 128-wide FC layers, 32-channel mask convs), with fewer
proposals and sampled RoIs, one RoIAlign sample per bin (a bin is under a pixel of P2 on those
images) and 16 detection slots.

The network's outputs are fixed-size and padded (see :mod:`segexport.models.instance_shell`).
"""

from __future__ import annotations

from segexport.models.instance_shell import InstanceSegmentationModel, RCNNConfig
from segexport.models.registry import register_model
from segexport.models.shell import choose_backbone
from segexport.nn import build_backbone

PAPER_BACKBONES = ("resnet50", "resnet101")
TINY_BACKBONES = ("resnet_tiny",)

TINY = RCNNConfig(
    fpn_channels=32, anchor_sizes=(16, 32, 64, 128), representation=128, mask_channels=32,
    rpn_pre_nms=200, rpn_post_nms=100, rpn_train_pre_nms=400, rpn_train_post_nms=200,
    rpn_batch=64, roi_batch=32, sampling_ratio=1, detection_candidates=200, detections=16,
)


def build_instance_model(arch: str, size: str, num_classes: int, backbone: str | None, *,
                         panet: bool) -> InstanceSegmentationModel:
    """Mask R-CNN (or PANet) at ``size`` on ``backbone``."""
    name = choose_backbone(arch, size, backbone, PAPER_BACKBONES, TINY_BACKBONES)
    cfg = RCNNConfig() if size == "paper" else TINY
    return InstanceSegmentationModel(build_backbone(name), num_classes, cfg, panet=panet)


@register_model(
    "maskrcnn",
    summary="Mask R-CNN: ResNet-FPN, RPN, multi-scale RoIAlign, box and mask heads; padded detections",
    paper="He et al., Mask R-CNN, ICCV 2017",
    backbones=PAPER_BACKBONES + TINY_BACKBONES,
    default_backbone={"paper": "resnet50", "tiny": "resnet_tiny"},
    task="instance",
)
def maskrcnn(*, size: str = "tiny", num_classes: int = 91, backbone: str | None = None) -> InstanceSegmentationModel:
    """Mask R-CNN (https://arxiv.org/abs/1703.06870).

    Args:
        size: "paper" (torchvision's ``maskrcnn_resnet50_fpn``) or "tiny".
        num_classes: classes including background (91 for COCO's ids, as torchvision).
        backbone: one of PAPER_BACKBONES (paper) or TINY_BACKBONES (tiny).
    """
    return build_instance_model("maskrcnn", size, num_classes, backbone, panet=False)
