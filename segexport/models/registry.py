"""The model registry: architecture name -> builder.

Builders take keyword-only arguments (``size``, ``num_classes``, ``backbone``,
``output_stride``...) and return a :class:`~segexport.models.shell.SegmentationModel`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segexport.errors import ConfigError, UnknownNameError
from segexport.models.foreign import build_foreign, is_module_spec, load_callable
from segexport.models.shell import SegmentationModel

SIZES = ("tiny", "paper")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., SegmentationModel]
    summary: str
    paper: str
    backbones: tuple[str, ...]
    default_backbone: dict[str, str]
    task: str = "semantic"  # or "instance": padded detections (models.instance_shell)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "summary": self.summary,
            "paper": self.paper,
            "backbones": list(self.backbones),
            "default_backbone": dict(self.default_backbone),
        }


_REGISTRY: dict[str, ModelEntry] = {}

# Architecture modules register themselves on import. Every module of this package except the
# registry and the shell is an architecture file; this order is the order `segexport list` shows.
_ORDER = (
    "fcn", "unet", "segnet", "pspnet", "deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3p", "parsenet", "deconvnet", "fpn", "encnet",
    "maskrcnn", "panet", "torchvision_compat",
)
_NOT_ARCHITECTURES = {"registry", "shell", "instance_shell", "foreign"}


def register_model(
    name: str,
    *,
    summary: str,
    paper: str,
    backbones: tuple[str, ...] = (),
    default_backbone: dict[str, str] | None = None,
    task: str = "semantic",
) -> Callable[[Callable[..., SegmentationModel]], Callable[..., SegmentationModel]]:
    """Decorator registering a builder under ``name``. A duplicate name is a programming error.
    ``task`` is "semantic" (logits) or "instance" (padded detections)."""

    def decorate(builder: Callable[..., SegmentationModel]) -> Callable[..., SegmentationModel]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(
            name, builder, summary, paper, backbones, dict(default_backbone or {}), task
        )
        return builder

    return decorate


def _architecture_modules() -> list[str]:
    here = Path(__file__).parent
    found = [m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in _NOT_ARCHITECTURES]
    rank = {name: i for i, name in enumerate(_ORDER)}
    return sorted(found, key=lambda name: (rank.get(name, len(rank)), name))


def _load_all() -> None:
    for mod in _architecture_modules():
        importlib.import_module(f"segexport.models.{mod}")


def list_models() -> list[ModelEntry]:
    """Every registered architecture, in the order of ``_ORDER`` (then registration order)."""
    _load_all()
    rank = {name: i for i, name in enumerate(_architecture_modules())}
    entries = list(_REGISTRY.values())
    return sorted(entries, key=lambda e: rank.get(e.builder.__module__.rsplit(".", 1)[-1], len(rank)))


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; a user's network for ``MODULE:CALLABLE`` (its module imported).

    Raises:
        UnknownNameError: with the nearest registered names.
        ConfigError: a ``MODULE:CALLABLE`` that does not import or names no callable.
    """
    if is_module_spec(name):
        load_callable(name)  # fails here, before any work, when the module does not import
        return ModelEntry(name, functools.partial(build_foreign, name), "a user's network", "", (), {})
    _load_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownNameError(
            f"unknown architecture {name!r}; {hint}run `segexport list` for all "
            f"({', '.join(_REGISTRY)})"
        )
    return _REGISTRY[name]


def build_model(name: str, **kwargs: object) -> SegmentationModel:
    """Build architecture ``name`` with builder keyword arguments (``None`` values dropped).

    Raises:
        UnknownNameError: unknown architecture.
        ConfigError: an option the architecture does not take, or an invalid value.
    """
    entry = get_entry(name)
    args = {k: v for k, v in kwargs.items() if v is not None}
    size = args.get("size", "tiny")
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    accepted = inspect.signature(entry.builder).parameters
    extra = sorted(set(args) - set(accepted))
    if extra:
        raise ConfigError(f"{name} does not take option(s) {', '.join(extra)}")
    backbone = args.get("backbone")
    if backbone is not None and entry.backbones and backbone not in entry.backbones:
        raise ConfigError(
            f"{name} does not support backbone {backbone!r}; choose one of {', '.join(entry.backbones)}"
        )
    return entry.builder(**args)
