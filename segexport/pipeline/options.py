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
from segexport.precision.targets import TARGETS
from segexport.recipe import Recipe, load_recipe, resolve_recipe
from segexport.runners.registry import BACKENDS
from segexport.verify.render import JUNIT_SOURCE

ALL_TARGETS = "all"
TARGET_ALIASES = {"both": ALL_TARGETS}  # the name of "all" before the target registry
DEFAULT_OUT = Path("builds")
# Recipe keys that callers may override beyond the named options (quick test builds use them).
RECIPE_OVERRIDES = ("epochs", "train_images", "val_images", "batch_size", "lr", "seed")
EXPORT_IMAGES = 32  # export verification images (at most the val images)
SKIP_ACCURACY_IMAGES = 1  # with --skip-accuracy the precision stage judges on one image only
SKIP_ACCURACY_EXPORT_IMAGES = 4  # and export checks parity on four (batch 1 against batch 4 still)
MAX_ROWS = 8  # rows a build verifies at most: the reference and seven variants


@dataclass(frozen=True)
class BuildOptions:
    """What a user asks of a build, as given (``None``: the recipe decides), before any check.

    One object from the CLI (or a library caller) to :func:`plan_build`, which validates it and
    resolves it against the recipe into a :class:`BuildPlan`; each stage then reads only its part
    of the plan.

    Attributes:
        arch: a registered architecture (``segexport list``) or a user's network, ``MODULE:CALLABLE``.
        network: recipe values describing the network and its input (``model_kwargs`` for a
            user's network, ``mean``, ``std``); not with a checkpoint folder, which records them.
        recipe: a recipe TOML to use instead of the packaged one (its ``[model]`` table may name
            a user's network).
        classes: a file of class names, one per line, for an ONNX file source (``arch`` a path
            ending in ``.onnx``; see :mod:`segexport.pipeline.onnx_source`).
        checkpoint: a segexport checkpoint folder or a torchvision/segexport state-dict file
            (None: train on the recipe's data, or ``random_init``).
        size, backbone, input_size, data: recipe overrides (``input_size`` is the export size).
        fp16: also ``onnx-fp16``, ``pytorch-fp16`` (true half arithmetic) and ``trt-fp16``.
        int8: also each target's INT8 rows (``onnx-int8-tensorrt``, ``onnx-int8-cpu``,
            ``openvino-int8``) and ``trt-int8``.
        target: the INT8 targets (``precision.targets``): one, several comma-separated, or ``all``;
            it also picks the FP32 rows (``openvino`` with the openvino target) and whether
            TensorRT engines are built (with the tensorrt target).
        calib, calib_images, method, max_fallback: see ``segexport quantize``.
        budget_fp16, budget_int8: largest mIoU drops in points (default: the recipe's; the INT8
            budget applies to every target).
        out: the build folder (default ``builds/ARCH``).
        random_init: untrained weights (latency work; accuracy is not measured).
        skip_accuracy: latency rows only; the precision stage judges on one image without
            the sensitivity pass, and export checks a few images.
        junit: also write JUnit XML here (one test case per variant).
        triton_repo: also add the build's models to this Triton model repository at the end.
        overrides: further recipe values (``epochs``, ``train_images``, ``val_images``,
            ``batch_size``, ``lr``, ``seed``), e.g. for quick builds.
        force: build into ``out`` even when it holds files segexport did not write or another
            architecture's build (nothing is deleted; see :func:`segexport.ownership.claim_outputs`).
    """

    arch: str
    network: dict[str, Any] | None = None
    classes: str | Path | None = None
    recipe: str | Path | None = None
    checkpoint: str | Path | None = None
    size: str | None = None
    backbone: str | None = None
    input_size: tuple[int, int] | None = None
    fp16: bool = False
    int8: bool = False
    target: str = ALL_TARGETS
    data: str | None = None
    calib: str | None = None
    calib_images: int | None = None
    method: str | None = None
    budget_fp16: float | None = None
    budget_int8: float | None = None
    max_fallback: int | None = None
    out: str | Path | None = None
    random_init: bool = False
    skip_accuracy: bool = False
    junit: str | Path | None = None
    triton_repo: str | Path | None = None
    overrides: dict[str, Any] | None = None
    force: bool = False


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build needs to know, resolved.

    Attributes:
        recipe: the architecture's recipe with every override applied.
        build_dir: where artifacts go (``builds/ARCH`` by default).
        checkpoint: a checkpoint folder or weights file to start from (None: train or random init).
        input_size: the export size asked for (None: the checkpoint's or the recipe's).
        int8_targets: the INT8 targets to make, in registry order (the first calibrates, the others reuse its ranges).
        val_images: how many val images verify and the precision stage use.
        budgets: mIoU budgets in points, by ``fp16`` and ``int8.TARGET`` for every registered target.
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
    targets: tuple[str, ...]
    trt_engines: bool
    calib: str | None
    calib_images: int | None
    method: str | None
    max_fallback: int | None
    val_images: int
    skip_accuracy: bool
    budgets: dict[str, float]
    junit: Path | None
    triton_repo: Path | None = None
    force: bool = False
    onnx_source: Any = None  # an OnnxSource when the build starts from an ONNX file
    task: str = "semantic"  # "instance": padded detections, judged by COCO AP (budgets in AP points)

    @property
    def onnx_backends(self) -> tuple[str, ...]:
        """The CPU backends the FP32 ONNX model runs on: ONNX Runtime, plus every other one a
        chosen target runs on (OpenVINO with the openvino target)."""
        chosen = [b for t in self.targets for b in TARGETS[t].backends]
        return ("onnxruntime", *dict.fromkeys(b for b in chosen if b != "onnxruntime" and ".onnx" in BACKENDS[b].kinds
                                               and BACKENDS[b].device != "gpu"))

    @property
    def data(self) -> str:
        return self.recipe.data

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def export_images(self) -> int:
        """Images export checks ONNX Runtime against PyTorch on (fewer when accuracy is not measured)."""
        return min(SKIP_ACCURACY_EXPORT_IMAGES if self.skip_accuracy else EXPORT_IMAGES, self.val_images)

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


def _check_memory(recipe: Recipe, val_images: int, trains: bool) -> None:
    """A size, batch or val count the machine cannot hold fails before training (see :mod:`segexport.limits`).
    The recipe's batch size counts only when the build trains (not from a checkpoint or --random-init)."""
    from segexport.verify.latency import THROUGHPUT_BATCH

    batch = max(recipe.batch_size, THROUGHPUT_BATCH) if trains else THROUGHPUT_BATCH
    limits.check_inference_memory(recipe.input_size, batch, "a smaller --input-size (or recipe batch_size)")
    limits.check_decoded_images(val_images, recipe.input_size, "--val-images", rows=MAX_ROWS)


def target_choices() -> tuple[str, ...]:
    """What ``--target`` accepts: every registered INT8 target, ``all``, and the old name ``both``."""
    return (*TARGETS, ALL_TARGETS, *TARGET_ALIASES)


def resolve_targets(target: str) -> tuple[str, ...]:
    """``--target``: one registered target, a comma-separated list of them, or ``all`` (``both``),
    in registry order.

    Raises:
        ConfigError: an unknown name.
    """
    names = [TARGET_ALIASES.get(n.strip(), n.strip()) for n in str(target).split(",")]
    unknown = [n for n in names if n != ALL_TARGETS and n not in TARGETS]
    if unknown or not any(names):
        raise ConfigError(f"--target must be {', '.join(TARGETS)} (or several, comma-separated) or {ALL_TARGETS}, "
                          f"got {target!r}")
    return tuple(TARGETS) if ALL_TARGETS in names else tuple(t for t in TARGETS if t in names)


def plan_build(options: BuildOptions) -> BuildPlan:
    """Resolve and check every option of ``options`` (see :func:`segexport.pipeline.build`).

    Raises:
        UnknownNameError: an unknown architecture or data set kind.
        ConfigError: an invalid option or override.
        InputError: a missing checkpoint, data or calibration folder, or an output folder that
            cannot be written.
    """
    from segexport.models import get_entry
    from segexport.models.foreign import folder_name

    o = options
    onnx_src = _check_onnx_source(o)
    arch = onnx_src.arch if onnx_src is not None else o.arch
    task = get_entry(o.arch).task if onnx_src is None else "semantic"
    chosen = resolve_targets(o.target)
    unknown = sorted(set(o.overrides or {}) - set(RECIPE_OVERRIDES))
    if unknown:
        raise ConfigError(f"unknown override(s) {', '.join(unknown)}; allowed: {', '.join(RECIPE_OVERRIDES)}")
    ckpt = Path(o.checkpoint) if o.checkpoint is not None else None
    _check_source(ckpt, o.random_init, o.size, o.backbone)
    if ckpt is not None and ckpt.is_dir():
        if o.network:
            raise ConfigError(f"{', '.join('--' + k.replace('_', '-') for k in o.network)} apply to training, "
                              f"--random-init or a weights file, not to the checkpoint folder {ckpt} (it records them)")
        check_checkpoint_folder(ckpt, o.arch)  # before the build folder is touched
    fp16_budget, int8_budget = check_budget(o.budget_fp16, "--budget-fp16"), check_budget(o.budget_int8, "--budget-int8")
    network = dict(o.network or {})
    if onnx_src is not None:  # the file's (or the flags') normalisation, its size
        network.update(mean=onnx_src.mean, std=onnx_src.std)
    recipe = resolve_recipe(
        load_recipe(arch, o.recipe), size=o.size, backbone=o.backbone,
        input_size=onnx_src.input_size if onnx_src is not None else o.input_size, data=o.data,
        budget_fp16=fp16_budget, budget_int8=int8_budget, budget_int8_cpu=int8_budget, **network,
        **(o.overrides or {}),
    )
    int8_targets = chosen if o.int8 else ()
    if o.int8:
        _check_int8(int8_targets, o.calib, o.calib_images, o.method)
    if o.max_fallback is not None and o.max_fallback < 0:
        raise ConfigError(f"--max-fallback must be >= 0 (0 turns the sensitivity pass off), got {o.max_fallback}")
    val_images = _count_val(recipe)
    _check_memory(recipe, val_images, trains=ckpt is None and not o.random_init and onnx_src is None)
    _check_calib(o.calib, recipe)
    default_dir = DEFAULT_OUT / (f"{folder_name(arch)}-onnx" if onnx_src is not None else folder_name(arch))
    build_dir = Path(o.out) if o.out is not None else default_dir
    if onnx_src is not None and onnx_src.path.resolve().parent == build_dir.resolve():
        raise ConfigError(f"{onnx_src.path} lies in the build folder {build_dir}, where the build writes its own "
                          "model files; pass --out with another folder")
    check_writable(build_dir)
    triton_repo = _check_triton_repo(o.triton_repo, build_dir)
    return BuildPlan(
        arch=arch, onnx_source=onnx_src, recipe=recipe, build_dir=build_dir, checkpoint=ckpt, input_size=o.input_size, size=o.size,
        backbone=o.backbone, random_init=o.random_init, fp16=o.fp16, int8_targets=int8_targets, targets=chosen,
        trt_engines=any("tensorrt" in TARGETS[t].backends for t in chosen), calib=o.calib,
        calib_images=o.calib_images, method=o.method, max_fallback=o.max_fallback, val_images=val_images,
        skip_accuracy=o.skip_accuracy or o.random_init,
        budgets={"fp16": recipe.budget_fp16, **{f"int8.{t.name}": getattr(recipe, t.budget_key) for t in TARGETS.values()}},
        junit=check_output_file(o.junit, "--junit", source=JUNIT_SOURCE, force=o.force), triton_repo=triton_repo,
        force=o.force, task=task,
    )


def _check_onnx_source(o: BuildOptions) -> Any:
    """The checked ONNX source when ``o.arch`` names an ``.onnx`` file, else None (and then no
    ``--classes``).

    Raises:
        ConfigError: options that do not apply to an ONNX file, or what neither the file nor a
            flag says.
        InputError: a missing or unusable file (see :mod:`segexport.pipeline.onnx_source`).
    """
    from segexport.pipeline.onnx_source import check_onnx_source, is_onnx_source

    if not is_onnx_source(o.arch):
        if o.classes is not None:
            raise ConfigError("--classes applies to an ONNX file source; a checkpoint or a data set names its classes")
        return None
    network = o.network or {}
    given = [flag for flag, value in (("--checkpoint", o.checkpoint), ("--random-init", o.random_init),
                                      ("--size", o.size), ("--backbone", o.backbone),
                                      ("--model-kwargs", network.get("model_kwargs"))) if value]
    if given:
        raise ConfigError(f"{', '.join(given)} do not apply to an ONNX file source ({o.arch}); drop them")
    from segexport.data import open_dataset

    data = o.data or Recipe(arch="onnx").data
    classes = tuple(open_dataset(data, "val", size=(32, 32), seed=0, length=1).classes)
    return check_onnx_source(o.arch, classes_file=o.classes, mean=network.get("mean"), std=network.get("std"),
                             input_size=o.input_size, data_classes=classes)


def _check_triton_repo(repo: str | Path | None, build_dir: Path) -> Path | None:
    """``--triton-repo``: a folder that can be written and is not inside the build folder.

    Raises:
        InputError: a file, an unwritable folder, or the build folder itself (or inside it).
    """
    if repo is None:
        return None
    path = Path(repo)
    inside = path.resolve() == build_dir.resolve() or build_dir.resolve() in path.resolve().parents
    if inside:
        raise InputError(f"--triton-repo {path}: inside the build folder {build_dir}; pass a folder outside it")
    check_writable(path, "--triton-repo")
    return path
