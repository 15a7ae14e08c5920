"""Instance labels: what Mask R-CNN-style networks learn from and are judged against.

An image's instances are parallel arrays: one box, one class and one mask per object. Boxes are
``(x1, y1, x2, y2)`` in pixels with the far edges exclusive, so ``x2 - x1`` is the width COCO's
``[x, y, w, h]`` boxes and ``pycocotools.mask.toBbox`` give for the same mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segexport.data.source import IGNORE_INDEX


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous
class Instances:
    """The objects of one image.

    Attributes:
        classes: ``[K]`` int64 class indices (into the source's ``classes``; never 0, background).
        masks: ``[K, H, W]`` bool, each object's visible pixels.
        boxes: ``[K, 4]`` float32 ``(x1, y1, x2, y2)``, the tight box of each mask (far edges
            exclusive).
        crowd: ``[K]`` bool, COCO's ``iscrowd`` regions: counted by the evaluation as neither a
            hit nor a miss, and ignored by training.
    """

    classes: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    crowd: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        k = len(self.classes)
        if len(self.crowd) == 0 and k:  # not given: no crowd regions
            object.__setattr__(self, "crowd", np.zeros(k, dtype=bool))
        if self.masks.ndim != 3 or len(self.masks) != k or self.boxes.shape != (k, 4) or len(self.crowd) != k:
            raise ValueError(f"instances disagree: {k} classes, masks {self.masks.shape}, boxes {self.boxes.shape}, "
                             f"{len(self.crowd)} crowd flags")

    def __len__(self) -> int:
        return len(self.classes)

    @classmethod
    def from_masks(cls, classes: np.ndarray | list[int], masks: np.ndarray,
                   crowd: np.ndarray | None = None) -> Instances:
        """Instances whose boxes are the tight boxes of ``masks`` ``[K, H, W]``."""
        masks = np.asarray(masks, dtype=bool)
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        crowd = np.zeros(len(classes), dtype=bool) if crowd is None else np.asarray(crowd, dtype=bool)
        return cls(classes, masks, masks_to_boxes(masks), crowd)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """``[K, 4]`` float32 tight boxes ``(x1, y1, x2, y2)`` (far edges exclusive) of ``[K, H, W]``
    masks; an empty mask gets a zero box."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows):
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def semantic_from_instances(instances: Instances, height: int, width: int) -> np.ndarray:
    """The ``H x W`` uint8 class map the instances paint: larger objects first, so a small one on
    top of a large one stays visible; crowd regions not covered by an object become
    ``IGNORE_INDEX``; everything else is background (0)."""
    out = np.zeros((height, width), dtype=np.uint8)
    crowd = np.zeros((height, width), dtype=bool)
    order = np.argsort(-instances.masks.reshape(len(instances), -1).sum(axis=1), kind="stable")
    for i in order:
        if instances.crowd[i]:
            crowd |= instances.masks[i]
        else:
            out[instances.masks[i]] = instances.classes[i]
    out[crowd & (out == 0)] = IGNORE_INDEX
    return out
