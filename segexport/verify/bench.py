"""``segexport bench``: latency and throughput of given artifacts on random inputs, no data needed.

Every artifact of the same input size gets the same seeded random normalised images (a
standard normal, as normalised images are), so rows compare like for like. A checkpoint folder
is timed as its PyTorch FP32 model: the reference the other rows' speedups are relative to.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segexport import limits
from segexport.errors import CheckFailed, InputError
from segexport.progress import progress_bar
from segexport.runners import Runner, artifact_kind, get_backend, open_runner
from segexport.verify import latency as lat

SEED = 0


def random_inputs(size: tuple[int, int], count: int, seed: int = SEED) -> np.ndarray:
    """``count`` float32 ``[3, H, W]`` standard-normal images (stand-ins for normalised images)."""
    return np.random.default_rng(seed).standard_normal((count, 3, *size), dtype=np.float32)


def _input_size(runner: Runner, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        return size
    if runner.input_size is None:
        raise InputError(f"{runner.artifact}: its input size is not recorded; pass --input-size HxW")
    return runner.input_size


def _open(path: Path, threads: int | None, backend: str | None) -> Runner:
    """``open_runner`` (on ``backend`` when it runs this kind of artifact, else the kind's default),
    with an artifact its backend cannot load reported as bad input (exit 2)."""
    chosen = backend if backend is not None and artifact_kind(path) in get_backend(backend).kinds else None
    try:
        return open_runner(path, threads=threads, backend=chosen)
    except CheckFailed as exc:
        # The file is the user's own argument, not something segexport built and checks.
        raise InputError(f"{exc}; pass a valid artifact (re-export it with segexport export)") from exc


def _check_backend(backend: str | None, artifacts: Sequence[str | Path]) -> None:
    """A ``--backend`` that runs none of the artifacts is a mistake, not a silent no-op.

    Raises:
        UnknownNameError: an unregistered backend; InputError: it runs none of ``artifacts``.
    """
    if backend is None:
        return
    kinds = get_backend(backend).kinds
    if not any(artifact_kind(a) in kinds for a in artifacts):
        raise InputError(f"--backend {backend} runs {', '.join(kinds)} artifacts and none was given; "
                         f"pass one or drop --backend")


def _bench_one(path: Path, *, runs: int | None, batch: int | None, threads: int | None,
               size: tuple[int, int] | None, backend: str | None) -> dict[str, Any]:
    with lat.PeakRss() as memory, _open(path, threads, backend) as runner:
        shape = _input_size(runner, size)
        count = runner.fixed_batch or batch or lat.THROUGHPUT_BATCH
        limits.check_inference_memory(shape, count, "a smaller --input-size or --batch", where=f"{path}: ")
        images = random_inputs(shape, count)
        row = {"artifact": str(path), "backend": runner.backend, "precision": runner.precision,
               "device": runner.device, "input_size": list(shape), "fixed_batch": runner.fixed_batch,
               **lat.measure_latency(runner, images, runs=runs, batch=batch)}
    return {**row, "peak_rss_mb": memory.delta_mb}


def bench_artifacts(artifacts: Sequence[str | Path], *, runs: int | None = None, batch: int | None = None,
                    threads: int | None = None, input_size: tuple[int, int] | None = None,
                    progress: bool = True, backend: str | None = None) -> dict[str, Any]:
    """Time each artifact: batch-1 latency percentiles, batched throughput, peak memory.

    Args:
        artifacts: checkpoint folders (PyTorch FP32), ``.onnx`` files, ``.plan`` engines.
        runs: timed batch-1 runs (default: up to 30 within 10 s per artifact).
        batch: throughput batch (default 8; a fixed-batch artifact uses its own).
        threads: CPU threads (default: torch's setting).
        input_size: (height, width) for artifacts that do not record theirs.
        backend: run every artifact this backend runs on it (e.g. ``openvino`` for ``.onnx``
            files); the others on their kind's default backend.

    Returns:
        ``rows`` (one per artifact, ``speedup_vs_pytorch`` against the first checkpoint folder's
        p50 when one is given), ``device``, ``threads``, ``versions``, ``methods``.

    Raises:
        InputError, ConfigError: a missing, unknown or unloadable artifact, bad counts.
        MissingDependencyError: an artifact's backend is not installed.
    """
    if not artifacts:
        raise InputError("no artifact given; pass checkpoint folders, .onnx files or .plan engines")
    limits.check_count(runs, "--runs", limits.RUNS_MAX)
    limits.check_count(batch, "--batch", limits.BATCH_MAX)
    limits.check_count(threads, "--threads", limits.THREADS_MAX)
    limits.check_input_size(input_size)
    _check_backend(backend, artifacts)
    rows = []
    with progress_bar(progress) as bar:
        task = bar.add_task("bench", total=len(artifacts), info="")
        for path in artifacts:
            bar.update(task, info=Path(path).name)
            rows.append(_bench_one(Path(path), runs=runs, batch=batch, threads=threads, size=input_size,
                                   backend=backend))
            bar.advance(task)
    reference = next((r for r in rows if r["backend"] == "torch" and r["precision"] == "fp32"), None)
    for row in rows:
        ref = reference["latency_ms"]["p50"] if reference else None
        row["speedup_vs_pytorch"] = ref / row["latency_ms"]["p50"] if ref else None
    return {"rows": rows, "reference": reference["artifact"] if reference else None,
            "device": lat.host_description(), "threads": threads or torch.get_num_threads(),
            "versions": lat.package_versions(),
            "methods": {"latency": lat.LATENCY_METHOD, "memory": lat.MEMORY_METHOD, "inputs": "seeded standard normal"}}
