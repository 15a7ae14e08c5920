"""Metadata carried inside an exported ONNX file (``metadata_props``).

Everything a deployment needs to feed the graph and read its outputs travels with it: the
architecture, the class names, the normalisation, the input layout and size, and where the
weights came from. Values are strings (ONNX's rule); lists and numbers are JSON-encoded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import onnx

import segexport
from segexport.data.preprocess import Preprocess
from segexport.onnx_graph import load_onnx_graph, read_metadata  # noqa: F401 (re-exported for export's callers)

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
    task: str = "semantic",
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
        task: "semantic" (logits) or "instance" (padded detections, see
            :mod:`segexport.models.instance_shell`).
    """
    return {
        "arch": arch,
        "task": task,
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


