"""Verify an exported ONNX file against PyTorch on ONNX Runtime (CPU provider).

The same normalised images go through both; reported per run: argmax agreement (fraction of
pixels), max and mean |logit difference|. A dynamic batch axis is checked by running batch 1
and batch 4 and requiring identical per-image outputs; a dynamic size by running at several
sizes (an exporter can bake one size into a graph that still declares dynamic axes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segexport.errors import CheckFailed
from segexport.rewrite.common import argmax_agreement, max_abs_diff, run_batched
from segexport.runners.onnxruntime_runner import (
    open_session,
    ort_errors,
    run_onnx,
    static_batch,
)

AGREEMENT_BUDGET = 0.9999
BATCH = 4  # the batch size of the main run, and the larger side of the batch check
SIZE_CHECK_IMAGES = 8  # images per extra size of a dynamic-size check


def compare(onnx_out: dict[str, np.ndarray], logits: torch.Tensor) -> dict[str, Any]:
    """ONNX outputs vs PyTorch logits: agreement and logit errors (None without a logits output).

    Shapes that differ are a finding, not an exception: agreement 0 and a ``shape`` note.
    """
    n, _, h, w = logits.shape
    if "logits" in onnx_out:
        got = torch.from_numpy(onnx_out["logits"])
        if tuple(got.shape) != tuple(logits.shape):
            return {"agreement": 0.0, "max_logit_error": None, "mean_logit_error": None,
                    "shape": f"logits {tuple(got.shape)}, expected {tuple(logits.shape)}"}
        diff = (got.double() - logits.double()).abs()
        return {"agreement": argmax_agreement(got, logits), "max_logit_error": max_abs_diff(got, logits),
                "mean_logit_error": float(diff.mean())}
    labels = torch.from_numpy(onnx_out["labels"]).long()
    if tuple(labels.shape) != (n, h, w):
        return {"agreement": 0.0, "max_logit_error": None, "mean_logit_error": None,
                "shape": f"labels {tuple(labels.shape)}, expected {(n, h, w)}"}
    agreement = float((labels == logits.argmax(1)).double().mean())
    return {"agreement": agreement, "max_logit_error": None, "mean_logit_error": None}


def _labels_check(onnx_out: dict[str, np.ndarray], n: int, h: int, w: int) -> dict[str, Any] | None:
    """The ``labels`` output: int32, ``[N, H, W]``, equal to the argmax of ``logits`` if present."""
    if "labels" not in onnx_out:
        return None
    labels = onnx_out["labels"]
    result: dict[str, Any] = {"dtype": str(labels.dtype), "shape": list(labels.shape)}
    result["ok"] = labels.dtype == np.int32 and labels.shape == (n, h, w)
    if "logits" in onnx_out:
        result["equals_logits_argmax"] = bool(result["ok"] and np.array_equal(labels, onnx_out["logits"].argmax(1)))
        result["ok"] = result["equals_logits_argmax"]
    return result


def _batch_check(session: Any, images: torch.Tensor, batched: dict[str, np.ndarray]) -> dict[str, Any]:
    """Batch 1 vs batch ``BATCH``: per-image outputs must be identical."""
    count = min(BATCH, len(images))
    singles = run_onnx(session, images[:count], 1)
    diffs = [float(np.abs(singles[k].astype(np.float64) - batched[k][:count]).max()) for k in singles
             if singles[k].shape == batched[k][:count].shape]
    same_shapes = len(diffs) == len(singles)
    identical = same_shapes and all(np.array_equal(singles[k], batched[k][:count]) for k in singles)
    return {"batch_sizes": [1, BATCH], "images": count, "identical": identical,
            "max_diff": max(diffs) if same_shapes else None}


def _size_check(session: Any, model: nn.Module, images: torch.Tensor, size: tuple[int, int], batch: int) -> dict[str, Any]:
    """ONNX vs PyTorch at another input size (the images resized bilinearly)."""
    x = F.interpolate(images[:SIZE_CHECK_IMAGES], size=size, mode="bilinear", align_corners=False)
    result: dict[str, Any] = {"size": list(size)}
    try:
        out = run_onnx(session, x, batch)
    except ort_errors() as exc:
        return {**result, "agreement": 0.0, "max_logit_error": None, "mean_logit_error": None,
                "error": f"ONNX Runtime failed: {str(exc).splitlines()[0][:200]}"}
    return {**result, **compare(out, run_batched(model, x))}


def _problems(report: dict[str, Any], min_agreement: float) -> list[str]:
    problems = []
    runs = [("export size", report)] + [(f"{s['size'][0]}x{s['size'][1]}", s) for s in report["sizes"][1:]]
    for where, run in runs:
        if run.get("error") or run.get("shape"):
            problems.append(f"at {where}: {run.get('error') or run.get('shape')}")
        elif run["agreement"] < min_agreement:
            problems.append(f"at {where}: argmax agreement {run['agreement']:.6f} < {min_agreement}")
    if report["labels"] is not None and not report["labels"]["ok"]:
        problems.append(f"labels output is {report['labels']['dtype']} {report['labels']['shape']}, "
                        "expected int32 [N, H, W] equal to the argmax of logits")
    if report["batch"] is not None and not report["batch"]["identical"]:
        problems.append(f"batch 1 and batch {BATCH} give different results (max diff {report['batch']['max_diff']})")
    return problems


def verify_onnx(
    onnx_path: str | Path,
    model: nn.Module,
    images: torch.Tensor,
    *,
    reference: nn.Module | None = None,
    sizes: Sequence[tuple[int, int]] = (),
    min_agreement: float = AGREEMENT_BUDGET,
) -> dict[str, Any]:
    """Run ``onnx_path`` on ONNX Runtime and ``model`` in PyTorch on the same images and compare.

    Args:
        onnx_path: an ONNX file with one NCHW float input and outputs ``logits`` and/or ``labels``.
        model: the PyTorch model that was exported (eval mode).
        images: normalised images ``[N, 3, H, W]`` at the export size.
        reference: another model to report agreement against (e.g. the model before rewrites);
            recorded, not judged.
        sizes: further (height, width) to verify at, for graphs with dynamic height and width.
        min_agreement: the smallest argmax agreement that passes, at every size.

    Returns:
        ``agreement``, ``max_logit_error``, ``mean_logit_error`` at the export size, plus
        ``vs_original`` (against ``reference``), ``labels``, ``batch`` (dynamic batch only),
        ``sizes`` (one entry per size, the export size first), ``passed`` and ``problems``.

    Raises:
        InputError: ONNX Runtime cannot load the file.
    """
    session = open_session(onnx_path)
    static = static_batch(session)
    batch = static or BATCH
    logits = run_batched(model, images)
    try:
        out = run_onnx(session, images, batch)
    except ort_errors() as exc:
        raise CheckFailed(f"{onnx_path}: ONNX Runtime fails at the export size ({str(exc).splitlines()[0][:200]})") from exc
    n, _, h, w = logits.shape
    main = compare(out, logits)
    report: dict[str, Any] = {"images": n, "input_size": [h, w], "batch": None, **main}
    report["vs_original"] = compare(out, run_batched(reference, images)) if reference is not None else None
    report["labels"] = _labels_check(out, n, h, w)
    if static is None:
        report["batch"] = _batch_check(session, images, out)
    extra = [tuple(s) for s in sizes if tuple(s) != (h, w)]
    report["sizes"] = [{"size": [h, w], **main}]
    report["sizes"] += [_size_check(session, model, images, s, batch) for s in extra]
    report["problems"] = _problems(report, min_agreement)
    report["passed"] = not report["problems"]
    return report
