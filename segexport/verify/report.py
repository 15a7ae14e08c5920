"""``verify_build``: every variant of a build folder against the PyTorch reference, on the same inputs.

The val data is loaded and normalised once; every row (the PyTorch FP32 reference first, then
each variant of ``build.json``) opens its runner, predicts every image, is timed, and is
closed again, so only one model is in memory at a time. The report is ``report.json``
(the dict returned), ``report.md``, ``parity.png``, ``latency.png`` and, on request, JUnit XML.
A broken budget is a ``pass: false`` in the report, not an exception: callers decide.

Under ``torchrun`` every process scores its shard of the val images (contiguous, aligned to a
block every runner's batch divides, so each batch holds the images it holds in one process)
and the integer counts (confusion matrices, agreeing pixels) are summed: mIoU, per-class IoU,
pixel accuracy and agreement equal the single-process figures exactly. Rank 0 alone keeps
logits (of the first images, as in one process), times the runners, draws and writes the
report; the others only score. A recipe with ``crf = "host"`` adds ``+crf`` rows (``crf_rows``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from segexport.checkpoint import ModelConfig
from segexport.distributed import (
    all_reduce_confusion,
    barrier,
    current_context,
    is_main_process,
    shard_range,
)
from segexport.errors import (
    CheckFailed,
    ConfigError,
    InputError,
    MissingDependencyError,
)
from segexport.fsutil import atomic_path, check_output_file, write_json
from segexport.ownership import claim_outputs
from segexport.precision.evaluate import EVAL_BATCH, Prediction, load_val, logit_error
from segexport.progress import progress_bar
from segexport.runners import open_runner
from segexport.verify import instance_rows
from segexport.verify import latency as lat
from segexport.verify.crf_rows import measure_crf_rows
from segexport.verify.integrity import check_artifacts, check_counts
from segexport.verify.manifest import BuildManifest, VariantSpec, read_manifest
from segexport.verify.parity import (
    LOGIT_IMAGES,
    Inputs,
    RowPredictions,
    accuracy_figures,
    int8_pays,
    judge,
    p50_of,
    predict_inputs,
    summed_counts,
)
from segexport.verify.plots import LATENCY_PNG, PARITY_PNG, write_pictures
from segexport.verify.reference import is_reference, reference_config, reference_spec
from segexport.verify.render import JUNIT_SOURCE, render_markdown, write_junit

T = TypeVar("T")
REPORT_JSON, REPORT_MD = "report.json", "report.md"
REPORT_FILES = (REPORT_JSON, REPORT_MD, PARITY_PNG, LATENCY_PNG)
# PyTorch in float16 is an accuracy check (true half arithmetic); CPUs without native half
# kernels emulate it, minutes per image at paper size, so it is not timed on its own.
EMULATED_HALF = ("accuracy not measured, and PyTorch's float16 on a CPU is an accuracy check in emulated half "
                 "arithmetic, not a deployment to time")
_SCHEMA_KEYS = ("miou", "pixel_acc", "per_class_iou", "miou_drop_pts", "agreement", "max_abs_logit_error",
                "mean_abs_logit_error", "latency_ms", "runs", "latency_batch", "throughput_ips", "throughput_batch",
                "speedup_vs_pytorch", "speedup_vs_fp32", "int8_slower", "inference_precision", "peak_rss_mb", "device",
                "seconds", "error", "pass")


@dataclass
class _Shared:
    """What every row of one verification shares."""

    root: Path
    inputs: Inputs
    runs: int | None
    threads: int
    rank: int = 0
    world_size: int = 1
    reference: RowPredictions | None = None
    reference_miou: float | None = None
    task: str = "semantic"


def _shard_block(root: Path, manifest: BuildManifest, threads: int) -> int:
    """The block shards are cut in under torchrun: a multiple of every runner's batch and of
    ``LOGIT_IMAGES``, so batches are those of one process and rank 0's shard starts with the
    logit images. Rank 0 opens each non-torch runner once to learn its fixed batch (torch runners
    take any batch) and passes the block on; one it cannot open fails in its row later.
    """
    block = math.lcm(EVAL_BATCH, LOGIT_IMAGES)
    if current_context() is None:
        return block
    if is_main_process():
        for spec in manifest.variants:
            if spec.skipped or spec.backend == "torch":
                continue
            try:
                with open_runner(root / str(spec.artifact), backend=spec.backend, precision=spec.precision,
                                 threads=threads) as runner:
                    block = math.lcm(block, runner.fixed_batch or 1)
            except (MissingDependencyError, CheckFailed, InputError):
                continue  # measured below, where the row records why; its batch does not matter then
    # Only rank 0 contributes: the sum is its block, the same on every process.
    return int(all_reduce_confusion(np.asarray([block if is_main_process() else 0]))[0])


def _load_inputs(manifest: BuildManifest, config: ModelConfig, data: str | None, images: int | None,
                 accuracy: bool, block: int) -> Inputs:
    """The val images (normalised once, for every runner; this process's shard under torchrun),
    or seeded random ones without accuracy (timed on rank 0 only)."""
    preprocess = dataclasses.replace(config.preprocess, size=manifest.input_size)
    main = is_main_process()
    if not accuracy:
        rng = np.random.default_rng(manifest.seed)
        noise = rng.standard_normal((lat.THROUGHPUT_BATCH, 3, *manifest.input_size), dtype=np.float32)
        return Inputs(noise, None, range(len(noise)), noise if main else None)
    count = images or manifest.val_images or None
    if manifest.task == "instance":
        return instance_rows.load_instance_inputs(data or manifest.data, config, manifest.input_size, count=count,
                                                  seed=manifest.seed)
    val = load_val(data or manifest.data, preprocess, count=count, seed=manifest.seed,
                   num_classes=len(config.classes), option="--data")
    if len(val) == 0:
        raise InputError(f"{data or manifest.data}: the val split is empty; pass --data with val images")
    shard = shard_range(len(val), block=block)
    scored = val.normalised(shard.start, shard.stop)
    if not main:
        return Inputs(scored, val, shard, None)
    # Rank 0's shard starts at image 0; when it is empty (fewer blocks than processes) rank 0
    # still needs the first block for logits, the parity picture and timing.
    lead = scored if len(shard) else val.normalised(0, min(block, len(val)))
    return Inputs(scored, val, shard, lead)


def _add_accuracy(row: dict[str, Any], shared: _Shared, preds: RowPredictions | None) -> None:
    """Accuracy figures of a row from the counts of every process (none when a process failed)."""
    reference = shared.reference.scored if shared.reference is not None else None
    counts, failed = summed_counts(preds.scored if preds else None, shared.inputs, reference,
                                   rank=shared.rank, world_size=shared.world_size)
    if preds is None:
        return  # this process's own skip reason or error is in the row already
    if failed:
        row["error"] = (f"failed on rank(s) {', '.join(map(str, failed))} of {shared.world_size}; "
                        "run `segexport verify` without torchrun to see why")
        return
    reference_shown = shared.reference.shown if shared.reference is not None else None
    has_logits = preds.shown is not None and reference_shown is not None
    errors = logit_error(preds.shown, reference_shown) if has_logits else None
    row.update(accuracy_figures(counts, shared.inputs.val.classes, shared.reference_miou, errors))


def _attempt(row: dict[str, Any], action: Callable[[], T]) -> T | None:
    """``action()``, or None with the row marked skipped (a missing backend) or failed.

    A backend that cannot load or run an artifact that exists (e.g. an engine built for another
    GPU) makes a failed row in a written report, not an aborted verification.
    """
    try:
        return action()
    except MissingDependencyError as exc:
        row["skipped"] = str(exc)
    except (CheckFailed, InputError) as exc:
        row["error"] = str(exc)
    return None


def _measure(shared: _Shared, spec: VariantSpec) -> tuple[dict[str, Any], RowPredictions | None]:
    """One row: accuracy (with data), latency (rank 0), memory; a missing backend makes it skipped."""
    row: dict[str, Any] = {"name": spec.name, "backend": spec.backend, "precision": spec.precision,
                           "target": spec.target, "artifact": spec.artifact, "budget_pts": spec.budget_pts,
                           "skipped": spec.skipped, "details": spec.details, **dict.fromkeys(_SCHEMA_KEYS)}
    if shared.task == "instance":
        row.update(dict.fromkeys(instance_rows.ROW_KEYS))
    inputs = shared.inputs
    if inputs.val is None and spec.backend == "torch" and spec.precision == "fp16":
        row["skipped"] = EMULATED_HALF  # its one figure would be an emulation's latency
    if row["skipped"] or (inputs.val is None and inputs.lead is None):
        return row, None  # skipped, or latency only and this is not rank 0: nothing to do here
    started, preds = time.perf_counter(), None
    with lat.PeakRss() as memory, contextlib.ExitStack() as stack:
        runner = _attempt(row, lambda: stack.enter_context(open_runner(
            shared.root / str(spec.artifact), backend=spec.backend, precision=spec.precision, threads=shared.threads)))
        if runner is not None:
            row["device"], row["inference_precision"] = runner.device, runner.inference_precision
            if inputs.truth is not None:
                preds = _instance_predictions(row, runner, inputs)
            elif inputs.val is not None:
                preds = _attempt(row, lambda: predict_inputs(runner, inputs))
        if inputs.val is not None:
            _add_accuracy(row, shared, preds)  # collective: every process has predicted this row
        if runner is not None and inputs.lead is not None and not (row["error"] or row["skipped"]):
            row.update(_attempt(row, lambda: lat.measure_latency(runner, inputs.lead, runs=shared.runs)) or {})
        if inputs.val is not None:
            barrier()  # the other processes wait while rank 0 times, so nothing runs beside it
    if runner is not None and not (row["error"] or row["skipped"]):
        row["peak_rss_mb"] = memory.delta_mb
    row["seconds"] = time.perf_counter() - started
    return row, preds


def _instance_predictions(row: dict[str, Any], runner: Any, inputs: Inputs) -> RowPredictions | None:
    """An instance row's painted maps, with its COCO AP figures put in the row (None: it failed)."""
    found = _attempt(row, lambda: instance_rows.predict_instances(runner, inputs))
    if found is None:
        return None
    row.update(found[1])
    return found[0]


def _measure_all(shared: _Shared, manifest: BuildManifest, progress: bool) -> tuple[dict, list[dict], dict]:
    """The reference row, the variant rows and each measured row's lead prediction (by name)."""
    specs = [reference_spec(manifest), *manifest.variants]
    predictions: dict[str, Prediction] = {}
    rows = []
    with progress_bar(progress) as bar:
        task = bar.add_task("verify", total=len(specs), info="")
        for spec in specs:
            bar.update(task, info=spec.name)
            row, preds = _measure(shared, spec)
            if preds is not None and preds.shown is not None:
                predictions[spec.name] = preds.shown
            if is_reference(spec, manifest) and row.get("error"):
                raise CheckFailed(f"the reference ({spec.name}) failed: {row['error']}")
            if is_reference(spec, manifest) and preds is not None:
                shared.reference, shared.reference_miou = preds, row["miou"]
            rows.append(row)
            bar.advance(task)
    return rows[0], rows[1:], predictions


def _finish_rows(reference: dict[str, Any], variants: list[dict[str, Any]]) -> None:
    """Speedups against the reference's p50 and INT8's against FP32, and each variant's verdict."""
    ref_p50 = p50_of(reference)
    for row in variants:
        p50 = p50_of(row)
        row["speedup_vs_pytorch"] = ref_p50 / p50 if ref_p50 and p50 else None
        if "ap_drop_pts" in row:
            row["ap_drop_pts"] = instance_rows.ap_drop(row, reference)
        row["pass"] = judge(row)
    int8_pays(variants, reference)
    for key in ("budget_pts", "skipped", "details", "miou_drop_pts", "ap_drop_pts", "agreement", "max_abs_logit_error",
                "mean_abs_logit_error", "speedup_vs_pytorch", "speedup_vs_fp32", "int8_slower", "pass", "error"):
        reference.pop(key, None)


def _notes(manifest: BuildManifest, variants: list[dict[str, Any]], accuracy: bool, skip_accuracy: bool) -> list[str]:
    notes = []
    if manifest.random_init:
        notes.append("built from untrained weights (--random-init): accuracy not measured, latency only")
    elif skip_accuracy:
        notes.append("accuracy not measured (--skip-accuracy): no row is judged")
    if manifest.reference_backend == "torch":
        notes.append("reference: PyTorch FP32 on the reference checkpoint, the same inputs as every variant")
    else:
        notes.append(f"reference: no PyTorch reference exists (the build started from an ONNX file); every variant "
                     f"is judged against the FP32 {manifest.reference} on {manifest.reference_backend}, "
                     "the same inputs as every variant")
    if manifest.task == "instance" and accuracy:
        notes.append(instance_rows.JUDGED_BY)
    for row in variants:
        device = row.get("device") or ""
        if row["backend"] == "torch" and row["precision"] == "fp16" and device:
            notes.append(f"{row['name']}: torch float16 on the CPU, true half arithmetic")
        if row["backend"] == "onnxruntime" and row["precision"] == "fp16" and device.startswith("cpu"):
            notes.append(f"{row['name']}: ONNX Runtime's CPU provider computes FP16 graphs in FP32")
        if row.get("int8_slower"):
            notes.append(f"WARNING {row['name']}: INT8 is not faster than the {row['backend']} FP32 row "
                         f"({row['speedup_vs_fp32']:.2f}x); it costs accuracy and buys no speed here")
        if row.get("inference_precision"):
            what = "the layers left unquantized" if row["precision"] == "int8" else "the graph"
            notes.append(f"{row['name']}: {row['backend']} computed {what} in {row['inference_precision']} "
                         "(its CPU plugin's choice; an FP32 row computed in bf16 is held to the FP16 budget)")
        if row.get("latency_batch", 1) not in (None, 1):
            notes.append(f"{row['name']}: fixed batch {row['latency_batch']}, so its batch-1 latency runs a full batch")
    return notes


def verify_build(build_dir: str | Path, *, data: str | None = None, images: int | None = None,
                 skip_accuracy: bool = False, junit: str | Path | None = None, progress: bool = True,
                 latency_runs: int | None = None, force: bool = False) -> dict[str, Any]:
    """Verify every variant of ``build_dir`` against its PyTorch reference and write the report.

    Args:
        build_dir: a folder with ``build.json`` (written by ``segexport build``).
        data: val data spec (default: the build's).
        images: first N val images (default: the build's ``val_images``).
        skip_accuracy: latency rows only, no data needed (implied by a ``random_init`` build).
        junit: also write a JUnit XML file here (one test case per variant).
        progress: progress bar on a terminal (rank 0 only under torchrun).
        latency_runs: timed batch-1 runs per row (default: up to 30 within 10 s).
        force: write the report files even over files of those names that segexport did not write.

    Returns:
        The report (``report.json``); ``report["pass"]`` is False when a variant broke its budget
        or failed to run. Nothing is raised for that. Under torchrun, rank 0 writes it (the
        others wait until it has) and every process returns the same accuracy figures; only
        rank 0's report has latency, memory, logit errors and ``files``.

    Raises:
        InputError, ConfigError: a missing or malformed build folder, data or option.
        CheckFailed: the PyTorch reference itself cannot run.
    """
    root = Path(build_dir)
    check_output_file(junit, "--junit", source=JUNIT_SOURCE, force=force)
    manifest = read_manifest(root)
    runs = check_counts(manifest, images, latency_runs)
    check_artifacts(root, manifest, [reference_spec(manifest), *manifest.variants])
    if is_main_process():
        claim_outputs(root, REPORT_FILES, force=force, option="build folder", into_owned=True)
    accuracy = not (skip_accuracy or manifest.random_init)
    config = reference_config(root, manifest)
    threads, ctx = torch.get_num_threads(), current_context()
    if ctx is not None and manifest.task == "instance":
        raise ConfigError("instance networks verify in one process; run `segexport verify` without torchrun")
    block = _shard_block(root, manifest, threads) if accuracy else 1
    inputs = _load_inputs(manifest, config, data, images, accuracy, block)
    shared = _Shared(root, inputs, runs, threads, ctx.rank if ctx else 0, ctx.world_size if ctx else 1,
                     task=manifest.task)
    try:
        reference, variants, predictions = _measure_all(shared, manifest, progress and is_main_process())
        _finish_rows(reference, variants)
        measured = [(reference_spec(manifest), reference), *zip(manifest.variants, variants)]
        crf = measure_crf_rows(root, manifest, measured, inputs, threads=threads, accuracy=accuracy,
                               progress=progress and is_main_process())
        report = _assemble(root, manifest, shared, reference, variants, accuracy, data)
        report["crf"] = crf.rows
        report["notes"] = _notes(manifest, variants, accuracy, skip_accuracy) + crf.notes
        if ctx is not None:
            report["distributed"] = {"world_size": ctx.world_size, "backend": ctx.backend,
                                     "shard_block": block if accuracy else None}
            report["notes"].append(_distributed_note(report, block))
        report["files"] = None
        if is_main_process():
            report["files"] = _write_report(root, report, inputs, predictions, config.classes, junit)
    finally:
        barrier()  # nobody returns before rank 0 has written (or failed)
    return report


def _distributed_note(report: dict[str, Any], block: int) -> str:
    world = report["distributed"]["world_size"]
    timed = "latency, throughput and memory measured on rank 0 only (the other processes skip them)"
    if not report["accuracy_measured"]:
        return f"torchrun, {world} processes: {timed}"
    return (f"torchrun, {world} processes: the {report['images']} val images sharded in blocks of {block}, "
            "confusion matrices and agreement counts summed (exact); logit error and parity.png from "
            f"rank 0; {timed}")


def _write_report(root: Path, report: dict[str, Any], inputs: Inputs, predictions: dict[str, Prediction],
                  classes: tuple[str, ...], junit: str | Path | None) -> dict[str, str | None]:
    """Write the pictures, ``report.json`` (with ``files``), ``report.md`` and the JUnit XML; ``files``."""
    report["files"] = {"report_md": REPORT_MD, **write_pictures(root, report, inputs, predictions, classes,
                                                                 report["reference"]["name"])}
    write_json(root / REPORT_JSON, report)
    with atomic_path(root / REPORT_MD) as tmp:
        tmp.write_text(render_markdown(report) + "\n")
    if junit is not None:
        write_junit(junit, report)
    return report["files"]


def _assemble(root: Path, manifest: BuildManifest, shared: _Shared, reference: dict[str, Any],
              variants: list[dict[str, Any]], accuracy: bool, data: str | None) -> dict[str, Any]:
    return {
        "arch": manifest.arch,
        "task": manifest.task,
        "pass": not any(row["pass"] is False for row in variants),
        "build_dir": str(root),
        "accuracy_measured": accuracy,
        "data": (data or manifest.data) if accuracy else None,
        "images": len(shared.inputs.val) if accuracy and shared.inputs.val is not None else 0,
        "input_size": list(manifest.input_size),
        "random_init": manifest.random_init,
        "reference": reference,
        "variants": variants,
        "device": lat.host_description(),
        "threads": shared.threads,
        "versions": lat.package_versions(),
        "settings": {"latency_runs": shared.runs, "default_runs": lat.DEFAULT_RUNS, "warmup_runs": lat.WARMUP_RUNS,
                     "time_limit_s": lat.TIME_LIMIT_S, "logit_images": LOGIT_IMAGES},
        "methods": {"latency": lat.LATENCY_METHOD, "memory": lat.MEMORY_METHOD},
    }
