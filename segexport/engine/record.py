"""The JSON written beside every engine: how it was built, for which TensorRT and which GPU.

A serialized engine is only valid for the TensorRT version and the GPU model that built it.
The record lets the runner refuse a mismatched engine with a message that says what to do,
instead of a deserialisation failure (or, across GPUs of one version, silently slow kernels).
It also carries the ONNX model's metadata props (classes, mean, std, input size), so an engine
can be fed and served without its ONNX file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segexport.errors import InputError

RECORD_FORMAT = "segexport-engine/1"


def record_path(engine: str | Path) -> Path:
    """``model.int8.plan`` -> ``model.int8.json``."""
    return Path(engine).with_suffix(".json")


def read_engine_record(engine: str | Path) -> dict[str, Any]:
    """The record beside ``engine``.

    Raises:
        InputError: the engine or its record is missing or malformed.
    """
    path = Path(engine)
    if not path.is_file():
        raise InputError(f"{path}: engine file not found")
    rec = record_path(path)
    if not rec.is_file():
        raise InputError(f"{path}: its build record {rec.name} is missing, so its TensorRT version and GPU are "
                         "unknown; rebuild it with `segexport engine MODEL.onnx`")
    try:
        record = json.loads(rec.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{rec}: unreadable engine record ({exc}); rebuild the engine with `segexport engine`") from exc
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise InputError(f"{rec}: not a {RECORD_FORMAT} engine record; rebuild the engine with `segexport engine`")
    return record


def engine_mismatch(record: dict[str, Any], tensorrt_version: str, gpu: dict[str, Any]) -> str | None:
    """Why an engine with ``record`` cannot run here, or None.

    Args:
        record: from :func:`read_engine_record`.
        tensorrt_version: ``tensorrt.__version__`` here.
        gpu: ``{"name", "compute_capability"}`` of the device here.
    """
    built_trt, built_gpu = record["tensorrt_version"], record["gpu"]
    rebuild = f"rebuild it here with `segexport engine {record.get('onnx', 'MODEL.onnx')}`"
    if built_trt != tensorrt_version:
        return (f"built with TensorRT {built_trt} but TensorRT {tensorrt_version} is installed "
                f"(an engine runs only on the version that built it); {rebuild}")
    if built_gpu["name"] != gpu["name"] or built_gpu["compute_capability"] != gpu["compute_capability"]:
        return (f"built for {built_gpu['name']} (compute {built_gpu['compute_capability']}) but this GPU is "
                f"{gpu['name']} (compute {gpu['compute_capability']}); {rebuild}")
    return None
