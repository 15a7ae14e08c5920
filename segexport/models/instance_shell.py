"""The shared shell of the instance networks (Mask R-CNN, PANet): backbone -> pyramid -> RPN ->
RoI heads, with fixed-size, zero-padded outputs.

``forward(images)`` is what is exported and verified. For ``N`` images of a fixed size it
returns, for ``D`` = ``detections`` slots per image, best first:

- ``boxes`` ``[N, D, 4]`` float ``(x1, y1, x2, y2)`` in input pixels,
- ``scores`` ``[N, D]`` float,
- ``classes`` ``[N, D]`` int32 (1.., 0 in empty slots),
- ``masks`` ``[N, D, M, M]`` float mask probabilities in box coordinates (M = 28), pasted into
  the image by :func:`segexport.instance_outputs.paste_masks` on the host, the same code for
  every backend,
- ``count`` ``[N]`` int32, the filled slots.

Empty slots are zero. Suppression and RoIAlign are segexport's custom operators (static shapes,
exported as ``NonMaxSuppression`` and ``RoiAlign``); the rest is ordinary ops (``TopK``,
``Gather``), so a dynamic batch needs no plugin.

``forward_train(images, targets, gen)`` returns the papers' losses (:mod:`segexport.nn.rcnn_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segexport.instance_outputs import OUTPUTS
from segexport.nn import Backbone, detection, detection_ops, rcnn_targets
from segexport.nn.rcnn_heads import (
    BottomUpPath,
    BoxHead,
    BoxPredictor,
    FeaturePyramid,
    FusedMaskBranch,
    LevelPooler,
    MaskHead,
    MaskPredictor,
    RPNHead,
)


@dataclass(frozen=True)
class RCNNConfig:
    """Sizes and thresholds; the defaults are the paper's (torchvision's ``maskrcnn_resnet50_fpn``)."""

    fpn_channels: int = 256
    anchor_sizes: tuple[float, ...] = (32, 64, 128, 256, 512)  # one per RPN level, P2 first
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    representation: int = 1024  # box head FC width
    mask_channels: int = 256
    mask_convs: int = 4
    box_pool: int = 7
    mask_pool: int = 14
    sampling_ratio: int = 2
    rpn_pre_nms: int = 1000  # per level, inference
    rpn_post_nms: int = 1000  # proposals per image, inference
    rpn_train_pre_nms: int = 2000
    rpn_train_post_nms: int = 2000
    rpn_nms: float = 0.7
    rpn_batch: int = 256
    roi_batch: int = 512
    detection_candidates: int = 1000  # class-specific boxes per image entering the final NMS
    detection_nms: float = 0.5
    score_threshold: float = 0.05
    detections: int = 100  # D, the padded slots per image

    @property
    def rpn_levels(self) -> int:
        return len(self.anchor_sizes)


def _module(**children: nn.Module | None) -> nn.Module:
    """A plain container, so that state-dict keys read ``rpn.head...`` as torchvision's do."""
    m = nn.Module()
    for name, child in children.items():
        if child is not None:
            m.add_module(name, child)
    return m


def _batch_index(n: int, per_image: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)[:, None].expand(n, per_image).reshape(-1)


def _clip(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def _not_tiny(boxes: torch.Tensor, min_side: float) -> torch.Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) >= min_side) & ((boxes[..., 3] - boxes[..., 1]) >= min_side)


def _gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values [N, M, ...]`` at ``index [N, K]`` along dim 1."""
    shape = index.shape + values.shape[2:]
    return torch.gather(values, 1, index.reshape(*index.shape, *([1] * (values.dim() - 2))).expand(shape))


class InstanceSegmentationModel(nn.Module):
    """Mask R-CNN; with ``panet`` its three PANet changes.

    Args:
        body: a ResNet-style backbone returning stride-4 to stride-32 features.
        num_classes: classes including background.
        cfg: sizes and thresholds.
        panet: bottom-up path augmentation, adaptive feature pooling, fused FC mask branch.
    """

    task = "instance"
    output_names = OUTPUTS

    def __init__(self, body: Backbone, num_classes: int, cfg: RCNNConfig, *, panet: bool = False) -> None:
        super().__init__()
        levels = len(body.feature_info.channels)
        c = cfg.fpn_channels
        self.cfg, self.num_classes, self.panet = cfg, num_classes, panet
        self.strides = tuple(body.feature_info.reductions)
        # P6 is a stride-2 max pool of P5 (any size), so the backbone's stride alone constrains the input.
        self.input_divisor = body.feature_info.output_stride
        self.backbone = _module(
            body=body, fpn=FeaturePyramid(body.feature_info.channels, c, extra_level=cfg.rpn_levels > levels),
            bottom_up=BottomUpPath(c, levels) if panet else None)
        self.rpn = _module(head=RPNHead(c, len(cfg.anchor_ratios)))
        box_in = c * cfg.box_pool ** 2
        self.roi_heads = _module(
            box_head=BoxHead(box_in, cfg.representation), box_predictor=BoxPredictor(cfg.representation, num_classes),
            mask_head=MaskHead(c, cfg.mask_channels, cfg.mask_convs),
            mask_predictor=MaskPredictor(cfg.mask_channels, num_classes),
            mask_fc=FusedMaskBranch(cfg.mask_channels, cfg.mask_pool) if panet else None)
        self.box_pooler = LevelPooler(self.strides, cfg.box_pool, cfg.sampling_ratio, assign=not panet)
        self.mask_pooler = LevelPooler(self.strides, cfg.mask_pool, cfg.sampling_ratio, assign=not panet)

    # -- shared by inference and training ------------------------------------------------------
    def pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        levels = self.backbone.fpn(self.backbone.body(images))
        return self.backbone.bottom_up(levels) if self.panet else levels

    def anchors(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each RPN level's anchors ``[H*W*A, 4]`` (constants for a fixed input size)."""
        strides = self.strides + tuple(self.strides[-1] * 2 ** (i + 1) for i in range(self.cfg.rpn_levels - len(self.strides)))
        return [detection.grid_anchors(p.shape[-2], p.shape[-1], s, (size,), self.cfg.anchor_ratios, p.device)
                for p, s, size in zip(pyramid, strides, self.cfg.anchor_sizes)]

    def rpn_outputs(self, pyramid: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        outs = [self.rpn.head(p) for p in pyramid[: self.cfg.rpn_levels]]
        return [o[0] for o in outs], [o[1] for o in outs]

    def propose(self, objectness: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                size: tuple[int, int], pre_nms: int, post_nms: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The best ``pre_nms`` anchors per level, decoded, clipped, suppressed per level (IoU 0.7):
        ``([N, P, 4] proposals, [N, P] valid)``, P = ``post_nms`` (or fewer candidates)."""
        height, width = size
        boxes, scores, offsets = [], [], []
        for level, (obj, d, a) in enumerate(zip(objectness, deltas, anchors)):
            top, index = obj.topk(min(pre_nms, obj.shape[1]), dim=1)
            decoded = detection.decode_boxes(_gather_rows(d, index), a[index])
            boxes.append(_clip(decoded, height, width))
            scores.append(torch.sigmoid(top))
            offsets.append(torch.full_like(top, float(level * (max(height, width) + 1))))
        boxes, scores, offsets = torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(offsets, 1)
        scores = torch.where(_not_tiny(boxes, 1e-3), scores, torch.zeros_like(scores))
        # Offsetting each level's boxes apart makes one suppression act per level (batched NMS).
        keep = detection_ops.nms_keep(boxes + offsets[..., None], scores, self.cfg.rpn_nms, 0.0, post_nms)
        ranked, index = torch.where(keep > 0, scores, torch.full_like(scores, -1.0)).topk(min(post_nms, scores.shape[1]), dim=1)
        return _gather_rows(boxes, index), ranked > 0

    # -- inference (exported) ------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(boxes, scores, classes, masks, count)``, see the module docstring."""
        cfg = self.cfg
        size = (images.shape[-2], images.shape[-1])
        pyramid = self.pyramid(images)
        objectness, deltas = self.rpn_outputs(pyramid)
        proposals, valid = self.propose(objectness, deltas, self.anchors(pyramid), size, cfg.rpn_pre_nms, cfg.rpn_post_nms)
        boxes, scores, classes = self.detect(pyramid[: len(self.strides)], proposals, valid, size)
        masks = self.mask_probabilities(pyramid[: len(self.strides)], boxes, classes)
        filled = scores > 0
        return boxes, scores, classes.to(torch.int32), masks, filled.sum(1).to(torch.int32)

    def box_outputs(self, pyramid: list[torch.Tensor], rois: torch.Tensor, batch_index: torch.Tensor, *,
                    differentiable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.box_pooler(pyramid, rois, batch_index, differentiable=differentiable)
        return self.roi_heads.box_predictor(self.roi_heads.box_head(pooled, fuse_levels=self.panet))

    def mask_logits(self, pyramid: list[torch.Tensor], rois: torch.Tensor, batch_index: torch.Tensor, *,
                    differentiable: bool = False) -> torch.Tensor:
        """``[K, classes, 2s, 2s]`` mask logits of ``rois``."""
        pooled = self.mask_pooler(pyramid, rois, batch_index, differentiable=differentiable)
        layers = self.roi_heads.mask_head.forward_layers(pooled, fuse_levels=self.panet)
        logits = self.roi_heads.mask_predictor(layers[-1])
        if self.panet:
            logits = logits + self.roi_heads.mask_fc(layers[min(2, len(layers) - 1)])
        return logits

    def detect(self, pyramid: list[torch.Tensor], proposals: torch.Tensor, valid: torch.Tensor,
               size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class-specific boxes of the proposals, suppressed per class: padded ``[N, D]`` results."""
        cfg = self.cfg
        n, p = proposals.shape[:2]
        rois = proposals.reshape(-1, 4)
        logits, deltas = self.box_outputs(pyramid, rois, _batch_index(n, p, rois.device))
        k = self.num_classes - 1
        probs = F.softmax(logits, -1)[:, 1:] * valid.reshape(-1, 1).to(logits.dtype)
        boxes = _clip(detection.decode_boxes(deltas[:, 1:], rois[:, None], rcnn_targets.BOX_WEIGHTS), *size)
        probs = torch.where(_not_tiny(boxes, 1e-2), probs, torch.zeros_like(probs))
        boxes, probs = boxes.reshape(n, p * k, 4), probs.reshape(n, p * k)
        labels = torch.arange(1, k + 1, device=logits.device).repeat(p)  # the class of each flattened candidate
        top, index = probs.topk(min(cfg.detection_candidates, p * k), dim=1)
        cand_boxes, cand_labels = _gather_rows(boxes, index), labels[index]
        offset = (cand_labels * (max(size) + 1)).to(cand_boxes.dtype)[..., None]  # one suppression per class
        keep = detection_ops.nms_keep(cand_boxes + offset, top, cfg.detection_nms, cfg.score_threshold, cfg.detections)
        ranked = torch.where(keep > 0, top, torch.full_like(top, -1.0))
        if ranked.shape[1] < cfg.detections:
            ranked = F.pad(ranked, (0, cfg.detections - ranked.shape[1]), value=-1.0)
            cand_boxes = F.pad(cand_boxes, (0, 0, 0, cfg.detections - cand_boxes.shape[1]))
            cand_labels = F.pad(cand_labels, (0, cfg.detections - cand_labels.shape[1]))
        best, slot = ranked.topk(cfg.detections, dim=1)
        filled = best > 0
        scores = torch.where(filled, best, torch.zeros_like(best))
        boxes = _gather_rows(cand_boxes, slot) * filled[..., None].to(best.dtype)
        classes = torch.where(filled, torch.gather(cand_labels, 1, slot), torch.zeros_like(slot))
        return boxes, scores, classes

    def mask_probabilities(self, pyramid: list[torch.Tensor], boxes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``[N, D, 2s, 2s]`` probabilities of each detection's class (0 in empty slots)."""
        n, d = classes.shape
        logits = self.mask_logits(pyramid, boxes.reshape(-1, 4), _batch_index(n, d, boxes.device))
        side = logits.shape[-1]
        index = classes.reshape(-1, 1, 1, 1).expand(-1, 1, side, side)
        chosen = torch.gather(logits, 1, index)[:, 0]
        return (torch.sigmoid(chosen) * (classes.reshape(-1, 1, 1) > 0).to(chosen.dtype)).reshape(n, d, side, side)

    # -- training ---------------------------------------------------------------------------------
    def forward_train(self, images: torch.Tensor, targets: list[rcnn_targets.ImageTargets],
                      gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The RPN, box and mask losses of ``images`` against ``targets`` (one per image)."""
        cfg = self.cfg
        size = (images.shape[-2], images.shape[-1])
        pyramid = self.pyramid(images)
        objectness, deltas = self.rpn_outputs(pyramid)
        anchors = self.anchors(pyramid)
        losses = rcnn_targets.rpn_losses(torch.cat(objectness, 1), torch.cat(deltas, 1), torch.cat(anchors),
                                         targets, gen, batch=cfg.rpn_batch)
        with torch.no_grad():
            proposals, valid = self.propose([o.detach() for o in objectness], [d.detach() for d in deltas], anchors,
                                            size, cfg.rpn_train_pre_nms, cfg.rpn_train_post_nms)
        rois = rcnn_targets.sample_rois([p[v] for p, v in zip(proposals, valid)], targets, gen, batch=cfg.roi_batch)
        feats = pyramid[: len(self.strides)]
        logits, box_deltas = self.box_outputs(feats, rois.rois, rois.batch_index, differentiable=True)
        losses.update(rcnn_targets.box_losses(logits, box_deltas, rois))
        positives = torch.nonzero(rois.classes > 0).flatten()
        mask_logits = self.mask_logits(feats, rois.rois[positives], rois.batch_index[positives], differentiable=True)
        losses["mask"] = rcnn_targets.mask_loss(mask_logits, rois, targets, positives)
        return losses
