"""COCO box and mask AP of instance predictions, computed by pycocotools' ``COCOeval``.

AP is COCO's: the mean over IoU thresholds 0.50:0.05:0.95 (``*_ap``) and at 0.50 (``*_ap50``),
over classes, at up to 100 detections per image, with crowd regions neither hits nor misses.
The truth and the predictions are handed to pycocotools in memory (RLE masks, ``[x, y, w, h]``
boxes); nothing is written. pycocotools prints its progress; that is kept off the terminal.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from segexport.data.instances import Instances

AP_KEYS = ("mask_ap", "mask_ap50", "box_ap", "box_ap50")


@dataclass(frozen=True, eq=False)
class Detections:
    """A network's objects in one image, best first or in any order.

    Attributes:
        classes: ``[D]`` int class indices (1.., as the data set's ``classes``).
        scores: ``[D]`` float confidences.
        boxes: ``[D, 4]`` float ``(x1, y1, x2, y2)`` in pixels (far edges exclusive).
        masks: ``[D, H, W]`` bool (thresholded at 0.5 by whoever made them).
    """

    classes: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _coco_truth(truth: list[Instances], size: list[tuple[int, int]], num_classes: int) -> Any:
    from pycocotools.coco import COCO

    images, annotations = [], []
    for image_id, (inst, (h, w)) in enumerate(zip(truth, size), start=1):
        images.append({"id": image_id, "height": h, "width": w})
        for k in range(len(inst)):
            mask = inst.masks[k]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(inst.classes[k]),
                "segmentation": _rle(mask), "area": float(mask.sum()), "bbox": _xywh(inst.boxes[k]),
                "iscrowd": int(inst.crowd[k]),
            })
    coco = COCO()
    coco.dataset = {"info": {}, "licenses": [], "images": images, "annotations": annotations,
                    "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _results(predictions: list[Detections], kind: str) -> list[dict[str, Any]]:
    out = []
    for image_id, det in enumerate(predictions, start=1):
        for k in range(len(det)):
            item = {"image_id": image_id, "category_id": int(det.classes[k]), "score": float(det.scores[k])}
            if kind == "segm":
                item["segmentation"] = _rle(det.masks[k])
            else:
                item["bbox"] = _xywh(det.boxes[k])
            out.append(item)
    return out


def _evaluate(coco: Any, results: list[dict[str, Any]], kind: str) -> tuple[float, float]:
    """(AP@[.5:.95], AP50) of ``results`` against ``coco``; 0 for no results at all."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        found = coco.loadRes(results)
        ev = COCOeval(coco, found, kind)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return tuple(max(0.0, float(v)) for v in ev.stats[:2])  # type: ignore[return-value]


def instance_ap(truth: list[Instances], predictions: list[Detections], sizes: list[tuple[int, int]],
                num_classes: int) -> dict[str, float]:
    """COCO mask and box AP of ``predictions`` against ``truth``, image by image.

    Args:
        truth: each image's labelled objects.
        predictions: each image's detections, in the same order.
        sizes: each image's ``(height, width)``.
        num_classes: the data set's classes, background included.

    Returns:
        ``mask_ap``, ``mask_ap50``, ``box_ap`` and ``box_ap50``, each in [0, 1]. A class with no
        labelled object anywhere is left out of the mean, as COCOeval does; with no labelled
        object at all every AP is 0.
    """
    if not (len(truth) == len(predictions) == len(sizes)):
        raise ValueError(f"{len(truth)} labelled images, {len(predictions)} predicted, {len(sizes)} sizes")
    if not any(len(t) for t in truth):
        return dict.fromkeys(AP_KEYS, 0.0)
    coco = _coco_truth(truth, sizes, num_classes)
    mask_ap, mask_ap50 = _evaluate(coco, _results(predictions, "segm"), "segm")
    box_ap, box_ap50 = _evaluate(coco, _results(predictions, "bbox"), "bbox")
    return {"mask_ap": mask_ap, "mask_ap50": mask_ap50, "box_ap": box_ap, "box_ap50": box_ap50}
