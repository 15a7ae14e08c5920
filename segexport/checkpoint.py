"""segexport checkpoints: a folder with ``checkpoint.safetensors``, ``model.json``, ``metrics.json``.

Loading never unpickles: safetensors, or ``torch.load(weights_only=True)`` for ``.pt``/``.pth``
state-dict files (torchvision's included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import segexport
from segexport.data.preprocess import Preprocess
from segexport.errors import CheckpointError, InputError, SegexportError
from segexport.fsutil import atomic_dir
from segexport.models import SegmentationModel, build_model

WEIGHTS = "checkpoint.safetensors"
MODEL_JSON = "model.json"
METRICS_JSON = "metrics.json"
CHECKPOINT_FILES = (WEIGHTS, MODEL_JSON, METRICS_JSON)
FORMAT_VERSION = 1


def _name_list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise TypeError(f"classes must be a list of names, got {type(value).__name__}")
    return value


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and feed it: recorded in ``model.json``."""

    arch: str
    build_args: dict[str, Any]
    classes: tuple[str, ...]
    preprocess: Preprocess
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "segexport_version": segexport.__version__,
            "arch": self.arch,
            "build_args": self.build_args,
            "classes": list(self.classes),
            "input_size": list(self.preprocess.size),
            "preprocess": self.preprocess.to_dict(),
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> ModelConfig:
        """Raises:
        CheckpointError: a field missing or of the wrong type, or classes that disagree with
            ``build_args["num_classes"]`` (the number of outputs the weights have).
        """
        try:
            config = cls(
                arch=data["arch"],
                build_args=dict(data["build_args"]),
                classes=tuple(_name_list(data["classes"])),
                preprocess=Preprocess.from_dict(data["preprocess"]),
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError, SegexportError) as exc:  # SegexportError: from Preprocess
            raise CheckpointError(f"{origin}: malformed model.json ({exc}); re-create it with `segexport train`") from exc
        config._check(origin)
        return config

    def _check(self, origin: str) -> None:
        if not isinstance(self.arch, str) or not all(isinstance(name, str) for name in self.classes) \
                or not isinstance(self.build_args.get("num_classes", 0), int):
            raise CheckpointError(f"{origin}: malformed model.json (arch and class names must be strings, "
                                  "num_classes an integer); re-create it with `segexport train`")
        outputs = self.build_args.get("num_classes")
        if outputs is not None and outputs != len(self.classes):
            raise CheckpointError(f"{origin}: lists {len(self.classes)} classes but its build_args give the model "
                                  f"{outputs} outputs; make \"classes\" name exactly {outputs} classes")

    def build(self) -> SegmentationModel:
        return build_model(self.arch, **self.build_args)


def save_checkpoint(
    out_dir: str | Path, model: torch.nn.Module, config: ModelConfig, metrics: dict[str, Any]
) -> Path:
    """Write a checkpoint folder atomically (a crash leaves the previous one, or nothing)."""
    out = Path(out_dir)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_dir(out) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"arch": config.arch})
        (tmp / MODEL_JSON).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (tmp / METRICS_JSON).write_text(json.dumps(metrics, indent=2) + "\n")
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``.pt``/``.pth`` state dict, never unpickling code.

    Raises:
        InputError: the file is missing.
        CheckpointError: corrupt, truncated, or not a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: checkpoint file not found")
    try:
        if p.suffix == ".safetensors":
            return load_file(str(p))
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except (SafetensorError, Exception) as exc:
        # Damaged files surface as SafetensorError, UnpicklingError, RuntimeError, EOFError or
        # zipfile errors depending on where the damage is: all mean the same to the user.
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{p}: corrupt or truncated checkpoint ({reason}); re-download or re-train it") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p}: not a state dict of tensors; save it with torch.save(model.state_dict())")
    return obj


def _summarise(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def fit_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str,
                   hint: str = "check --arch, --size and --backbone") -> None:
    """Load ``state`` strictly into ``model``, or raise one line summarising the mismatch.

    Raises:
        CheckpointError: missing keys, unexpected keys or shape mismatches.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_summarise(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_summarise(shapes, 2)}")
        raise CheckpointError(
            f"checkpoint does not fit {what}: {'; '.join(parts)}; {hint}"
        )
    model.load_state_dict(state, strict=True)


def read_config(path: str | Path) -> ModelConfig:
    """The ``model.json`` of a checkpoint folder, validated (weights are not read).

    Raises:
        InputError: the folder or its ``model.json`` is missing.
        CheckpointError: ``model.json`` is not valid JSON or not a model description.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root}: not a checkpoint folder (expected {WEIGHTS} and {MODEL_JSON} inside)")
    meta = root / MODEL_JSON
    if not meta.is_file():
        raise InputError(f"{meta}: missing; a checkpoint folder is written by `segexport train`")
    try:
        data = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta}: not valid JSON ({exc}); re-create it with `segexport train`") from exc
    return ModelConfig.from_dict(data, str(meta))


def load_checkpoint(path: str | Path) -> tuple[SegmentationModel, ModelConfig]:
    """Rebuild the model of a checkpoint folder and load its weights (eval mode).

    Raises:
        InputError: the folder or one of its files is missing.
        CheckpointError: corrupt files or weights that do not fit the recorded architecture.
    """
    root = Path(path)
    config = read_config(root)
    model = config.build()
    fit_state_dict(model, read_state_dict(root / WEIGHTS), f"{config.arch} ({config.build_args})")
    return model.eval(), config


def read_metrics(path: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` of a checkpoint folder (empty dict if absent)."""
    p = Path(path) / METRICS_JSON
    return json.loads(p.read_text()) if p.is_file() else {}
