"""PANet.

Liu, Qi, Qin, Shi and Jia, "Path Aggregation Network for Instance Segmentation", CVPR 2018
(https://arxiv.org/abs/1803.01534): Mask R-CNN (:mod:`segexport.models.maskrcnn`) plus

- bottom-up path augmentation: N2 = P2, then each N(i+1) from a stride-2 3x3 conv of N(i)
  added to P(i+1) and a 3x3 conv (section 3.1);
- adaptive feature pooling: every RoI is pooled from every level, the box head's first FC layer
  and the mask head's first conv run per level and the levels are fused by element-wise max
  (section 3.2);
- the fused fully connected mask branch: from the third mask conv, two convs (the second with
  half the channels) and an FC layer to a class-agnostic 28x28 map added to every class's
  mask logits (section 3.3).

``paper`` size is Mask R-CNN's ResNet-50-FPN configuration with these three parts; ``tiny`` is
tiny Mask R-CNN's with them. The paper's other training-time changes (multi-GPU BN, heavier
heads) are not part of the deployed graph and are left out.
"""

from __future__ import annotations

from segexport.models.instance_shell import InstanceSegmentationModel
from segexport.models.maskrcnn import (
    PAPER_BACKBONES,
    TINY_BACKBONES,
    build_instance_model,
)
from segexport.models.registry import register_model


@register_model(
    "panet",
    summary="PANet: Mask R-CNN + bottom-up path, adaptive feature pooling, fused FC mask branch",
    paper="Liu et al., Path Aggregation Network for Instance Segmentation, CVPR 2018",
    backbones=PAPER_BACKBONES + TINY_BACKBONES,
    default_backbone={"paper": "resnet50", "tiny": "resnet_tiny"},
    task="instance",
)
def panet(*, size: str = "tiny", num_classes: int = 91, backbone: str | None = None) -> InstanceSegmentationModel:
    """PANet (https://arxiv.org/abs/1803.01534).

    Args:
        size: "paper" (ResNet-50-FPN) or "tiny".
        num_classes: classes including background.
        backbone: one of PAPER_BACKBONES (paper) or TINY_BACKBONES (tiny).
    """
    return build_instance_model("panet", size, num_classes, backbone, panet=True)
