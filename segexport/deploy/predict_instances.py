"""``segexport predict`` for instance networks: each image's detections, drawn and listed.

The padded outputs of one image (``boxes``, ``scores``, ``classes``, ``masks``, ``count``) are
brought back to the image: boxes scaled from the input size (``resize`` models) or kept
(``pad`` models, whose image sits at the top left), masks pasted into their boxes at the
image's own size (``instance_outputs.paste_masks``, as verification does at the input size).
Detections scoring below ``min_score`` are left out of the files.

Written per image, beside the semantic networks' ``STEM.png`` (the classes the detections
paint, most confident on top, as a palette PNG of class indices):

- ``STEM.json``: every detection, best first: class index and name, score, box
  ``[x1, y1, x2, y2]`` in image pixels and mask area in pixels;
- with ``overlay``, ``STEM.overlay.png``: each object in a colour of its own blended into the
  image, with its box outline and a ``class score`` label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from segexport.errors import ConfigError
from segexport.fsutil import atomic_path
from segexport.instance_metrics import Detections
from segexport.instance_outputs import paste_masks

MIN_SCORE = 0.5  # the usual display threshold of Mask R-CNN demos


def check_min_score(min_score: float | None, instance: bool) -> float:
    """``--min-score`` for an instance network (default :data:`MIN_SCORE`).

    Raises:
        ConfigError: given for a semantic network, or outside [0, 1].
    """
    if min_score is None:
        return MIN_SCORE
    if not instance:
        raise ConfigError("--min-score applies to instance networks (maskrcnn, panet); drop it")
    if not 0.0 <= min_score <= 1.0:
        raise ConfigError(f"--min-score must be between 0 and 1, got {min_score}")
    return float(min_score)


def image_detections(outputs: dict[str, np.ndarray], index: int, image_size: tuple[int, int],
                     input_size: tuple[int, int], resize: str, min_score: float) -> Detections:
    """Image ``index``'s detections scoring at least ``min_score``, in the image's pixels."""
    k = int(outputs["count"][index])
    keep = np.flatnonzero(outputs["scores"][index, :k] >= min_score)
    height, width = image_size
    boxes = outputs["boxes"][index, keep].astype(np.float32)
    if resize == "resize":  # the image was stretched to the input size: stretch the boxes back
        boxes = boxes * np.asarray([width / input_size[1], height / input_size[0]] * 2, dtype=np.float32)
    boxes = np.clip(boxes, 0, np.asarray([width, height, width, height], dtype=np.float32))
    masks = paste_masks(outputs["masks"][index, keep], boxes, height, width)
    return Detections(classes=outputs["classes"][index, keep].astype(np.int64),
                      scores=outputs["scores"][index, keep].astype(np.float32), boxes=boxes, masks=masks)


def _overlay(image: np.ndarray, found: Detections, classes: tuple[str, ...], palette: np.ndarray,
             alpha: float) -> Image.Image:
    """Each object blended in its own colour (the palette from index 1), its box and label drawn."""
    blended = image.astype(np.float32)
    order = np.argsort(found.scores, kind="stable")  # the most confident drawn last, on top
    for i in order:
        colour = palette[1 + i % (len(palette) - 1)].astype(np.float32)
        mask = found.masks[i]
        blended[mask] = blended[mask] * (1 - alpha) + colour * alpha
    picture = Image.fromarray(np.round(blended).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for i in order:
        colour = tuple(int(c) for c in palette[1 + i % (len(palette) - 1)])
        x1, y1, x2, y2 = (float(v) for v in found.boxes[i])
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour)
        name = classes[found.classes[i]] if found.classes[i] < len(classes) else str(found.classes[i])
        draw.text((x1 + 1, y1), f"{name} {found.scores[i]:.2f}", fill=colour)
    return picture


def save_instances(stem: str, image: np.ndarray, found: Detections, classes: tuple[str, ...], palette: np.ndarray,
                   out: Path, overlay: bool, alpha: float) -> tuple[Path, Path | None]:
    """Write ``STEM.json`` (and ``STEM.overlay.png``); their paths."""
    listed = [{"class": int(found.classes[i]),
               "name": classes[found.classes[i]] if found.classes[i] < len(classes) else None,
               "score": round(float(found.scores[i]), 6), "box": [round(float(v), 2) for v in found.boxes[i]],
               "mask_pixels": int(found.masks[i].sum())} for i in np.argsort(-found.scores, kind="stable")]
    listing = out / f"{stem}.json"
    with atomic_path(listing) as tmp:
        tmp.write_text(json.dumps({"detections": listed}, indent=1) + "\n")
    if not overlay:
        return listing, None
    path = out / f"{stem}.overlay.png"
    with atomic_path(path) as tmp:
        _overlay(image, found, classes, palette, alpha).save(tmp, format="PNG")
    return listing, path
