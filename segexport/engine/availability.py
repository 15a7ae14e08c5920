"""Can TensorRT engines be built and run here? One line that names every missing piece.

Building needs the ``tensorrt`` package and an NVIDIA driver with a CUDA device; running also
needs a CUDA build of torch (the runner binds device memory with torch tensors, and the engine
record names the GPU as torch reports it).
"""

from __future__ import annotations

import ctypes
from typing import Any

INSTALL_HINT = "pip install tensorrt"


def _tensorrt_problem() -> str | None:
    try:
        import tensorrt  # noqa: F401  (imported for its availability only)
    except ImportError as exc:
        missing = "is not installed" if getattr(exc, "name", None) == "tensorrt" else f"does not import ({exc})"
        return f"the tensorrt package {missing} ({INSTALL_HINT})"
    except OSError as exc:  # a wheel without its CUDA libraries raises this from dlopen
        return f"the tensorrt package cannot load its libraries ({exc})"
    return None


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


def engine_unavailable_reason() -> str | None:
    """None when ``tensorrt`` imports and a CUDA device exists; else one line naming what is missing."""
    problems = [p for p in (_tensorrt_problem(), _driver_problem(), _device_problem()) if p]
    if not problems:
        return None
    return "TensorRT engines need an NVIDIA GPU, its driver and the tensorrt package: " + "; ".join(problems)


def current_gpu(index: int = 0) -> dict[str, Any]:
    """Name and compute capability of CUDA device ``index`` (call only when a device exists)."""
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}
