"""The ONNX Runtime runner: an ONNX file on the best execution provider this machine has.

TensorRT and CUDA execution providers are used when ``onnxruntime.get_available_providers()``
lists them (an ``onnxruntime-gpu`` install with its libraries), with the CPU provider behind
them for nodes they do not take; otherwise the CPU provider alone. The providers actually
used are in ``device``. FP16 graphs run on the CPU provider in FP32 arithmetic (ORT upcasts
them); the torch runner's ``fp16`` is the true-half figure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segexport.error_map import translated_errors
from segexport.errors import CheckFailed, InputError, MissingDependencyError
from segexport.onnx_graph import graph_precision
from segexport.runners.base import PRECISIONS, Runner, check_images, check_precision

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            "onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu for CUDA/TensorRT)"
        ) from exc
    return onnxruntime


def ort_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's exception types for a failed run (a failed load: :func:`open_session`)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return state.Fail, state.InvalidArgument, state.InvalidGraph, state.RuntimeException


def open_session(onnx_path: str | Path, *, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None, optimized_model_path: str | Path | None = None) -> Any:
    """An ONNX Runtime session on exactly ``providers`` (CPU by default) with ``threads``
    (default: as many as torch uses). Every ONNX Runtime session segexport opens comes from here.

    Args:
        optimized_model_path: where ONNX Runtime writes the graph it actually runs (all
            optimisations applied), for inspection; None: not written.

    Raises:
        InputError: ONNX Runtime cannot load the file (corrupt, IR version too new, external
            data missing, unknown operator).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    # Fatal only: ORT warns about unused initializers etc., and a load error, raised below,
    # would otherwise also be logged to stderr as a second, multi-line report.
    options.log_severity_level = 4
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    with translated_errors(onnx_path):
        return ort.InferenceSession(str(onnx_path), options, providers=list(providers))


def static_batch(session: Any) -> int | None:
    """The input's batch size when it is fixed, else None."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def run_onnx(session: Any, images: torch.Tensor, batch: int) -> dict[str, np.ndarray]:
    """Every output of ``session`` on ``images`` in chunks of ``batch``, concatenated.

    A graph with a fixed batch gets chunks of exactly that size (the last one padded with
    copies of its last image, then trimmed).
    """
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    chunks: dict[str, list[np.ndarray]] = {o: [] for o in outputs}
    x = images.detach().cpu().numpy().astype(np.float32)
    for start in range(0, len(x), batch):
        chunk = x[start : start + batch]
        real = len(chunk)
        if real < batch and static_batch(session) is not None:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        for out_name, value in zip(outputs, session.run(outputs, {name: chunk})):
            chunks[out_name].append(value[:real])
    return {o: np.concatenate(v) for o, v in chunks.items()}


def choose_providers(available: list[str]) -> list[str]:
    """The GPU providers among ``available`` in order of preference, then the CPU provider."""
    return [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]


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
        self.task = self._session.get_modelmeta().custom_metadata_map.get("task", "semantic")
        self._output = None if self.task == "instance" else _logits_output(self._session, self.artifact)
        batch = self._session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.input_size = _input_size(self._session)
        where = "cpu" if self.providers[0] == "CPUExecutionProvider" else "gpu"
        self.device = f"{where}, onnxruntime {ort.__version__} {self.providers[0]}, {self.threads} threads"

    def _outputs(self, images: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """``names`` (default: all) of the session's outputs on ``images`` (chunks of a fixed
        batch, the last padded)."""
        if self._session is None:
            raise InputError(f"{self.artifact}: the runner was closed; open a new one")
        names = names or [o.name for o in self._session.get_outputs()]
        x = check_images(images, self)
        try:
            if self.fixed_batch is None or len(x) == self.fixed_batch:
                return dict(zip(names, self._session.run(names, {self._input: x})))
            found = run_onnx(self._session, torch.from_numpy(x), self.fixed_batch)
            return {name: found[name] for name in names}
        except ort_errors() as exc:
            raise CheckFailed(f"{self.artifact}: ONNX Runtime failed on {x.shape} "
                              f"({str(exc).splitlines()[0][:200]})") from exc

    def run(self, images: np.ndarray) -> np.ndarray:
        if self._output is None:
            raise self.no_logits()
        return np.asarray(self._outputs(images, [self._output])[self._output], dtype=np.float32)

    def run_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self._output is not None:
            return super().run_outputs(images)
        return self._outputs(images)

    def close(self) -> None:
        self._session = None
