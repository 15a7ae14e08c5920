"""An exported instance network against PyTorch: the same detections, at batch 1 and batch 4.

A detection of the reference is matched by one of the graph's with the same class, a box IoU of
at least ``MATCH_IOU`` and a score within ``SCORE_TOLERANCE``; every reference detection must be
matched and the graph must find no others. Logit-style agreement does not apply: outputs are
lists of objects, and a box a hair over a suppression threshold legitimately reorders slots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segexport.instance_outputs import outputs_in_batches
from segexport.nn.detection import box_iou

MATCH_IOU = 0.99
SCORE_TOLERANCE = 1e-4
BATCH = 4


def match_detections(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any]:
    """Match two sets of padded outputs ``(boxes, scores, classes, masks, count)`` image by image.

    Returns:
        ``reference`` and ``candidate`` detection counts, ``matched``, the worst matched box IoU
        and score difference, and the largest mask-probability difference of matched pairs.
    """
    ref_n = cand_n = matched = 0
    worst_iou, worst_score, worst_mask = 1.0, 0.0, 0.0
    for i in range(len(reference[4])):
        k, m = int(reference[4][i]), int(candidate[4][i])
        ref_n, cand_n = ref_n + k, cand_n + m
        iou = box_iou(torch.from_numpy(reference[0][i, :k]).double(),
                      torch.from_numpy(candidate[0][i, :m]).double()).numpy()
        free = np.ones(m, dtype=bool)
        for r in range(k):
            ok = (free & (candidate[2][i, :m] == reference[2][i, r]) & (iou[r] >= MATCH_IOU)
                  & (np.abs(candidate[1][i, :m] - reference[1][i, r]) <= SCORE_TOLERANCE))
            if not ok.any():
                continue
            j = int(np.flatnonzero(ok)[np.argmax(iou[r][ok])])
            free[j] = False
            matched += 1
            worst_iou = min(worst_iou, float(iou[r, j]))
            worst_score = max(worst_score, float(abs(candidate[1][i, j] - reference[1][i, r])))
            worst_mask = max(worst_mask, float(np.abs(candidate[3][i, j] - reference[3][i, r]).max()))
    return {"reference": ref_n, "candidate": cand_n, "matched": matched, "min_box_iou": worst_iou,
            "max_score_error": worst_score, "max_mask_error": worst_mask}


def run_batches(session: Any, images: np.ndarray, batch: int) -> list[np.ndarray]:
    """An ONNX Runtime session's outputs on ``images``, ``batch`` at a time, joined per output."""
    names, image = [o.name for o in session.get_outputs()], session.get_inputs()[0].name
    return outputs_in_batches(lambda x: dict(zip(names, session.run(names, {image: x}))), images, batch)


def verify_instance_onnx(path: str | Path, model: nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """Run ``path`` in ONNX Runtime at batch 1 and at batch ``BATCH`` against ``model`` on ``images``.

    Returns:
        ``batch_1`` and ``batch_4`` match summaries, ``passed`` and ``problems``.
    """
    from segexport.runners.onnxruntime_runner import open_session

    session = open_session(path)
    with torch.no_grad():
        parts = [[t.numpy() for t in model(images[s : s + BATCH])] for s in range(0, len(images), BATCH)]
    reference = [np.concatenate(column) for column in zip(*parts)]
    x = images.numpy()
    report: dict[str, Any] = {"images": len(images), "match_iou": MATCH_IOU, "score_tolerance": SCORE_TOLERANCE,
                              "problems": []}
    for batch in (1, BATCH):
        found = match_detections(reference, run_batches(session, x, batch))
        report[f"batch_{batch}"] = found
        if not found["matched"] == found["reference"] == found["candidate"]:
            report["problems"].append(
                f"batch {batch}: {found['matched']} of PyTorch's {found['reference']} detections matched, "
                f"ONNX Runtime found {found['candidate']}")
    report["passed"] = not report["problems"]
    return report
