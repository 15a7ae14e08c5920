"""The export stage: source -> rewrites -> ONNX -> verification, written to ``model.onnx`` and
``rewrites.json``.

Verification images are the built-in ``synthetic`` val split at the export size, preprocessed
with the model's own normalisation; learned transposed convs are fitted on the ``calib`` split.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segexport import limits
from segexport.data import Preprocess, load_arrays, normalize_batch, open_dataset
from segexport.errors import CheckFailed, ConfigError, SegexportError
from segexport.export.metadata import export_metadata
from segexport.export.onnx_export import (
    DEFAULT_OPSET,
    OUTPUT_NAMES,
    OnnxExport,
    check_export_options,
    export_onnx,
)
from segexport.export.verify_instances import verify_instance_onnx
from segexport.export.verify_onnx import AGREEMENT_BUDGET, verify_onnx
from segexport.export.verify_onnx import BATCH as VERIFY_BATCH
from segexport.fsutil import write_json
from segexport.models import check_input_size
from segexport.ownership import claim_outputs, path_source
from segexport.pipeline.sources import ExportSource, resolve_source
from segexport.postprocess import attach_conv_crf, check_crf_mode, crf_params
from segexport.postprocess.conv_crf import DEFAULT_ITERATIONS as DEFAULT_CRF_ITERATIONS
from segexport.postprocess.export import onnx_crf_error
from segexport.recipe import load_recipe
from segexport.rewrite.common import run_batched

ONNX_NAME = "model.onnx"
REWRITES_NAME = "rewrites.json"
DEFAULT_IMAGES = 32
CRF_TOLERANCE = 1e-4  # max |ONNX - PyTorch| of an exported CRF given the same logits


@dataclass
class ExportResult:
    """Paths written by :func:`export_model`, its summary and warnings for the user."""

    onnx_path: Path
    rewrites_path: Path
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Data:
    images: torch.Tensor  # normalised val images at the export size
    masks: torch.Tensor  # int64, 255 = ignore
    calib: torch.Tensor  # normalised calib images
    classes: int  # classes of the data set


def _load_data(preprocess: Preprocess, count: int, seed: int) -> _Data:
    val = open_dataset("synthetic", "val", size=preprocess.size, seed=seed, length=count)
    calib = open_dataset("synthetic", "calib", size=preprocess.size, seed=seed, length=count)
    images, masks = load_arrays(val, preprocess)
    calib_images, _ = load_arrays(calib, preprocess)
    return _Data(
        images=normalize_batch(torch.from_numpy(images), preprocess),
        masks=torch.from_numpy(masks).long(),
        calib=normalize_batch(torch.from_numpy(calib_images), preprocess),
        classes=len(val.classes),
    )


def check_sizes(input_size: tuple[int, int], divisor: int) -> list[tuple[int, int]]:
    """The three sizes a dynamic-size graph is verified at: the export size and two larger
    ones that change height and width independently (valid multiples of ``divisor``)."""
    h, w = input_size
    return [(h, w), (h + divisor, w + 2 * divisor), (h + 2 * divisor, w + divisor)]


def _probe_sizes(model: nn.Module, images: torch.Tensor, sizes: list[tuple[int, int]]) -> None:
    """Run ``model`` once at every size, so a size it cannot support is an error before export.

    Raises:
        ConfigError: the model (after rewrites) fails at one of ``sizes``.
    """
    for h, w in sizes[1:]:
        x = torch.nn.functional.interpolate(images[:1], size=(h, w), mode="bilinear", align_corners=False)
        try:
            with torch.no_grad():
                model(x)
        except (SegexportError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"--dynamic-hw: the model cannot run at {h}x{w} after rewrites ({reason}); "
                "export at one size without --dynamic-hw"
            ) from exc


def _rewrite(src: ExportSource, data: _Data, keep_deconv: bool, notes: list[str]) -> tuple[nn.Module, list]:
    from segexport.rewrite import apply_rewrites

    # Fitting learned deconvs is judged on val masks; they must be labels of this model.
    labelled = data.classes <= len(src.classes)
    if not labelled:
        notes.append(
            f"the synthetic data has {data.classes} classes, the model {len(src.classes)}: "
            "learned transposed convs are not fitted"
        )
    return apply_rewrites(
        src.model, data.images, keep_deconv=keep_deconv,
        fit_images=data.calib if labelled else None,
        val=(data.images, data.masks) if labelled else None,
    )


def _output_names(model: nn.Module, output: str) -> tuple[str, ...]:
    return tuple(model.output_names) if getattr(model, "task", "semantic") == "instance" else OUTPUT_NAMES[output]


def _export(
    src: ExportSource, model: nn.Module, path: Path, preprocess: Preprocess, *, opset: int,
    dynamic_batch: bool, dynamic_hw: bool, output: str, simplify: bool, crf: dict[str, Any] | None = None,
) -> OnnxExport:
    """``export_onnx`` with the metadata of ``src`` at ``preprocess.size`` (and of an in-graph CRF)."""
    metadata: dict[str, Any] = export_metadata(
        arch=src.arch, classes=src.classes, preprocess=preprocess, input_size=preprocess.size, opset=opset,
        outputs=_output_names(src.model, output), source=src.source, source_sha256=src.sha256,
        dynamic_batch=dynamic_batch, dynamic_hw=dynamic_hw, input_divisor=src.model.input_divisor,
        task=getattr(src.model, "task", "semantic"),
    )
    if crf is not None:
        metadata.update({"crf": crf["mode"], "crf_params": crf["params"], "crf_window": crf["window"],
                         "crf_dilation": crf["dilation"]})
    return export_onnx(
        model, path, input_size=preprocess.size, opset=opset, dynamic_batch=dynamic_batch,
        dynamic_hw=dynamic_hw, output=output, simplify=simplify, metadata=metadata,
    )


def _summary(src: ExportSource, exported: OnnxExport, report: dict[str, Any], options: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
    original = report["vs_original"] or {}
    return {
        "arch": src.arch,
        "source": src.source,
        "source_sha256": src.sha256,
        **options,
        "opset": exported.opset,
        "ir_version": exported.ir_version,
        "outputs": list(exported.outputs),
        "nodes": {"exported": exported.nodes_exported, "final": exported.nodes_final},
        "op_counts": exported.op_counts,
        "agreement": report["agreement"],
        "max_logit_error": report["max_logit_error"],
        "mean_logit_error": report["mean_logit_error"],
        "agreement_vs_original": original.get("agreement"),
        "max_logit_error_vs_original": original.get("max_logit_error"),
        "agreement_budget": AGREEMENT_BUDGET,
        "sizes_checked": [s["size"] for s in report["sizes"]],
        "passed": report["passed"],
        "problems": report["problems"],
        "verification": report,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def _check_crf_part(
    path: Path, wrapped: Any, logits: torch.Tensor, images: torch.Tensor, crf: dict[str, Any], report: dict[str, Any]
) -> None:
    """Measure the graph's CRF alone against PyTorch's on the network's ``logits``
    (``crf["onnx_crf_error"]``); past ``CRF_TOLERANCE``, or past 4x the CRF's own float32
    error when that is larger (many iterations), it is a problem in ``report``."""
    error = onnx_crf_error(path, wrapped.crf, logits, images)
    tolerance = max(CRF_TOLERANCE, 4 * crf["float32_error"])
    crf.update(onnx_crf_error=error, onnx_crf_tolerance=tolerance)
    if error > tolerance:
        report["problems"].append(f"the graph's CRF differs from PyTorch's by {error:.1e} on the same logits "
                                  f"(tolerance {tolerance:.1e})")
        report["passed"] = False


def _check_memory(shape: tuple[int, int], images: int) -> None:
    """A size or image count the machine cannot hold fails before any work (see :mod:`segexport.limits`)."""
    limits.check_inference_memory(shape, VERIFY_BATCH, "a smaller --input-size")
    limits.check_decoded_images(images, shape, "--images", rows=2)  # PyTorch's and ONNX Runtime's labels


def _export_source(src: ExportSource, out_dir: Path) -> str:
    """What the exported files are made from, for the output policy (a path relative to
    ``out_dir`` when the checkpoint lies inside it, as a build's ``reference/`` does)."""
    kind, _, where = src.source.partition(":")
    if kind in ("checkpoint", "weights"):
        return path_source(f"{src.arch} from {kind}", where, out_dir)
    return f"{src.arch} ({src.source})"


def _check_instance_options(*, dynamic_hw: bool, output: str, crf: str, keep_deconv: bool) -> None:
    """Options of semantic exports that an instance network refuses (its anchors are constants
    of the input size, and it outputs detections, not logits)."""
    for given, flag in ((dynamic_hw, "--dynamic-hw"), (output != "logits", f"--output {output}"),
                        (crf != "none", f"--crf {crf}"), (keep_deconv, "--keep-deconv")):
        if given:
            raise ConfigError(f"{flag} applies to semantic networks; export an instance network without it")


def _export_instances(src: ExportSource, out_dir: Path, preprocess: Preprocess, images: torch.Tensor,
                      notes: list[str], started: float, *, opset: int, dynamic_batch: bool,
                      simplify: bool) -> ExportResult:
    """An instance network's export: no rewrites (TensorRT parses every op of its graph), the
    padded detection outputs, and the detections matched against PyTorch's at batch 1 and 4."""
    model = src.model.eval()
    exported = _export(src, model, out_dir / ONNX_NAME, preprocess, opset=opset, dynamic_batch=dynamic_batch,
                       dynamic_hw=False, output="logits", simplify=simplify)
    t = time.perf_counter()
    report = verify_instance_onnx(exported.path, model, images)
    seconds = {"export": exported.seconds, "verify": time.perf_counter() - t, "total": time.perf_counter() - started}
    summary = {
        "arch": src.arch, "task": "instance", "source": src.source, "source_sha256": src.sha256,
        "input_size": list(preprocess.size), "dynamic_batch": dynamic_batch, "simplified": simplify,
        "images": len(images), "opset": exported.opset, "ir_version": exported.ir_version,
        "outputs": list(exported.outputs), "nodes": {"exported": exported.nodes_exported, "final": exported.nodes_final},
        "op_counts": exported.op_counts, "passed": report["passed"], "problems": report["problems"],
        "verification": report, "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    rewrites_path = out_dir / REWRITES_NAME
    write_json(rewrites_path, {"rewrites": [], "export": summary})
    if not report["passed"]:
        raise CheckFailed(f"{src.arch}: ONNX verification failed: {'; '.join(report['problems'])} (details in {rewrites_path})")
    return ExportResult(exported.path, rewrites_path, summary, notes)


def export_model(
    source: str,
    *,
    out: str | Path | None = None,
    size: str | None = None,
    checkpoint: str | Path | None = None,
    input_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    keep_deconv: bool = False,
    simplify: bool = True,
    output: str = "logits",
    images: int = DEFAULT_IMAGES,
    seed: int = 0,
    crf: str = "none",
    crf_iterations: int = DEFAULT_CRF_ITERATIONS,
    force: bool = False,
    overrides: dict[str, Any] | None = None,
) -> ExportResult:
    """Export ``source`` (``ARCH`` or a checkpoint folder) to a verified ONNX file.

    Args:
        source: a registered architecture or a folder written by ``segexport train``.
        out: output folder (default: ``builds/ARCH/export``, or the folder ``export`` beside a
            checkpoint folder, e.g. ``builds/fcn8s/reference`` -> ``builds/fcn8s/export``).
        size, checkpoint, overrides: for an architecture name or a user's network
            (``MODULE:CALLABLE``; see :func:`resolve_source`).
        input_size: (height, width); default: the checkpoint's or the recipe's size.
        opset, dynamic_batch, dynamic_hw, simplify, output: see :func:`export_onnx`.
        keep_deconv: leave transposed convs as they are (no ``deconv_to_resize``).
        images: verification images (synthetic val split); also the calibration count.
        seed: data seed, and the random initialisation's seed without a checkpoint.
        crf: "conv" appends a ConvCRF (:mod:`segexport.postprocess.conv_crf`, parameters from
            the arch's recipe) to the graph, which then outputs refined logits; its agreement
            with the host CRF goes to the summary (``crf_vs_host``).
        crf_iterations: the ConvCRF's mean-field steps (default 3; see
            :mod:`segexport.postprocess.conv_crf` for why not the host CRF's 10).
        force: write into ``out`` even where it holds files segexport did not write, or another
            model's export (nothing is deleted; see :func:`segexport.ownership.claim_outputs`).

    Returns:
        The ONNX and ``rewrites.json`` paths, the summary (also in ``rewrites.json``) and notes.

    Raises:
        InputError, UnknownNameError, ConfigError, CheckpointError: bad source or options.
        CheckFailed: ONNX Runtime disagrees with PyTorch (agreement below 0.9999 at any
            checked size, or batch 1 and 4 differ), after ``rewrites.json`` is written.
    """
    started = time.perf_counter()
    check_export_options(opset, output)
    check_crf_mode(crf)
    if images < 1:
        raise ConfigError(f"images must be at least 1, got {images}")
    limits.check_count(images, "--images", limits.IMAGES_MAX)
    limits.check_seed(seed)
    limits.check_input_size(input_size)
    src = resolve_source(source, size=size, checkpoint=checkpoint, seed=seed, overrides=overrides)
    _check_memory(tuple(input_size or src.preprocess.size), images)
    out_dir = Path(out) if out is not None else src.default_out
    claim_outputs(out_dir, [ONNX_NAME, REWRITES_NAME], source=_export_source(src, out_dir), force=force)
    shape = tuple(input_size or src.preprocess.size)
    check_input_size(src.model, *shape)
    preprocess = dataclasses.replace(src.preprocess, size=shape)
    data = _load_data(preprocess, images, seed)
    notes = list(src.notes)
    if getattr(src.model, "task", "semantic") == "instance":
        _check_instance_options(dynamic_hw=dynamic_hw, output=output, crf=crf, keep_deconv=keep_deconv)
        return _export_instances(src, out_dir, preprocess, data.images, notes, started, opset=opset,
                                 dynamic_batch=dynamic_batch, simplify=simplify)
    t = time.perf_counter()
    rewritten, records = _rewrite(src, data, keep_deconv, notes)
    seconds = {"rewrite": time.perf_counter() - t}
    reference, crf_report = src.model, None
    if crf == "conv":
        t = time.perf_counter()
        with torch.no_grad():
            logits = run_batched(rewritten, data.images)
        rewritten, reference, crf_report = attach_conv_crf(
            rewritten, src.model, data.images, preprocess, crf_params(load_recipe(src.arch)),
            logits=logits, iterations=crf_iterations)
        seconds["crf"] = time.perf_counter() - t
    sizes = check_sizes(shape, src.model.input_divisor) if dynamic_hw else []
    _probe_sizes(rewritten, data.images, sizes)
    graph = {"opset": opset, "dynamic_batch": dynamic_batch, "dynamic_hw": dynamic_hw, "output": output}
    exported = _export(src, rewritten, out_dir / ONNX_NAME, preprocess, simplify=simplify, crf=crf_report, **graph)
    seconds["export"] = exported.seconds
    t = time.perf_counter()
    report = verify_onnx(exported.path, rewritten, data.images, reference=reference, sizes=sizes)
    if crf_report is not None:
        _check_crf_part(exported.path, rewritten, logits, data.images, crf_report, report)
    seconds["verify"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    options = {"input_size": list(shape), "dynamic_batch": dynamic_batch, "dynamic_hw": dynamic_hw,
               "output": output, "simplified": simplify, "keep_deconv": keep_deconv, "images": images, "crf": crf}
    summary = _summary(src, exported, report, options, seconds)
    summary["crf_vs_host"] = crf_report
    rewrites_path = out_dir / REWRITES_NAME
    write_json(rewrites_path, {"rewrites": [r.to_dict() for r in records], "export": summary})
    if not report["passed"]:
        raise CheckFailed(f"{src.arch}: ONNX verification failed: {'; '.join(report['problems'])} (details in {rewrites_path})")
    return ExportResult(exported.path, rewrites_path, summary, notes)
