"""Training targets and losses of Mask R-CNN (He et al., 2017; Ren et al., 2015 for the RPN).

- RPN: an anchor is positive at IoU >= 0.7 with an object (or when it is an object's best
  anchor), negative below 0.3; 256 anchors per image, at most half positive; binary
  cross-entropy on objectness, smooth L1 (beta 1/9) on the positives' box deltas.
- Box head: proposals plus the true boxes, positive at IoU >= 0.5, 512 per image, at most a
  quarter positive; cross-entropy over classes, smooth L1 on the true class's deltas
  (weights 10, 10, 5, 5).
- Mask head: per positive RoI, binary cross-entropy of the true class's 28x28 logits against
  the object's mask RoI-aligned to that box.
Each loss is normalised by the number of sampled anchors or RoIs, as torchvision does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from segexport.nn import detection

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
SMOOTH_L1_BETA = 1.0 / 9


@dataclass(frozen=True)
class ImageTargets:
    """One training image's objects: ``boxes [G, 4]`` float, ``classes [G]`` int64 (1..),
    ``masks [G, H, W]`` float 0/1. Crowd regions are left out before this point."""

    boxes: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor


def match(iou: torch.Tensor, high: float, low: float, *, best_too: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign each of the ``M`` candidates of ``iou [G, M]`` to its best object.

    Returns:
        ``(matched [M] object index, label [M])`` with label 1 (IoU >= ``high``), 0 (< ``low``)
        or -1 (in between: ignored). ``best_too`` also makes positive each object's
        best-overlapping candidates (the RPN's rule, so that every object has an anchor).
    """
    m = iou.shape[1]
    if iou.shape[0] == 0:
        return torch.zeros(m, dtype=torch.long, device=iou.device), torch.zeros(m, dtype=torch.long, device=iou.device)
    best, matched = iou.max(0)
    label = torch.full((m,), -1, dtype=torch.long, device=iou.device)
    label[best < low] = 0
    label[best >= high] = 1
    if best_too:
        per_object = iou.max(1, keepdim=True).values
        hits = ((iou == per_object) & (per_object > 0)).any(0)
        label[hits] = 1
    return matched, label


def sample(label: torch.Tensor, count: int, positive_fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random positive and negative indices: at most ``count * positive_fraction`` positives,
    negatives filling the rest of ``count``."""
    pos = torch.nonzero(label == 1).flatten()
    neg = torch.nonzero(label == 0).flatten()
    n_pos = min(len(pos), int(count * positive_fraction))
    n_neg = min(len(neg), count - n_pos)
    pos = pos[torch.randperm(len(pos), generator=gen)[:n_pos]]
    neg = neg[torch.randperm(len(neg), generator=gen)[:n_neg]]
    return pos, neg


def rpn_losses(objectness: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, targets: list[ImageTargets],
               gen: torch.Generator, *, batch: int = 256, positive_fraction: float = 0.5) -> dict[str, torch.Tensor]:
    """Objectness and box losses of ``objectness [N, A]`` and ``deltas [N, A, 4]`` over ``anchors [A, 4]``."""
    logits, wanted, pos_deltas, pos_targets = [], [], [], []
    for i, t in enumerate(targets):
        matched, label = match(detection.box_iou(t.boxes, anchors), 0.7, 0.3, best_too=True)
        pos, neg = sample(label, batch, positive_fraction, gen)
        chosen = torch.cat([pos, neg])
        logits.append(objectness[i, chosen])
        wanted.append((label[chosen] == 1).float())
        pos_deltas.append(deltas[i, pos])
        pos_targets.append(detection.encode_boxes(t.boxes[matched[pos]], anchors[pos]))  # no objects: no positives
    sampled = max(1, sum(len(w) for w in wanted))
    return {
        "rpn_objectness": F.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(wanted), reduction="sum") / sampled,
        "rpn_box": F.smooth_l1_loss(torch.cat(pos_deltas), torch.cat(pos_targets), beta=SMOOTH_L1_BETA,
                                    reduction="sum") / sampled,
    }


@dataclass(frozen=True)
class RoiSample:
    """The RoIs the box and mask heads train on, over the whole batch."""

    rois: torch.Tensor  # [R, 4]
    batch_index: torch.Tensor  # [R]
    classes: torch.Tensor  # [R], 0 for background
    box_targets: torch.Tensor  # [R, 4] encoded deltas (meaningful where classes > 0)
    object_index: torch.Tensor  # [R] index into the image's objects (meaningful where classes > 0)


def sample_rois(proposals: list[torch.Tensor], targets: list[ImageTargets], gen: torch.Generator, *,
                batch: int = 512, positive_fraction: float = 0.25) -> RoiSample:
    """Each image's proposals plus its true boxes, matched at IoU 0.5 and sampled."""
    parts: list[list[torch.Tensor]] = [[], [], [], [], []]
    for i, (props, t) in enumerate(zip(proposals, targets)):
        candidates = torch.cat([props, t.boxes])
        matched, label = match(detection.box_iou(t.boxes, candidates), 0.5, 0.5, best_too=False)
        pos, neg = sample(label, batch, positive_fraction, gen)
        chosen = torch.cat([pos, neg])
        classes = torch.zeros(len(chosen), dtype=torch.long, device=candidates.device)
        box_targets = torch.zeros(len(chosen), 4, device=candidates.device)
        if len(pos):
            classes[: len(pos)] = t.classes[matched[pos]]
            box_targets[: len(pos)] = detection.encode_boxes(t.boxes[matched[pos]], candidates[pos], BOX_WEIGHTS)
        for part, value in zip(parts, (candidates[chosen], torch.full((len(chosen),), i, dtype=torch.long, device=candidates.device), classes,
                                       box_targets, matched[chosen])):
            part.append(value)
    return RoiSample(*(torch.cat(p) for p in parts))


def box_losses(logits: torch.Tensor, deltas: torch.Tensor, rois: RoiSample) -> dict[str, torch.Tensor]:
    """Class cross-entropy and the true class's smooth L1 box loss (``deltas [R, classes, 4]``)."""
    pos = torch.nonzero(rois.classes > 0).flatten()
    box = F.smooth_l1_loss(deltas[pos, rois.classes[pos]], rois.box_targets[pos], beta=SMOOTH_L1_BETA, reduction="sum")
    return {"box_class": F.cross_entropy(logits, rois.classes), "box_regression": box / max(1, len(rois.classes))}


def mask_loss(mask_logits: torch.Tensor, rois: RoiSample, targets: list[ImageTargets], positives: torch.Tensor) -> torch.Tensor:
    """BCE of the true class's ``[P, classes, S, S]`` logits of the ``positives`` RoIs against
    each object's mask RoI-aligned to the RoI."""
    if len(positives) == 0:
        return mask_logits.sum() * 0.0
    size = mask_logits.shape[-1]
    wanted = []
    for i, t in enumerate(targets):
        mine = positives[rois.batch_index[positives] == i]
        if len(mine) == 0:
            continue
        obj = rois.object_index[mine]
        wanted.append(detection.roi_align(t.masks[:, None], rois.rois[mine], obj, (size, size), 1.0, 2)[:, 0])
    # positives are grouped by image in sample_rois' order, so the targets line up
    chosen = mask_logits[torch.arange(len(positives), device=positives.device), rois.classes[positives]]
    return F.binary_cross_entropy_with_logits(chosen, torch.cat(wanted))
