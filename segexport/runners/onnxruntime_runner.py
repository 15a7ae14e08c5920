"""The ONNX Runtime runner: an ONNX file on the best execution provider this machine has.

TensorRT and CUDA execution providers are used when ``onnxruntime.get_available_providers()``
lists them (an ``onnxruntime-gpu`` install with its libraries), with the CPU provider behind
them for nodes they do not take; otherwise the CPU provider alone. The providers actually
used are in ``device``. FP16 graphs run on the CPU provider in FP32 arithmetic (ORT upcasts
them); the torch runner's ``fp16`` is the true-half figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segexport.errors import CheckFailed, InputError, MissingDependencyError
from segexport.runners.base import PRECISIONS, Runner, check_images, check_precision

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu for CUDA/TensorRT)"
        ) from exc
    return onnxruntime


def choose_providers(available: list[str]) -> list[str]:
    """The GPU providers among ``available`` in order of preference, then the CPU provider."""
    return [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]


def graph_precision(path: Path) -> str:
    """``int8`` for a quantized graph (Q/DQ or QLinear nodes), ``fp16`` for FP16 weights, else ``fp32``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if any(node.op_type in _INT8_OPS for node in model.graph.node):
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


def _logits_output(session: Any, path: Path) -> str:
    """The output holding logits: ``logits``, else the first 4-D float output."""
    outputs = session.get_outputs()
    named = [o.name for o in outputs if o.name == "logits"]
    floats = [o.name for o in outputs if o.type == "tensor(float)" and len(o.shape) == 4]
    if not (named or floats):
        names = ", ".join(f"{o.name} {o.type}" for o in outputs)
        raise InputError(f"{path}: no float [N, C, H, W] logits output (outputs: {names}); "
                         "export with --output logits or --output both")
    return (named or floats)[0]


def _input_size(session: Any) -> tuple[int, int] | None:
    """The size recorded by ``segexport export`` (metadata), else the input's fixed height and width."""
    meta = session.get_modelmeta().custom_metadata_map
    if "input_size" in meta:
        h, w = json.loads(meta["input_size"])
        return int(h), int(w)
    dims = session.get_inputs()[0].shape
    return (dims[2], dims[3]) if len(dims) == 4 and all(isinstance(d, int) for d in dims[2:]) else None


class OnnxRuntimeRunner(Runner):
    """An ONNX Runtime inference session on one ONNX file.

    Attributes:
        providers: the execution providers the session uses, in priority order.
        threads: intra-op threads of the session.
    """

    backend = "onnxruntime"

    def __init__(self, artifact: str | Path, *, precision: str | None = None, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        """Open ``artifact`` on ``providers`` (default: :func:`choose_providers` of the available ones).

        Raises:
            MissingDependencyError: onnxruntime does not import.
            InputError: a missing file, bad options, a graph without a logits output, or a file
                ONNX Runtime cannot load.
        """
        from segexport.export.verify_onnx import open_session

        check_precision(precision, PRECISIONS, self.backend)
        if threads is not None and threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        ort = _import_onnxruntime()
        self.artifact = Path(artifact)
        if not self.artifact.is_file():
            raise InputError(f"{self.artifact}: ONNX file not found")
        self.threads = threads or torch.get_num_threads()
        self._session: Any = open_session(self.artifact, threads=self.threads,
                                          providers=providers or choose_providers(ort.get_available_providers()))
        self.precision = precision or graph_precision(self.artifact)  # after ORT accepted the file
        self.providers: list[str] = list(self._session.get_providers())
        self._input = self._session.get_inputs()[0].name
        self._output = _logits_output(self._session, self.artifact)
        batch = self._session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.input_size = _input_size(self._session)
        where = "cpu" if self.providers[0] == "CPUExecutionProvider" else "gpu"
        self.device = f"{where}, onnxruntime {ort.__version__} {self.providers[0]}, {self.threads} threads"

    def run(self, images: np.ndarray) -> np.ndarray:
        from segexport.export.verify_onnx import _ort_errors, run_onnx

        if self._session is None:
            raise InputError(f"{self.artifact}: the runner was closed; open a new one")
        x = check_images(images, self)
        try:
            if self.fixed_batch is None or len(x) == self.fixed_batch:
                out = self._session.run([self._output], {self._input: x})[0]
            else:  # chunks of the fixed batch, the last one padded
                out = run_onnx(self._session, torch.from_numpy(x), self.fixed_batch)[self._output]
        except _ort_errors() as exc:
            raise CheckFailed(f"{self.artifact}: ONNX Runtime failed on {x.shape} "
                              f"({str(exc).splitlines()[0][:200]})") from exc
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self._session = None
