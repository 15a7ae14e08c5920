"""The backend registry: every inference backend declared once, by name.

A backend is one runner file plus one :class:`Backend` entry here. Everything that needs to
know about backends (``open_runner``, the build manifest's validation, verify's rows and
version list, the Triton exporter, the CLI's ``--backend`` choices) reads this table, so
adding a backend touches its runner file, this table and its tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from segexport.errors import UnknownNameError

CHECKPOINT_KIND = "checkpoint"  # a checkpoint folder; file kinds are suffixes


@dataclass(frozen=True)
class Backend:
    """One inference backend.

    Attributes:
        name: the registry key (``--backend NAME``, ``VariantSpec.backend``).
        opener: ``"module:callable"`` called as ``opener(path, precision=, threads=)`` to open a runner;
            imported only when used, so a missing package costs nothing until then.
        kinds: artifact kinds it runs: ``"checkpoint"`` (a folder) or file suffixes (``.onnx``).
        install_hint: what to install when the package does not import.
        version_package: the distribution whose version reports record (None: segexport's own).
        triton: Triton's name for the backend in config.pbtxt (``platform`` or ``backend``), None: not served.
        triton_field: ``platform`` or ``backend``, the config.pbtxt key that names it.
        row: the prefix of verify's rows for this backend (``onnx``, ``openvino``, ``trt``, ``pytorch``).
        device: ``cpu``, ``gpu`` or ``any`` (where the backend's rows can run).
        triton_file: ``default_model_filename`` for Triton when its backend's default is not the file we copy.
        triton_parameters: ``parameters`` of the Triton config (the settings verify measured with).
    """

    name: str
    opener: str
    kinds: tuple[str, ...]
    install_hint: str
    version_package: str | None
    triton: str | None
    row: str
    device: str = "cpu"
    triton_field: str = "platform"
    triton_file: str | None = None
    triton_parameters: tuple[tuple[str, str], ...] = ()

    def open(self, path: Any, *, precision: str | None, threads: int | None) -> Any:
        module, _, attr = self.opener.partition(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return factory(path, precision=precision, threads=threads)


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add ``backend`` to the registry.

    Raises:
        ValueError: a backend of that name is registered already (a programming error).
    """
    if backend.name in BACKENDS:
        raise ValueError(f"backend {backend.name!r} is registered twice")
    BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """Raises:
    UnknownNameError: no backend of that name (the message lists the registered ones).
    """
    if name not in BACKENDS:
        raise UnknownNameError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backends_for(kind: str) -> list[Backend]:
    """The backends that run artifacts of ``kind``, the default (first registered) first."""
    return [b for b in BACKENDS.values() if kind in b.kinds]


def version_packages() -> tuple[str, ...]:
    """The distributions whose versions a report records: segexport's stack plus every backend's."""
    base = ("segexport", "torch", "onnx", "numpy")
    return base + tuple(b.version_package for b in BACKENDS.values() if b.version_package and b.version_package not in base)


register_backend(Backend("torch", "segexport.runners.torch_runner:TorchRunner", (CHECKPOINT_KIND,),
                         "pip install torch", "torch", None, "pytorch"))
register_backend(Backend("onnxruntime", "segexport.runners.onnxruntime_runner:OnnxRuntimeRunner", (".onnx",),
                         "pip install onnxruntime (or onnxruntime-gpu for CUDA/TensorRT)", "onnxruntime",
                         "onnxruntime_onnx", "onnx", device="any"))
register_backend(Backend("openvino", "segexport.runners.openvino_runner:OpenVINORunner", (".onnx", ".xml"),
                         "pip install openvino", "openvino", "openvino", "openvino", triton_field="backend",
                         triton_file="model.onnx",  # Triton's OpenVINO backend looks for model.xml by default
                         triton_parameters=(("PERFORMANCE_HINT", "LATENCY"), ("NUM_STREAMS", "1"))))
register_backend(Backend("tensorrt", "segexport.runners.tensorrt_runner:open_engine", (".plan", ".engine"),
                         "pip install tensorrt (with an NVIDIA GPU and driver)", "tensorrt", "tensorrt_plan", "trt",
                         device="gpu"))
