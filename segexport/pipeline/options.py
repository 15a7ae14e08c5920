"""The build's options, resolved against the recipe and checked in one place, before any work.

Options left ``None`` mean "the recipe decides" (``segexport/recipes/<arch>.toml``). Every
check that can fail on user input runs here, so a bad option costs no training time and
leaves no folder behind.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segexport import limits
from segexport.errors import CheckpointError, ConfigError, InputError
from segexport.fsutil import check_output_file
from segexport.ownership import check_writable
from segexport.recipe import Recipe, load_recipe, resolve_recipe
from segexport.verify.render import JUNIT_SOURCE

TARGETS = ("both", "tensorrt", "cpu")
DEFAULT_OUT = Path("builds")
# Recipe keys that callers may override beyond the named options (quick test builds use them).
RECIPE_OVERRIDES = ("epochs", "train_images", "val_images", "batch_size", "lr", "seed")
EXPORT_IMAGES = 32  # export verification images (at most the val images)
SKIP_ACCURACY_IMAGES = 1  # with --skip-accuracy the precision stage judges on one image only
MAX_ROWS = 8  # rows a build verifies at most: the reference and seven variants


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build needs to know, resolved.

    Attributes:
        recipe: the architecture's recipe with every override applied.
        build_dir: where artifacts go (``builds/ARCH`` by default).
        checkpoint: a checkpoint folder or weights file to start from (None: train or random init).
        input_size: the export size asked for (None: the checkpoint's or the recipe's).
        int8_targets: the INT8 targets to make, in order (``tensorrt`` first: ``cpu`` reuses its ranges).
        val_images: how many val images verify and the precision stage use.
        budgets: mIoU budgets in points, by ``fp16``, ``int8.tensorrt`` and ``int8.cpu``.
    """

    arch: str
    recipe: Recipe
    build_dir: Path
    checkpoint: Path | None
    input_size: tuple[int, int] | None
    size: str | None
    backbone: str | None
    random_init: bool
    fp16: bool
    int8_targets: tuple[str, ...]
    trt_engines: bool
    calib: str | None
    calib_images: int | None
    method: str | None
    max_fallback: int | None
    val_images: int
    skip_accuracy: bool
    budgets: dict[str, float]
    junit: Path | None
    force: bool = False

    @property
    def data(self) -> str:
        return self.recipe.data

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def export_images(self) -> int:
        return min(EXPORT_IMAGES, self.val_images)

    @property
    def judge_images(self) -> int:
        """Val images the precision stage judges its variants on."""
        return SKIP_ACCURACY_IMAGES if self.skip_accuracy else self.val_images


def check_budget(value: float | None, option: str) -> float | None:
    """``value`` when it is a finite number of points >= 0 (None stays None).

    Raises:
        ConfigError: negative, infinite or NaN.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option} must be a number of mIoU points >= 0, got {value!r}")
    return float(value)


def _count_val(recipe: Recipe) -> int:
    """The number of val images of the recipe's data (also checks that the data exist)."""
    from segexport.data import open_dataset

    source = open_dataset(recipe.data, "val", size=tuple(recipe.input_size), seed=recipe.seed, length=recipe.val_images,
                          length_option="--val-images")
    if len(source) < 1:
        raise InputError(f"--data {recipe.data}: the val split is empty; pass data with val images")
    return len(source)


def _check_calib(calib: str | None, recipe: Recipe) -> None:
    """A missing calibration folder or data set fails before any work."""
    if calib is None:
        return
    from segexport.data import open_dataset
    from segexport.precision.calibration_data import is_dataset_spec

    if is_dataset_spec(calib):
        open_dataset(calib, "calib", size=tuple(recipe.input_size), seed=recipe.seed)
    elif not Path(calib).is_dir():
        state = "is a file" if Path(calib).exists() else "does not exist"
        raise InputError(f"--calib {calib}: {state}; pass a folder of images or a data set spec "
                         "(synthetic, folder:PATH, ...)")


def _check_int8(int8_targets: tuple[str, ...], calib: str | None, calib_images: int | None, method: str | None) -> None:
    from segexport.precision.int8_stage import resolve_int8_options

    for target in int8_targets:
        resolve_int8_options(target=target, calib=calib, calib_images=calib_images, method=method,
                             percentile=None, calib_cache=None)


def check_checkpoint_folder(src: Path, arch: str) -> None:
    """A checkpoint folder given to a build of ``arch`` must be one of ``arch`` (read from its model.json).

    Raises:
        InputError: no model.json; CheckpointError: unreadable, or a checkpoint of another architecture.
    """
    from segexport.checkpoint import MODEL_JSON

    meta = src / MODEL_JSON
    if not meta.is_file():
        raise InputError(f"--checkpoint {src}: not a checkpoint folder ({MODEL_JSON} missing); "
                         "pass a folder written by `segexport train`, or a weights file")
    try:
        recorded = json.loads(meta.read_text()).get("arch")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{meta}: not valid JSON ({exc}); re-create it with `segexport train`") from exc
    if recorded != arch:
        raise CheckpointError(f"--checkpoint {src} is a checkpoint of {recorded}, not {arch}; "
                              f"pass a {arch} checkpoint or build {recorded}")


def _check_source(checkpoint: Path | None, random_init: bool, size: str | None, backbone: str | None) -> None:
    if checkpoint is not None and random_init:
        raise ConfigError("--checkpoint and --random-init exclude each other; pass one")
    if checkpoint is None:
        return
    if not checkpoint.exists():
        raise InputError(f"--checkpoint {checkpoint}: not found; pass a checkpoint folder or a weights file")
    given = [name for name, value in (("--size", size), ("--backbone", backbone)) if value is not None]
    if checkpoint.is_dir() and given:
        raise ConfigError(f"{' and '.join(given)} apply to training, --random-init or a weights file, not to the "
                          f"checkpoint folder {checkpoint}; drop {' and '.join(given)}")


def _check_memory(recipe: Recipe, val_images: int) -> None:
    """A size, batch or val count the machine cannot hold fails before training (see :mod:`segexport.limits`)."""
    from segexport.verify.latency import THROUGHPUT_BATCH

    batch = max(recipe.batch_size, THROUGHPUT_BATCH)
    limits.check_inference_memory(recipe.input_size, batch, "a smaller --input-size (or recipe batch_size)")
    limits.check_decoded_images(val_images, recipe.input_size, "--val-images", rows=MAX_ROWS)


def plan_build(arch: str, *, checkpoint: str | Path | None, size: str | None, backbone: str | None,
               input_size: tuple[int, int] | None, fp16: bool, int8: bool, target: str, data: str | None,
               calib: str | None, calib_images: int | None, method: str | None, budget_fp16: float | None,
               budget_int8: float | None, max_fallback: int | None, out: str | Path | None, random_init: bool,
               skip_accuracy: bool, junit: str | Path | None, overrides: dict[str, Any] | None,
               force: bool = False) -> BuildPlan:
    """Resolve and check every build option (see :func:`segexport.pipeline.build`).

    Raises:
        UnknownNameError: an unknown architecture or data set kind.
        ConfigError: an invalid option or override.
        InputError: a missing checkpoint, data or calibration folder, or an output folder that
            cannot be written.
    """
    from segexport.models import get_entry

    get_entry(arch)
    if target not in TARGETS:
        raise ConfigError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    unknown = sorted(set(overrides or {}) - set(RECIPE_OVERRIDES))
    if unknown:
        raise ConfigError(f"unknown override(s) {', '.join(unknown)}; allowed: {', '.join(RECIPE_OVERRIDES)}")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    _check_source(ckpt, random_init, size, backbone)
    if ckpt is not None and ckpt.is_dir():
        check_checkpoint_folder(ckpt, arch)  # before the build folder is touched
    fp16_budget, int8_budget = check_budget(budget_fp16, "--budget-fp16"), check_budget(budget_int8, "--budget-int8")
    recipe = resolve_recipe(
        load_recipe(arch), size=size, backbone=backbone, input_size=input_size, data=data, budget_fp16=fp16_budget,
        budget_int8=int8_budget, budget_int8_cpu=int8_budget, **(overrides or {}),
    )
    int8_targets = tuple(t for t in ("tensorrt", "cpu") if int8 and target in (t, "both"))
    if int8:
        _check_int8(int8_targets, calib, calib_images, method)
    if max_fallback is not None and max_fallback < 0:
        raise ConfigError(f"--max-fallback must be >= 0 (0 turns the sensitivity pass off), got {max_fallback}")
    val_images = _count_val(recipe)
    _check_memory(recipe, val_images)
    _check_calib(calib, recipe)
    build_dir = Path(out) if out is not None else DEFAULT_OUT / arch
    check_writable(build_dir)
    return BuildPlan(
        arch=arch, recipe=recipe, build_dir=build_dir, checkpoint=ckpt, input_size=input_size, size=size,
        backbone=backbone, random_init=random_init, fp16=fp16, int8_targets=int8_targets,
        trt_engines=target != "cpu", calib=calib, calib_images=calib_images, method=method,
        max_fallback=max_fallback, val_images=val_images, skip_accuracy=skip_accuracy or random_init,
        budgets={"fp16": recipe.budget_fp16, "int8.tensorrt": recipe.budget_int8, "int8.cpu": recipe.budget_int8_cpu},
        junit=check_output_file(junit, "--junit", source=JUNIT_SOURCE, force=force), force=force,
    )
