"""The OpenVINO runner: an ONNX file or an OpenVINO IR (``.xml`` + ``.bin``) on OpenVINO's CPU plugin.

Compiled for latency: one stream, ``threads`` inference threads, one infer request reused for
every run. OpenVINO chooses the arithmetic itself (bf16 on CPUs with AMX or AVX-512 bf16, f32
otherwise) and silently falls back to f32 when a requested ``inference_precision`` is not
available, so the runner reads back what the compiled model uses and shows it in ``device``.

OpenVINO 2026.4 reads segexport's FP32, FP16 and Q/DQ INT8 graphs (both targets write Q/DQ;
ONNX Runtime fuses them into QLinear kernels only in memory). It does not read QOperator
graphs with per-channel ``QLinearConv`` weights, nor ONNX Runtime's optimised graphs
(``com.microsoft`` QLinear ops): those fail to load with the operators named.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segexport import ownership
from segexport.errors import CheckFailed, InputError, MissingDependencyError
from segexport.fsutil import atomic_path
from segexport.onnx_graph import load_onnx_graph, model_precision
from segexport.runners.base import PRECISIONS, Runner, check_images, check_precision

INFERENCE_PRECISIONS = ("f32", "bf16", "f16")
RT_INFO_KEY = "segexport"  # where export_ir keeps the ONNX metadata inside the IR
_INT8_TYPES = frozenset({"i8", "u8", "i4", "u4"})
_NOISE = ("Exception from ", "Check '", "FrontEnd API failed", "Model wasn't fully converted",
          "Failed operations detailed log", "Summary:")
_CONVERSION_SUMMARY = ("Conversion is failed for", "No conversion rule found for")
_IR_FIX = "pass a .onnx or an IR .xml with its .bin (segexport.runners.openvino_runner.export_ir writes both)"


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError("openvino is not installed; pip install openvino") from exc
    return openvino


def ov_reason(exc: BaseException) -> str:
    """OpenVINO's message in one line: the operators a conversion failed on, else the first line
    that is not a C++ source location (OpenVINO puts several of those before the reason)."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip(" -")]
    summary = "; ".join(line for line in lines if line.startswith(_CONVERSION_SUMMARY))
    useful = [summary] if summary else [line for line in lines if not line.startswith(_NOISE)] or lines
    return useful[0][:200] if useful else type(exc).__name__


def _check_options(precision: str | None, threads: int | None, inference_precision: str | None) -> None:
    """Raises InputError for options no OpenVINO runner takes, before anything is loaded."""
    check_precision(precision, PRECISIONS, OpenVINORunner.backend)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a whole number of at least 1, got {threads!r}")
    if inference_precision is not None and inference_precision not in INFERENCE_PRECISIONS:
        raise InputError(f"inference_precision must be {', '.join(INFERENCE_PRECISIONS)} or None "
                         f"(OpenVINO's choice), got {inference_precision!r}")


def ir_precision(model: Any) -> str:
    """``int8`` for an IR with FakeQuantize or 8/4-bit constants, ``fp16`` for f16 constants
    (an IR saved with OpenVINO's default ``compress_to_fp16`` counts: its weights are half), else ``fp32``."""
    ops = model.get_ops()
    constant_types = {op.get_output_element_type(0).to_string() for op in ops if op.get_type_name() == "Constant"}
    if constant_types & _INT8_TYPES or any(op.get_type_name() == "FakeQuantize" for op in ops):
        return "int8"
    return "fp16" if "f16" in constant_types else "fp32"


def _read_onnx(core: Any, path: Path) -> tuple[Any, str, dict[str, str]]:
    # onnx parses it first: a file that is not ONNX gets onnx's clear error, and never reaches
    # OpenVINO, which would try every frontend on it (TensorFlow's logging to stderr).
    graph = load_onnx_graph(path, invalid_fix="re-export it with `segexport export`")
    meta = {prop.key: prop.value for prop in graph.metadata_props}
    try:
        model = core.read_model(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: OpenVINO cannot read it ({ov_reason(exc)}); "
                         "pass an FP32, FP16 or Q/DQ INT8 model from segexport") from exc
    return model, model_precision(graph), meta


def _read_ir(core: Any, path: Path) -> tuple[Any, str, dict[str, str]]:
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise InputError(f"{path}: its weights {weights.name} are missing; copy the .bin beside the .xml")
    try:
        model = core.read_model(str(path), str(weights))
    except RuntimeError as exc:
        raise InputError(f"{path}: not an OpenVINO IR OpenVINO can read ({ov_reason(exc)}); {_IR_FIX}") from exc
    info = model.get_rt_info()
    meta = {k: str(v) for k, v in model.get_rt_info([RT_INFO_KEY]).value.items()} if RT_INFO_KEY in info else {}
    return model, ir_precision(model), meta


def read_model(core: Any, artifact: Path) -> tuple[Any, str, dict[str, str]]:
    """The OpenVINO model of ``artifact``, its precision and its segexport metadata.

    Raises:
        InputError: a missing file, an IR without its ``.bin``, another kind of file, or a
            model OpenVINO cannot read.
    """
    if not artifact.is_file():
        raise InputError(f"{artifact}: model file not found; {_IR_FIX}")
    if artifact.suffix == ".onnx":
        return _read_onnx(core, artifact)
    if artifact.suffix == ".xml":
        return _read_ir(core, artifact)
    kind = artifact.suffix or "files without a suffix"
    raise InputError(f"{artifact}: the OpenVINO runner does not run {kind}; {_IR_FIX}")


def _logits_output(model: Any, path: Path) -> int:
    """The index of the output holding logits: ``logits``, else the first 4-D float output."""
    outputs = model.outputs
    named = [i for i, o in enumerate(outputs) if "logits" in o.get_names()]
    floats = [i for i, o in enumerate(outputs) if o.get_element_type().is_real() and o.get_partial_shape().rank == 4]
    if not (named or floats):
        names = ", ".join(f"{o.get_any_name()} {o.get_element_type().to_string()}" for o in outputs)
        raise InputError(f"{path}: no float [N, C, H, W] logits output (outputs: {names}); "
                         "export with --output logits or --output both")
    return (named or floats)[0]


def _input_size(model: Any, meta: dict[str, str]) -> tuple[int, int] | None:
    """The size recorded by ``segexport export`` (metadata), else the input's fixed height and width."""
    if "input_size" in meta:
        h, w = json.loads(meta["input_size"])
        return int(h), int(w)
    shape = model.inputs[0].get_partial_shape()
    if shape.rank == 4 and shape[2].is_static and shape[3].is_static:
        return shape[2].get_length(), shape[3].get_length()
    return None


def _compile(core: Any, model: Any, artifact: Path, threads: int, inference_precision: str | None) -> Any:
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if inference_precision is not None:
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    try:
        return core.compile_model(model, "CPU", config)
    except RuntimeError as exc:
        raise InputError(f"{artifact}: OpenVINO cannot compile it for the CPU ({ov_reason(exc)})") from exc


class OpenVINORunner(Runner):
    """A model compiled by OpenVINO for the CPU, with one reused infer request.

    Attributes:
        threads: inference threads the compiled model uses (OpenVINO caps them at the cores).
        inference_precision: the arithmetic OpenVINO actually runs: ``f32``, ``bf16`` or ``f16``.
    """

    backend = "openvino"

    def __init__(self, artifact: str | Path, *, precision: str | None = None, threads: int | None = None,
                 inference_precision: str | None = None) -> None:
        """Open ``artifact`` (``.onnx`` or IR ``.xml``) and compile it for the CPU.

        Args:
            precision: label ``fp32``/``fp16``/``int8``; default: read from the graph.
            threads: inference threads (default: torch's current setting).
            inference_precision: ``f32``, ``bf16`` or ``f16``; None: OpenVINO's default.

        Raises:
            MissingDependencyError: openvino does not import.
            InputError: bad options, a missing or unreadable model, an IR without its ``.bin``,
                a graph without a logits output, or one OpenVINO cannot compile.
        """
        _check_options(precision, threads, inference_precision)
        ov = _import_openvino()
        self.artifact = Path(artifact)
        core = ov.Core()
        model, found, meta = read_model(core, self.artifact)
        self.precision = precision or found
        self.task = meta.get("task", "semantic")
        self._names = [o.get_any_name() for o in model.outputs]
        self._output = None if self.task == "instance" else _logits_output(model, self.artifact)
        batch = model.inputs[0].get_partial_shape()[0]
        self.fixed_batch = batch.get_length() if batch.is_static else None
        self.input_size = _input_size(model, meta)
        threads = threads or torch.get_num_threads()
        self._compiled: Any = _compile(core, model, self.artifact, threads, inference_precision)
        self._request: Any = self._compiled.create_infer_request()
        self.threads = int(self._compiled.get_property("INFERENCE_NUM_THREADS"))
        self.inference_precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.device = f"cpu, openvino {ov.__version__.split('-')[0]} CPU, {self.threads} threads, {self.inference_precision}"

    def compiled_property(self, name: str) -> Any:
        """A property of the compiled model (e.g. ``NUM_STREAMS``), as OpenVINO reports it."""
        if self._compiled is None:
            raise InputError(f"{self.artifact}: the runner was closed; open a new one")
        return self._compiled.get_property(name)

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        # infer() copies the outputs out of the request, so the next run cannot overwrite them.
        result = self._request.infer({0: x})
        return [result[i] for i in range(len(self._names))]

    def _infer_fixed(self, x: np.ndarray, batch: int) -> list[np.ndarray]:
        """Chunks of exactly ``batch`` images, the last one padded with copies of its last image."""
        outputs = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
            outputs.append([value[: len(chunk)] for value in self._infer(padded)])
        return [np.concatenate(column) for column in zip(*outputs)]

    def _outputs(self, images: np.ndarray) -> list[np.ndarray]:
        """Every output on ``images``, in the model's order."""
        if self._request is None:
            raise InputError(f"{self.artifact}: the runner was closed; open a new one")
        x = check_images(images, self)
        try:
            if self.fixed_batch is None or len(x) == self.fixed_batch:
                return self._infer(x)
            return self._infer_fixed(x, self.fixed_batch)
        except RuntimeError as exc:
            raise CheckFailed(f"{self.artifact}: OpenVINO failed on {x.shape} ({ov_reason(exc)})") from exc

    def run(self, images: np.ndarray) -> np.ndarray:
        if self._output is None:
            raise self.no_logits()
        return np.asarray(self._outputs(images)[self._output], dtype=np.float32)

    def run_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self._output is not None:
            return super().run_outputs(images)
        return dict(zip(self._names, self._outputs(images)))

    def close(self) -> None:
        self._request = None
        self._compiled = None


def export_ir(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert an ONNX file to OpenVINO IR: ``xml_path`` and the ``.bin`` beside it, weights kept
    at their precision (no FP16 compression) and the ONNX metadata kept in the IR's rt_info.

    Both files are written under temporary names and renamed into place, the ``.bin`` first, so
    an interrupted export never leaves a half-written file, nor a new ``.xml`` without its
    ``.bin``. (Replacing an IR, an interruption between the two renames leaves the new ``.bin``
    beside the old ``.xml``; export again.)

    Returns:
        ``xml_path``.

    Raises:
        MissingDependencyError: openvino does not import.
        InputError: a missing or unreadable ONNX file, one OpenVINO cannot convert, an
            ``xml_path`` not ending in ``.xml``, or an output folder that cannot be written.
    """
    ov = _import_openvino()
    source, target = Path(onnx_path), Path(xml_path)
    if target.suffix != ".xml":
        raise InputError(f"{target}: an OpenVINO IR path must end in .xml (its weights go to the .bin beside it)")
    graph = load_onnx_graph(source, invalid_fix="re-export it with `segexport export`")
    try:
        model = ov.convert_model(str(source))
    except RuntimeError as exc:
        raise InputError(f"{source}: OpenVINO cannot convert it ({ov_reason(exc)})") from exc
    for prop in graph.metadata_props:
        model.set_rt_info(prop.value, [RT_INFO_KEY, prop.key])
    # Exits run inner first: the .bin is renamed into place before the .xml that needs it.
    with atomic_path(target) as xml_part, atomic_path(target.with_suffix(".bin")) as bin_part:
        # save_model insists on a name ending in .xml, so it writes into a temporary folder.
        with tempfile.TemporaryDirectory(prefix=ownership.temporary_prefix(target.name), suffix=".part",
                                         dir=target.parent) as tmp:
            ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
            os.replace(Path(tmp) / "model.bin", bin_part)
            os.replace(Path(tmp) / "model.xml", xml_part)
    return target
