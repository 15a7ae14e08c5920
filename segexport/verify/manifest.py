"""The build manifest, ``BUILD_DIR/build.json``: what a build made and how each variant is judged.

Written by ``segexport build``, read by ``segexport verify`` and the Triton exporter. Paths are
relative to the build folder, so a build folder can be moved or copied as a whole. Reading
validates every field and names the first problem in one line.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from segexport.errors import InputError
from segexport.fsutil import write_json
from segexport.precision.targets import TARGETS
from segexport.runners import BACKENDS
from segexport.runners.base import PRECISIONS

MANIFEST_NAME = "build.json"
FORMAT_VERSION = 1
_FIX = "re-run `segexport build` to rewrite it"


@dataclass
class VariantSpec:
    """One deployment variant of a build.

    Attributes:
        name: e.g. ``onnx``, ``onnx-fp16``, ``pytorch-fp16``, ``onnx-int8-cpu``, ``trt-int8``.
        backend: a registered backend (``runners.registry``).
        precision: ``fp32``, ``fp16`` or ``int8``.
        target: the INT8 target (``precision.targets``), None otherwise.
        artifact: path relative to the build folder (None when skipped).
        budget_pts: largest allowed mIoU drop vs the PyTorch reference, in points (None: not judged).
        skipped: why the variant was not built (None when it was).
        details: build facts for the report (e.g. ``{"trtexec": "...", "kept_layers": [...]}``).
    """

    name: str
    backend: str
    precision: str
    target: str | None
    artifact: str | None
    budget_pts: float | None
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildManifest:
    """A build folder's contents: the reference (checkpoint, or FP32 ONNX), the val data and the variants."""

    arch: str
    reference: str
    data: str
    seed: int
    val_images: int
    input_size: tuple[int, int]
    variants: list[VariantSpec]
    random_init: bool = False
    # The backend the reference runs on: torch for a checkpoint folder, onnxruntime when the
    # build started from an ONNX file (``reference`` is then the FP32 model.onnx).
    reference_backend: str = "torch"
    # "semantic" (rows judged by mIoU) or "instance" (padded detections, judged by COCO AP).
    task: str = "semantic"


def _bad(path: Path, what: str) -> InputError:
    return InputError(f"{path}: {what}; {_FIX}")


def _check_keys(path: Path, data: Any, cls: type, where: str, extra: tuple[str, ...] = ()) -> None:
    if not isinstance(data, dict):
        raise _bad(path, f"{where} must be a JSON object, got {type(data).__name__}")
    known = [f.name for f in fields(cls)]
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    unknown = sorted(set(data) - set(known) - set(extra))
    missing = [k for k in required if k not in data]
    if unknown or missing:
        problem = f"unknown keys {unknown}" if unknown else f"missing keys {missing}"
        raise _bad(path, f"{where} has {problem}")


def _typed(path: Path, where: str, value: Any, types: tuple[type, ...], *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = " or ".join(t.__name__ for t in types) + (" or null" if optional else "")
        raise _bad(path, f"{where} must be {names}, got {value!r}")
    return value


def _choice(path: Path, where: str, value: Any, allowed: tuple[str, ...], *, optional: bool = False) -> Any:
    if (value is None and optional) or value in allowed:
        return value
    raise _bad(path, f"{where} must be one of {', '.join(allowed)}{' or null' if optional else ''}, got {value!r}")


def _variant(path: Path, i: int, data: Any) -> VariantSpec:
    where = f"variants[{i}]"
    _check_keys(path, data, VariantSpec, where)
    name = _typed(path, f"{where}.name", data["name"], (str,))
    budget = _typed(path, f"{where}.budget_pts", data["budget_pts"], (int, float), optional=True)
    if budget is not None and (not math.isfinite(budget) or budget < 0):
        raise _bad(path, f"{where}.budget_pts must be a number >= 0, got {budget!r}")
    spec = VariantSpec(
        name=name,
        backend=_choice(path, f"{where}.backend", data["backend"], tuple(BACKENDS)),
        precision=_choice(path, f"{where}.precision", data["precision"], PRECISIONS),
        target=_choice(path, f"{where}.target", data["target"], tuple(TARGETS), optional=True),
        artifact=_typed(path, f"{where}.artifact", data["artifact"], (str,), optional=True),
        budget_pts=None if budget is None else float(budget),
        skipped=_typed(path, f"{where}.skipped", data.get("skipped"), (str,), optional=True),
        details=_typed(path, f"{where}.details", data.get("details", {}), (dict,)),
    )
    if spec.artifact is None and spec.skipped is None:
        raise _bad(path, f"variant {name!r} has neither an artifact nor a skip reason")
    return spec


def _input_size(path: Path, value: Any) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise _bad(path, f"input_size must be [height, width], two positive integers, got {value!r}")
    return int(value[0]), int(value[1])


def _manifest(path: Path, data: Any) -> BuildManifest:
    _check_keys(path, data, BuildManifest, "the manifest", extra=("format_version",))
    variants = _typed(path, "variants", data["variants"], (list,))
    specs = [_variant(path, i, v) for i, v in enumerate(variants)]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _bad(path, f"variant names must be unique, {duplicates} repeat")
    val_images = _typed(path, "val_images", data["val_images"], (int,))
    if val_images < 0:
        raise _bad(path, f"val_images must be >= 0, got {val_images}")
    return BuildManifest(
        arch=_typed(path, "arch", data["arch"], (str,)),
        reference=_typed(path, "reference", data["reference"], (str,)),
        data=_typed(path, "data", data["data"], (str,)),
        seed=_typed(path, "seed", data["seed"], (int,)),
        val_images=val_images,
        input_size=_input_size(path, data["input_size"]),
        variants=specs,
        random_init=_typed(path, "random_init", data.get("random_init", False), (bool,)),
        reference_backend=_choice(path, "reference_backend", data.get("reference_backend", "torch"),
                                  ("torch", "onnxruntime")),
        task=_choice(path, "task", data.get("task", "semantic"), ("semantic", "instance")),
    )


def read_manifest(build_dir: str | Path) -> BuildManifest:
    """The validated manifest of ``build_dir``.

    Raises:
        InputError: ``build_dir`` or its ``build.json`` is missing, not JSON, or malformed (one line).
    """
    root = Path(build_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a build folder; pass the folder `segexport build` wrote (builds/ARCH)")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path}: missing; {root} is not a finished build, run `segexport build ARCH --out {root}`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(path, f"not valid JSON ({exc})") from exc
    return _manifest(path, data)


def write_manifest(build_dir: str | Path, manifest: BuildManifest) -> Path:
    """Write ``build_dir/build.json`` atomically and return its path."""
    data = {"format_version": FORMAT_VERSION, **asdict(manifest)}
    data["input_size"] = list(manifest.input_size)
    path = Path(build_dir) / MANIFEST_NAME
    write_json(path, data)
    return path
