"""Recipes: one flat TOML per architecture (``segexport/recipes/<arch>.toml``).

A recipe holds every default the pipeline needs for one architecture: model options, input
shape, data, training and budgets. It is validated on load (unknown keys and wrong types are
errors) and overridden from the CLI in one place, :func:`resolve_recipe`; options left
``None`` on the command line mean "the recipe decides".
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from segexport import limits
from segexport.errors import ConfigError, InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


CLASS_BALANCE = ("median_frequency",)
CRF_MODES = ("host", "none")  # what a recipe's ``crf`` key may say


@dataclass(frozen=True)
class Recipe:
    """Defaults for one architecture. Field names are the TOML keys."""

    arch: str
    size: str = "tiny"
    backbone: str | None = None
    output_stride: int | None = None
    upsampling: str | None = None
    input_size: tuple[int, int] = (128, 128)
    data: str = "synthetic"
    train_images: int | None = None
    val_images: int | None = None
    seed: int = 0
    epochs: int = 10
    warmup_epochs: int = 0  # the learning rate rises linearly over these first epochs (0: from the start)
    eval_every: int = 1  # val metrics after every Nth epoch and the last (evaluation does not change the weights)
    batch_size: int = 16
    lr: float = 0.003
    weight_decay: float = 1e-4
    aux_weight: float = 0.4
    # Weight of a class-presence loss (EncNet's SE-loss; networks without that head ignore it).
    se_weight: float = 0.2
    scale_min: float = 0.75
    scale_max: float = 1.5
    bf16: bool | None = None
    # Loss weights per class: "median_frequency" (SegNet's median frequency balancing) or None.
    class_balance: str | None = None
    # A user's network (arch = "MODULE:CALLABLE"): the callable's keyword arguments (a recipe's
    # [model] table) and the multiple its input height and width must have.
    model_kwargs: dict[str, Any] | None = None
    input_divisor: int | None = None
    # Input normalisation, per RGB channel in [0, 1] units (None: ImageNet's, as torchvision's).
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    sync_bn: bool = False  # SyncBatchNorm across processes in a torchrun job (CUDA/nccl only)
    # Precision budgets: the largest mIoU drop (points, vs FP32) a variant may have.
    budget_int8: float = 1.0  # INT8 for TensorRT
    budget_int8_cpu: float = 0.5  # INT8 for ONNX Runtime on CPUs
    budget_fp16: float = 0.1
    # Dense CRF (segexport.postprocess): crf = "host" adds +crf rows to verify; crf_* override
    # the published DeepLab values (None: keep them).
    crf: str | None = None
    crf_appearance_weight: float | None = None
    crf_appearance_xy: float | None = None
    crf_appearance_rgb: float | None = None
    crf_smoothness_weight: float | None = None
    crf_smoothness_xy: float | None = None
    crf_iterations: int | None = None

    def model_args(self, num_classes: int) -> dict[str, Any]:
        """Keyword arguments for :func:`segexport.models.build_model` (None values dropped there)."""
        return {
            "size": self.size,
            "num_classes": num_classes,
            "backbone": self.backbone,
            "output_stride": self.output_stride,
            "upsampling": self.upsampling,
            "model_kwargs": self.model_kwargs,
            "input_divisor": self.input_divisor,
        }

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def _coerce(name: str, value: Any, kind: Any) -> Any:
    text = str(kind)
    if value is None:
        return None
    if text.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"recipe key {name} must be a table of keyword arguments, not {value!r}")
        return dict(value)
    if "float, float, float" in text:
        if not (isinstance(value, (list, tuple)) and len(value) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise ConfigError(f"recipe key {name} must be three numbers [R, G, B] in [0, 1] units, not {value!r}")
        if name == "std" and min(value) <= 0:
            raise ConfigError(f"recipe key std must be three numbers > 0, not {value!r}")
        return tuple(float(v) for v in value)
    if "tuple" in text:
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
            raise ConfigError(f"recipe key {name} must be two positive integers [height, width], not {value!r}")
        return tuple(value)
    if text.startswith("int") or text == "int | None":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"recipe key {name} must be an integer, not {value!r}")
    elif text.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"recipe key {name} must be a number, not {value!r}")
        value = float(value)
    elif text.startswith("bool") and not isinstance(value, bool):
        raise ConfigError(f"recipe key {name} must be true or false, not {value!r}")
    elif text.startswith("str") and not isinstance(value, str):
        raise ConfigError(f"recipe key {name} must be a string, not {value!r}")
    return value


def recipe_from_dict(data: dict[str, Any], origin: str) -> Recipe:
    """Validate a flat mapping into a :class:`Recipe`.

    Raises:
        ConfigError: unknown keys, a missing ``arch`` or a value of the wrong type.
    """
    known = {f.name: f.type for f in fields(Recipe)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{origin}: unknown recipe key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if "arch" not in data:
        raise ConfigError(f"{origin}: recipe has no 'arch' key")
    if data.get("class_balance") not in (None, *CLASS_BALANCE):
        raise ConfigError(f"{origin}: class_balance must be one of {', '.join(CLASS_BALANCE)}, "
                          f"not {data['class_balance']!r}")
    return _check_bounds(Recipe(**{k: _coerce(k, v, known[k]) for k, v in data.items()}), origin)


def _check_bounds(recipe: Recipe, origin: str) -> Recipe:
    """``recipe`` when its seed, size and counts are within :mod:`segexport.limits`' bounds.

    Raises:
        ConfigError: naming the key (its CLI option) and the limit.
    """
    where = "" if origin == "command line" else f"{origin}: "
    limits.check_seed(recipe.seed, f"{where}seed (--seed)")
    limits.check_input_size(recipe.input_size, f"{where}input_size (--input-size)")
    limits.check_count(recipe.epochs, f"{where}epochs (--epochs)", limits.EPOCHS_MAX)
    limits.check_count(recipe.warmup_epochs, f"{where}warmup_epochs", limits.EPOCHS_MAX, minimum=0)
    limits.check_count(recipe.eval_every, f"{where}eval_every", limits.EPOCHS_MAX)
    limits.check_count(recipe.batch_size, f"{where}batch_size (--batch-size)", limits.BATCH_MAX)
    for key in ("train_images", "val_images"):
        limits.check_count(getattr(recipe, key), f"{where}{key} (--{key.replace('_', '-')})", limits.IMAGES_MAX)
    _check_numbers(recipe, where)
    if recipe.crf not in (None, *CRF_MODES):
        raise ConfigError(f"{where}crf must be one of {', '.join(CRF_MODES)} (or left out), not {recipe.crf!r}")
    if recipe.crf_iterations is not None:
        limits.check_count(recipe.crf_iterations, f"{where}crf_iterations", limits.EPOCHS_MAX)
    return recipe


# Keys holding real numbers: (smallest value, whether it must be strictly greater).
_NUMBERS = {"lr": (0.0, False), "weight_decay": (0.0, False), "aux_weight": (0.0, False), "se_weight": (0.0, False), "scale_min": (0.0, True),
            "scale_max": (0.0, True), "budget_int8": (0.0, False), "budget_int8_cpu": (0.0, False),
            "budget_fp16": (0.0, False), "crf_appearance_weight": (0.0, False), "crf_appearance_xy": (0.0, True),
            "crf_appearance_rgb": (0.0, True), "crf_smoothness_weight": (0.0, False), "crf_smoothness_xy": (0.0, True)}


def _check_numbers(recipe: Recipe, where: str) -> None:
    """Raises ConfigError naming the first real-valued key that is not finite or out of range."""
    for key, (low, strict) in _NUMBERS.items():
        value = getattr(recipe, key)
        if value is not None and (not math.isfinite(value) or value < low or (strict and value == low)):
            bound = f"{'>' if strict else '>='} {low:g}"
            raise ConfigError(f"{where}{key} must be a finite number {bound}, not {value!r}; fix the recipe "
                              "or its command-line option")
    if recipe.scale_min > recipe.scale_max:
        raise ConfigError(f"{where}scale_min {recipe.scale_min:g} is larger than scale_max {recipe.scale_max:g}; "
                          "swap them")


def recipe_path(arch: str) -> Path:
    return Path(str(resources.files("segexport") / "recipes" / f"{arch}.toml"))


def load_recipe(arch: str, path: str | Path | None = None) -> Recipe:
    """The recipe of ``arch``: ``path`` if given, else the packaged one, else plain defaults.

    Raises:
        InputError: ``path`` is missing or not valid TOML.
        ConfigError: invalid content.
    """
    p = Path(path) if path is not None else recipe_path(arch)
    if not p.is_file():
        if path is not None:
            raise InputError(f"{p}: recipe file not found")
        return Recipe(arch=arch)
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid TOML ({exc})") from exc
    data.setdefault("arch", arch)
    return recipe_from_dict(_model_table(data, str(p)), str(p))


def _model_table(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """A recipe's ``[model]`` table: ``module = "MODULE:CALLABLE"`` names a user's network (the
    recipe's arch), every other key is one of its keyword arguments (``model_kwargs``)."""
    table = data.pop("model", None)
    if table is None:
        return data
    if not isinstance(table, dict):
        raise ConfigError(f"{origin}: [model] must be a table (module = \"MODULE:CALLABLE\" and its arguments)")
    table = dict(table)
    module = table.pop("module", None)
    if module is not None:
        data["arch"] = module
    if table:
        data["model_kwargs"] = {**(data.get("model_kwargs") or {}), **table}
    return data


def resolve_recipe(recipe: Recipe, **overrides: Any) -> Recipe:
    """Apply CLI overrides; ``None`` means "keep the recipe's value"."""
    given = {k: v for k, v in overrides.items() if v is not None}
    merged = {**recipe.to_dict(), **given}
    return recipe_from_dict(merged, "command line")
