"""Can TensorRT engines be built and run here? One line that names every missing piece.

Building needs the ``tensorrt`` package and an NVIDIA driver with a CUDA device; running also
needs a CUDA build of torch (the runner binds device memory with torch tensors, and the engine
record names the GPU as torch reports it). When all of these are present, TensorRT must also be
able to create a ``Builder`` and a ``Runtime`` (:func:`segexport.engine.trt_api.probe_runtime`):
a driver too old for the wheel's CUDA major, or a GPU TensorRT no longer supports, fails there.
"""

from __future__ import annotations

import ctypes
from typing import Any

from segexport.engine import trt_api

INSTALL_HINT = "pip install tensorrt"  # the CUDA-matched wheel: trt_api.install_hint(torch.version.cuda)


def _driver_problem() -> str | None:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 cannot be loaded)"
    return None


def _device_problem() -> str | None:
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA build of torch)"
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return "no CUDA device visible (check CUDA_VISIBLE_DEVICES and nvidia-smi)"
    return None


def unavailable_reason(import_problem: str | None, driver_problem: str | None, device_problem: str | None,
                       runtime_problem: Any) -> str | None:
    """The one line for these findings; ``runtime_problem()`` is called only when nothing else is missing.

    A Builder cannot be created without the package, a driver and a device, so probing then
    would only repeat what the other findings already say.
    """
    problems = [p for p in (import_problem, driver_problem, device_problem) if p]
    if not problems:
        probe = runtime_problem()
        if probe is None:
            return None
        return f"TensorRT is installed but cannot run here: {probe}"
    return "TensorRT engines need an NVIDIA GPU, its driver and the tensorrt package: " + "; ".join(problems)


def engine_unavailable_reason() -> str | None:
    """None when ``tensorrt`` imports, a CUDA device exists and TensorRT can create a Builder and a
    Runtime on it; else one line naming what is missing and what to install."""
    return unavailable_reason(trt_api.import_problem(), _driver_problem(), _device_problem(), trt_api.probe_runtime)


def current_gpu(index: int | None = None) -> dict[str, Any]:
    """Name and compute capability of CUDA device ``index`` (default: torch's current device, the one
    TensorRT builds on). Call only when a device exists."""
    import torch

    index = torch.cuda.current_device() if index is None else index
    major, minor = torch.cuda.get_device_capability(index)
    return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}
