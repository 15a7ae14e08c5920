"""``+crf`` rows of ``segexport verify``: the host dense CRF on variants' logits, when the recipe asks.

A build whose recipe (``load_recipe(arch)``) sets ``crf = "host"`` (DeepLab v1 and v2) deploys
the network followed by the fully connected CRF on the host, so verify measures that too: for
the PyTorch reference and each measured variant except the FP16 ones on ONNX Runtime and
PyTorch (whose logits match FP32's to ~1e-3, so their rows would repeat the FP32 one at the
CRF's cost of tens of ms per image), the variant's logits of every val image are refined by
:func:`segexport.postprocess.dense_crf` at the input size with the recipe's parameters, and a
``NAME+crf`` row reports mIoU and trimap (boundary) mIoU with and without the CRF and the CRF's
own time per image, apart from the engine's. The rows carry no budget: they never change the
verdict.

Under ``torchrun`` every process refines its own shard (:class:`~segexport.verify.parity.Inputs`)
with a :class:`~segexport.postprocess.CrfTally`; the integer counts are summed and the per-image
times (in integer nanoseconds, each image in its own slot) gathered by the same all-reduce, so
every figure but the times equals a single process's exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segexport.distributed import all_reduce_confusion, current_context
from segexport.errors import CheckFailed, InputError, MissingDependencyError
from segexport.postprocess import (
    DEFAULT_BAND,
    CrfParams,
    CrfTally,
    crf_mode,
    crf_params,
)
from segexport.precision.evaluate import EVAL_BATCH
from segexport.progress import progress_bar
from segexport.recipe import load_recipe
from segexport.runners import open_runner
from segexport.verify.manifest import BuildManifest, VariantSpec
from segexport.verify.parity import Inputs

ROW_KEYS = ("variant", "base", "images", "miou", "pixel_acc", "trimap_miou", "base_miou", "base_pixel_acc",
            "base_trimap_miou", "miou_gain_pts", "trimap_gain_pts", "changed_pixels", "crf_ms_per_image",
            "crf_ms_p90", "trimap_band_px", "crf")


@dataclass
class CrfSection:
    """What the CRF adds to a report.

    Attributes:
        rows: the ``+crf`` rows (``report["crf"]``), None when the recipe has no host CRF or
            accuracy is not measured.
        notes: lines for the report's notes.
    """

    rows: list[dict[str, Any]] | None
    notes: list[str] = field(default_factory=list)


def host_crf_params(arch: str) -> CrfParams | None:
    """The host CRF's parameters when ``arch``'s recipe sets ``crf = "host"``, else None.

    Raises:
        ConfigError: the recipe's ``crf`` or ``crf_*`` values are invalid.
    """
    recipe = load_recipe(arch)
    return crf_params(recipe) if crf_mode(recipe) == "host" else None


def refined_specs(measured: Sequence[tuple[VariantSpec, dict[str, Any]]]) -> list[VariantSpec]:
    """The rows that get a ``+crf`` row: measured without error, FP16 only on TensorRT (see above).

    Every process decides alike: a row that failed on any process has an error on all of them.
    """
    return [spec for spec, row in measured
            if row.get("miou") is not None and not row.get("error") and not row.get("skipped")
            and (spec.precision != "fp16" or spec.backend == "tensorrt")]


def _tally_shard(root: Path, spec: VariantSpec, inputs: Inputs, tally: CrfTally, threads: int,
                 advance: Callable[[int], None]) -> None:
    """Add this process's shard to ``tally``: the runner's logits, refined image by image."""
    val, first = inputs.val, inputs.shard.start
    with open_runner(root / str(spec.artifact), backend=spec.backend, precision=spec.precision,
                     threads=threads) as runner:
        batch = runner.fixed_batch or EVAL_BATCH
        for start in range(0, len(inputs.images), batch):
            logits = runner.run(inputs.images[start : start + batch])
            done = slice(first + start, first + start + len(logits))
            tally.add(logits, val.images[done], val.masks[done])
            advance(len(logits))


def _summed_row(spec: VariantSpec, tally: CrfTally, error: str | None, inputs: Inputs,
                measured_row: dict[str, Any]) -> dict[str, Any]:
    """Sum the tallies of every process into one row (collective: every process calls it)."""
    ctx = current_context()
    world, rank = (ctx.world_size, ctx.rank) if ctx else (1, 0)
    n = len(inputs.val)
    failed = np.zeros(world, dtype=np.int64)
    failed[rank] = error is not None
    times = np.zeros(n, dtype=np.int64)  # each image's slot, so the sum gathers them in order
    if error is None:
        times[inputs.shard.start : inputs.shard.start + len(tally.times)] = np.round(np.asarray(tally.times) * 1e9)
    local = np.concatenate([failed, tally.counts.reshape(-1), [tally.changed, tally.pixels], times])
    summed = all_reduce_confusion(local)
    latency = measured_row.get("latency_ms") or {}
    if summed[:world].any():
        ranks = ", ".join(str(r) for r in np.flatnonzero(summed[:world]))
        message = error or f"failed on rank(s) {ranks}; run `segexport verify` without torchrun to see why"
        return {**dict.fromkeys(ROW_KEYS), "variant": f"{spec.name}+crf", "base": spec.name, "error": message,
                "engine_ms_p50": latency.get("p50")}
    cells = tally.counts.size
    tally.counts = summed[world : world + cells].reshape(tally.counts.shape)
    tally.changed, tally.pixels = (int(v) for v in summed[world + cells : world + cells + 2])
    tally.times = [float(t) / 1e9 for t in summed[world + cells + 2 :]]
    # The CRF's time beside the base variant's batch-1 engine latency (rank 0 times; None elsewhere).
    return {**tally.row(spec.name), "engine_ms_p50": latency.get("p50"), "error": None}


def _notes(arch: str, params: CrfParams, specs: list[VariantSpec], left_out: list[str], band: int) -> list[str]:
    p = params
    notes = [(f"+crf rows: host dense CRF (recipe {arch}: crf = \"host\"; {p.iterations} iterations, "
              f"w1 {p.appearance_weight:g}, theta_alpha {p.appearance_xy:g} px, theta_beta {p.appearance_rgb:g}, "
              f"w2 {p.smoothness_weight:g}, theta_gamma {p.smoothness_xy:g} px) on the logits of "
              f"{', '.join(s.name for s in specs) or 'no variant'} at the input size; gains in points against "
              f"the same variant without the CRF; trimap: pixels within {band} px of a ground-truth boundary; "
              "CRF ms: median per image of the CRF alone (engine time excluded); not judged (no budget)")]
    if left_out:
        notes.append(f"no +crf row for {', '.join(left_out)}: FP16 logits match FP32's, the row would repeat it")
    if current_context() is not None:
        notes.append("+crf: every process refines its shard (counts summed, exact); CRF times measured with "
                     "every process busy")
    return notes


def measure_crf_rows(root: Path, manifest: BuildManifest, measured: Sequence[tuple[VariantSpec, dict[str, Any]]],
                     inputs: Inputs, *, threads: int, accuracy: bool, progress: bool) -> CrfSection:
    """The ``+crf`` rows of a verification, when ``manifest.arch``'s recipe enables the host CRF.

    Args:
        root: the build folder.
        manifest: its manifest (the arch picks the recipe).
        measured: each verified row with its spec, the reference first.
        inputs: the val inputs every row ran (this process's shard under torchrun).
        threads: runner threads.
        accuracy: whether accuracy was measured (without it there are no rows).
        progress: show a progress bar (on a terminal).

    Returns:
        The rows (keys of :meth:`~segexport.postprocess.CrfTally.row`, plus ``engine_ms_p50``,
        the base row's batch-1 latency, and ``error``) and notes; ``rows`` None without a host CRF.

    Raises:
        ConfigError: invalid CRF values in the recipe.
    """
    params = host_crf_params(manifest.arch)
    if params is None:
        return CrfSection(None)
    if not accuracy or inputs.val is None:
        return CrfSection(None, [f"recipe {manifest.arch} sets crf = \"host\"; no +crf rows without accuracy"])
    specs = refined_specs(measured)
    rows_by_name = {spec.name: row for spec, row in measured}
    rows = []
    with progress_bar(progress) as bar:
        task = bar.add_task("dense CRF", total=len(specs) * len(inputs.images), info="")
        for spec in specs:
            bar.update(task, info=f"{spec.name}+crf")
            tally, error = CrfTally(len(inputs.val.classes), params), None
            try:
                _tally_shard(root, spec, inputs, tally, threads, lambda k: bar.advance(task, k))
            except (MissingDependencyError, CheckFailed, InputError) as exc:
                error = str(exc)  # the row records it; the other processes learn of it in the sum
            rows.append(_summed_row(spec, tally, error, inputs, rows_by_name[spec.name]))
    chosen = {spec.name for spec in specs}
    left_out = [spec.name for spec, row in measured if row.get("miou") is not None and spec.name not in chosen
                and not row.get("error")]
    return CrfSection(rows, _notes(manifest.arch, params, specs, left_out, DEFAULT_BAND))
