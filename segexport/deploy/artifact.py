"""How to feed an artifact and read its output: preprocessing and class names, for any artifact kind.

A checkpoint folder records them in ``model.json``; an ONNX model written by segexport in its
metadata props; an engine in its build record (which copies the ONNX metadata). A plain ONNX
model without metadata is fed with ImageNet's mean and std at its fixed input size, and its
classes are numbered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from segexport.data import Preprocess
from segexport.errors import InputError


@dataclass(frozen=True)
class ArtifactSpec:
    """What predicting with, or serving, an artifact needs besides the runner.

    Attributes:
        preprocess: input size, mean, std and resize mode.
        classes: class name of each output channel.
        arch: the architecture when known.
        notes: what was assumed (e.g. ImageNet mean/std for a plain ONNX model).
    """

    preprocess: Preprocess
    classes: tuple[str, ...]
    arch: str | None = None
    notes: list[str] = field(default_factory=list)


def _from_checkpoint(path: Path) -> ArtifactSpec:
    from segexport.checkpoint import read_config

    config = read_config(path)
    return ArtifactSpec(config.preprocess, tuple(config.classes), config.arch)


def _from_metadata(path: Path, metadata: dict[str, str], fixed_size: tuple[int, int] | None,
                   classes: int | None) -> ArtifactSpec:
    if "input_size" in metadata and "mean" in metadata:
        preprocess = Preprocess(size=tuple(json.loads(metadata["input_size"])), mean=json.loads(metadata["mean"]),
                                std=json.loads(metadata["std"]), resize=metadata.get("resize", "resize"))
        names = tuple(json.loads(metadata["classes"])) if "classes" in metadata else None
        notes: list[str] = []
    elif fixed_size is not None:
        preprocess, names = Preprocess(size=fixed_size), None
        notes = [f"{path.name} has no segexport metadata: images are fed with ImageNet mean/std at {fixed_size}"]
    else:
        raise InputError(f"{path}: dynamic height and width and no segexport metadata, so the input size is "
                         "unknown; export it with `segexport export`")
    if names is None:
        if classes is None:
            raise InputError(f"{path}: the number of classes is unknown (no metadata, no [N, C, H, W] output)")
        names = tuple(f"class_{i}" for i in range(classes))
    return ArtifactSpec(preprocess, names, metadata.get("arch"), notes)


def _logits_channels(outputs: list[dict]) -> int | None:
    shapes = [o["shape"] for o in outputs if len(o["shape"]) == 4 and o["shape"][1] > 0]
    return shapes[0][1] if shapes else None


def read_artifact_spec(artifact: str | Path) -> ArtifactSpec:
    """Preprocessing and classes of a checkpoint folder, ``.onnx`` file or ``.plan``/``.engine``.

    Raises:
        InputError: missing files, or a plain model whose input size or classes cannot be known.
        CheckpointError: a malformed ``model.json``.
    """
    path = Path(artifact)
    if path.is_dir():
        return _from_checkpoint(path)
    if path.suffix in (".plan", ".engine"):
        from segexport.engine.record import read_engine_record

        record = read_engine_record(path)
        opt = record["settings"]["profile"]["opt"]
        return _from_metadata(path, record.get("metadata", {}), (opt[2], opt[3]), _logits_channels(record["outputs"]))
    from segexport.engine.io import read_onnx_io

    io = read_onnx_io(path)
    dims = io.image_input.shape
    fixed = (dims[2], dims[3]) if min(dims[2:]) > 0 else None
    return _from_metadata(path, io.metadata, fixed, _logits_channels([o.to_dict() for o in io.outputs]))
