"""Runners: one interface (:class:`Runner`) over every backend in the registry (:mod:`.registry`).

Backends are imported when an artifact needs them; a missing one raises
``MissingDependencyError`` naming the package to install, never a substitute backend. One
artifact may run on several backends (an ``.onnx`` on ONNX Runtime and on OpenVINO).
"""

from __future__ import annotations

from pathlib import Path

from segexport.errors import InputError
from segexport.runners.base import Runner
from segexport.runners.registry import (
    BACKENDS,
    CHECKPOINT_KIND,
    Backend,
    backends_for,
    get_backend,
)

__all__ = ["BACKENDS", "Backend", "Runner", "artifact_backend", "artifact_kind", "get_backend", "open_runner"]


def _kinds_hint() -> str:
    suffixes = sorted({k for b in BACKENDS.values() for k in b.kinds if k != CHECKPOINT_KIND})
    return f"pass a checkpoint folder or a {', '.join(suffixes)} file"


def artifact_kind(artifact: str | Path) -> str:
    """``checkpoint`` for a folder, else the file's suffix, when some backend runs it.

    Raises:
        InputError: the path does not exist or no registered backend runs its kind.
    """
    path = Path(artifact)
    if not path.exists():
        raise InputError(f"{path}: not found; {_kinds_hint()}")
    kind = CHECKPOINT_KIND if path.is_dir() else path.suffix
    if not backends_for(kind):
        raise InputError(f"{path}: unknown artifact kind {kind or '(no suffix)'!r}; {_kinds_hint()}")
    return kind


def artifact_backend(artifact: str | Path) -> str:
    """The default backend of ``artifact``'s kind: torch for a folder, onnxruntime for ``.onnx``,
    openvino for ``.xml``, tensorrt for ``.plan``/``.engine``.

    Raises:
        InputError: the path does not exist or is of an unknown kind.
    """
    return backends_for(artifact_kind(artifact))[0].name


def open_runner(artifact: str | Path, *, backend: str | None = None, precision: str | None = None,
                threads: int | None = None) -> Runner:
    """Open ``artifact`` with ``backend`` (default: the default backend of its kind).

    Args:
        artifact: a checkpoint folder, ``.onnx``, OpenVINO ``.xml`` or ``.plan``/``.engine``.
        backend: a registered backend that runs this kind of artifact (``segexport.runners.BACKENDS``).
        precision: ``fp32``/``fp16``/``int8``; for torch, ``fp16`` runs the model in
            ``torch.float16`` on the CPU (true half arithmetic); default: fp32 for a checkpoint,
            read from the graph otherwise.
        threads: CPU threads (default: torch's current setting).

    Raises:
        InputError: a missing or unknown artifact, or a ``backend`` that does not run it.
        UnknownNameError: ``backend`` is not registered.
        MissingDependencyError: the backend's package is not installed.
        CheckpointError, CheckFailed: the artifact cannot be loaded.
    """
    kind = artifact_kind(artifact)
    chosen = backends_for(kind)[0] if backend is None else get_backend(backend)
    if kind not in chosen.kinds:
        runs = ", ".join(b.name for b in backends_for(kind))
        raise InputError(f"{artifact}: the {chosen.name} backend cannot run it ({kind} artifacts run on {runs})")
    return chosen.open(Path(artifact), precision=precision, threads=threads)
