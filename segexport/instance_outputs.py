"""From an instance network's padded outputs to objects in the image.

Every backend returns the same five arrays (see :mod:`segexport.models.instance_shell`):
``boxes [N, D, 4]``, ``scores [N, D]``, ``classes [N, D]``, ``masks [N, D, M, M]`` (probabilities
in box coordinates) and ``count [N]``. This module turns them into per-image
:class:`~segexport.instance_metrics.Detections` with full-image masks, and renders the semantic
class map the detections paint, on the host and identically for every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from segexport.instance_metrics import Detections

MASK_THRESHOLD = 0.5
OUTPUTS = ("boxes", "scores", "classes", "masks", "count")  # the padded outputs, in the graph's order


def outputs_in_batches(run: Callable[[np.ndarray], dict[str, np.ndarray]], images: np.ndarray,
                       batch: int) -> list[np.ndarray]:
    """The padded outputs of ``run`` (a runner's ``run_outputs``) on ``images``, ``batch`` at a
    time, joined per output in :data:`OUTPUTS` order.

    Raises:
        KeyError: an output missing from what ``run`` returns.
    """
    parts = [run(images[start : start + batch]) for start in range(0, len(images), batch)]
    return [np.concatenate([part[name] for part in parts]) for name in OUTPUTS]


def paste_masks(masks: np.ndarray, boxes: np.ndarray, height: int, width: int,
                threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """``[D, M, M]`` box-relative probabilities -> ``[D, H, W]`` bool image masks.

    A pixel inside a box samples the box's mask bilinearly at its centre (half-pixel
    coordinates, edges clamped, the geometry RoIAlign used to make the training targets) and is
    set where the probability is at least ``threshold``; pixels outside the box are never set.
    """
    d, m = masks.shape[0], masks.shape[-1]
    out = np.zeros((d, height, width), dtype=bool)
    for i in range(d):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            continue
        c0, c1 = max(0, int(np.floor(x1))), min(width, int(np.ceil(x2)))
        r0, r1 = max(0, int(np.floor(y1))), min(height, int(np.ceil(y2)))
        if c1 <= c0 or r1 <= r0:
            continue
        u = np.clip((np.arange(c0, c1) + 0.5 - x1) / (x2 - x1) * m - 0.5, 0, m - 1)
        v = np.clip((np.arange(r0, r1) + 0.5 - y1) / (y2 - y1) * m - 0.5, 0, m - 1)
        u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
        u1, v1 = np.minimum(u0 + 1, m - 1), np.minimum(v0 + 1, m - 1)
        fu, fv = (u - u0)[None, :], (v - v0)[:, None]
        p = masks[i]
        value = ((1 - fv) * ((1 - fu) * p[v0][:, u0] + fu * p[v0][:, u1])
                 + fv * ((1 - fu) * p[v1][:, u0] + fu * p[v1][:, u1]))
        inside_x = (np.arange(c0, c1) + 0.5 >= x1) & (np.arange(c0, c1) + 0.5 <= x2)
        inside_y = (np.arange(r0, r1) + 0.5 >= y1) & (np.arange(r0, r1) + 0.5 <= y2)
        out[i, r0:r1, c0:c1] = (value >= threshold) & inside_y[:, None] & inside_x[None, :]
    return out


def detections_from_outputs(outputs: Sequence[np.ndarray], height: int, width: int) -> list[Detections]:
    """Per image, the filled slots of ``(boxes, scores, classes, masks, count)`` with pasted masks."""
    boxes, scores, classes, masks, count = (np.asarray(o) for o in outputs)
    found = []
    for i in range(len(count)):
        k = int(count[i])
        found.append(Detections(classes=classes[i, :k].astype(np.int64), scores=scores[i, :k].astype(np.float32),
                                boxes=boxes[i, :k].astype(np.float32),
                                masks=paste_masks(masks[i, :k].astype(np.float32), boxes[i, :k], height, width)))
    return found


def render_semantic(detections: Detections, height: int, width: int) -> np.ndarray:
    """The ``H x W`` uint8 class map the detections paint, the most confident on top; 0 elsewhere."""
    out = np.zeros((height, width), dtype=np.uint8)
    for i in np.argsort(detections.scores, kind="stable"):
        out[detections.masks[i]] = detections.classes[i]
    return out
