"""Metadata carried inside an exported ONNX file (``metadata_props``).

Everything a deployment needs to feed the graph and read its outputs travels with it: the
architecture, the class names, the normalisation, the input layout and size, and where the
weights came from. Values are strings (ONNX's rule); lists and numbers are JSON-encoded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

import segexport
from segexport.data.preprocess import Preprocess
from segexport.errors import InputError

INPUT_LAYOUT = "NCHW"

# onnx-simplifier records its own settings and node-level change logs as metadata props
# ("onnxsim.*"); they describe the simplifier's run, not the model, and are dropped so the
# file carries only what a deployment reads. The node counts go to the export summary instead.
_DROPPED_PREFIXES = ("onnxsim.",)


def export_metadata(
    *,
    arch: str,
    classes: Sequence[str],
    preprocess: Preprocess,
    input_size: tuple[int, int],
    opset: int,
    outputs: Sequence[str],
    source: str,
    source_sha256: str,
    dynamic_batch: bool,
    dynamic_hw: bool,
    input_divisor: int,
) -> dict[str, str]:
    """The ``metadata_props`` of an exported model, as strings.

    Args:
        arch: registered architecture name.
        classes: class name of each output channel / label value.
        preprocess: its mean, std and resize mode (the size is ``input_size``).
        input_size: (height, width) the graph was exported and verified at.
        opset: the default-domain opset of the graph.
        outputs: output names, in graph order.
        source: where the weights came from (``checkpoint:DIR``, ``weights:FILE``,
            ``random-init:seed=N``).
        source_sha256: SHA-256 of the weights file ("" for a random init).
        dynamic_batch, dynamic_hw: which input axes are dynamic.
        input_divisor: height and width must be multiples of this (matters with ``dynamic_hw``).
    """
    return {
        "arch": arch,
        "classes": json.dumps(list(classes)),
        "num_classes": str(len(classes)),
        "mean": json.dumps(list(preprocess.mean)),
        "std": json.dumps(list(preprocess.std)),
        "pixel_scale": json.dumps(1.0 / 255.0),
        "resize": preprocess.resize,
        "input_layout": INPUT_LAYOUT,
        "input_size": json.dumps(list(input_size)),
        "input_divisor": str(input_divisor),
        "dynamic_batch": json.dumps(dynamic_batch),
        "dynamic_hw": json.dumps(dynamic_hw),
        "outputs": json.dumps(list(outputs)),
        "opset": str(opset),
        "segexport_version": segexport.__version__,
        "source": source,
        "source_sha256": source_sha256,
    }


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Replace ``model``'s metadata props by ``metadata`` (in place; non-strings JSON-encoded).

    Props written by tools (``onnxsim.*``) are dropped; other props already present and not
    named in ``metadata`` are kept.
    """
    kept = {
        p.key: p.value
        for p in model.metadata_props
        if not p.key.startswith(_DROPPED_PREFIXES) and p.key not in metadata
    }
    merged = {**kept, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, merged)


def load_onnx_graph(path: str | Path, *, missing_fix: str = "", invalid_fix: str = "") -> onnx.ModelProto:
    """An ONNX file's graph and metadata, without loading external weight data.

    Args:
        missing_fix, invalid_fix: what to do, appended to the error for a missing file / a
            file that is not ONNX (``"; ..."``); nothing by default.

    Raises:
        InputError: the file is missing or not an ONNX model.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: ONNX file not found{'; ' + missing_fix if missing_fix else ''}")
    try:
        return onnx.load(str(p), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:  # which one depends on the damage
        tail = f"; {invalid_fix}" if invalid_fix else ""
        raise InputError(f"{p}: not an ONNX model ({type(exc).__name__}){tail}") from exc


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata props of an ONNX file, without loading its weights.

    Raises:
        InputError: the file is missing or not an ONNX model.
    """
    return {prop.key: prop.value for prop in load_onnx_graph(path).metadata_props}
