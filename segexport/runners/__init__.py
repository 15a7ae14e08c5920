"""Runners: one interface (:class:`Runner`) over torch, ONNX Runtime and TensorRT.

Backends are imported when an artifact needs them; a missing one raises
``MissingDependencyError`` naming the package to install, never a substitute backend.
"""

from __future__ import annotations

from pathlib import Path

from segexport.errors import InputError, MissingDependencyError
from segexport.runners.base import Runner

BACKENDS = ("torch", "onnxruntime", "tensorrt")
ENGINE_SUFFIXES = (".plan", ".engine")

__all__ = ["BACKENDS", "Runner", "artifact_backend", "open_runner"]


def artifact_backend(artifact: str | Path) -> str:
    """The backend that runs ``artifact``: a folder -> torch, ``.onnx`` -> onnxruntime, ``.plan``/``.engine`` -> tensorrt.

    Raises:
        InputError: the path does not exist or is of an unknown kind.
    """
    path = Path(artifact)
    if not path.exists():
        raise InputError(f"{path}: not found; pass a checkpoint folder, a .onnx file or a .plan TensorRT engine")
    if path.is_dir():
        return "torch"
    if path.suffix == ".onnx":
        return "onnxruntime"
    if path.suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    raise InputError(f"{path}: unknown artifact kind {path.suffix or '(no suffix)'!r}; "
                     "pass a checkpoint folder, a .onnx file or a .plan/.engine TensorRT engine")


def _open_tensorrt(path: Path, precision: str | None) -> Runner:
    from segexport.engine.availability import engine_unavailable_reason

    # Checked before the engine's record is read, so a CPU machine says what to install first.
    reason = engine_unavailable_reason()
    if reason:
        raise MissingDependencyError(f"{path}: {reason}")
    from segexport.distributed import local_device_index
    from segexport.runners.tensorrt_runner import TensorRTRunner

    # Under torchrun each process uses LOCAL_RANK's GPU (the one distributed.py selects), so the
    # engine, its context, the buffers and the stream all sit on one device.
    return TensorRTRunner(path, precision=precision, device_index=local_device_index())


def open_runner(artifact: str | Path, *, backend: str | None = None, precision: str | None = None,
                threads: int | None = None) -> Runner:
    """Open ``artifact`` with the runner of its kind.

    Args:
        artifact: a checkpoint folder (torch), a ``.onnx`` file (onnxruntime: CUDA/TensorRT
            execution providers when present, else CPU) or a ``.plan``/``.engine`` (tensorrt).
        backend: the expected backend (checked against the artifact's kind); default: the artifact's.
        precision: ``fp32``/``fp16``/``int8``; for torch, ``fp16`` runs the model in
            ``torch.float16`` on the CPU (true half arithmetic); default: fp32 for a checkpoint,
            read from the graph for ONNX.
        threads: CPU threads (default: torch's current setting).

    Raises:
        InputError: a missing or unknown artifact, or a ``backend`` that does not run it.
        MissingDependencyError: the backend's package is not installed.
        CheckpointError, CheckFailed: the artifact cannot be loaded.
    """
    kind = artifact_backend(artifact)
    if backend is not None and backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend is not None and backend != kind:
        raise InputError(f"{artifact}: the {backend} backend cannot run it (it is a {kind} artifact)")
    path = Path(artifact)
    if kind == "torch":
        from segexport.runners.torch_runner import TorchRunner

        return TorchRunner(path, precision=precision, threads=threads)
    if kind == "onnxruntime":
        from segexport.runners.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, precision=precision, threads=threads)
    return _open_tensorrt(path, precision)
