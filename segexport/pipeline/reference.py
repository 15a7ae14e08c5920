"""The obtain stage: the PyTorch reference checkpoint folder, ``BUILD_DIR/reference``.

Four ways to get it, in this order of precedence:

- ``--checkpoint DIR``: a segexport checkpoint folder, copied in (it must be of ``ARCH``);
- ``--checkpoint FILE``: a torchvision or segexport state-dict file, loaded into ``ARCH`` and
  saved as a checkpoint folder;
- ``--random-init``: the recipe's model with seeded untrained weights (latency work only);
- otherwise: trained on the recipe's data (``segexport train``'s training, deterministic by seed).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segexport.checkpoint import (
    METRICS_JSON,
    MODEL_JSON,
    WEIGHTS,
    ModelConfig,
    load_checkpoint,
    save_checkpoint,
)
from segexport.data.preprocess import recipe_preprocess
from segexport.fsutil import atomic_dir
from segexport.hashing import file_sha256
from segexport.models.foreign import is_module_spec
from segexport.pipeline.cache import package_versions, spec_fingerprint
from segexport.pipeline.options import BuildPlan, check_checkpoint_folder

REFERENCE_DIR = "reference"
# model.json's training block records wall time; everything else in it decides the model.
_VOLATILE_CONFIG_KEYS = ("training", "segexport_version")


@dataclass(frozen=True)
class Reference:
    """The reference checkpoint folder and what the later stages need from it."""

    path: Path
    config: ModelConfig

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.config.preprocess.size)  # type: ignore[return-value]

    def files(self) -> list[Path]:
        return [self.path / WEIGHTS, self.path / MODEL_JSON, self.path / METRICS_JSON]

    def digest(self) -> dict[str, Any]:
        """What the export stage depends on: the weights' hash and the model description."""
        config = {k: v for k, v in self.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        return {"weights_sha256": file_sha256(self.path / WEIGHTS), "config": config}


def read_reference(path: Path) -> Reference:
    """The reference folder's ``model.json`` (its weights are not loaded)."""
    meta = path / MODEL_JSON
    return Reference(path, ModelConfig.from_dict(json.loads(meta.read_text()), str(meta)))


def describe_source(plan: BuildPlan) -> str:
    """One phrase for the progress line: where the reference comes from."""
    if plan.checkpoint is not None:
        what = "copying checkpoint folder" if plan.checkpoint.is_dir() else "loading weights file"
        return f"{what} {plan.checkpoint}"
    r = plan.recipe
    what = f"{plan.arch} ({r.size}{', ' + r.backbone if r.backbone else ''}, {r.input_size[0]}x{r.input_size[1]})"
    if plan.random_init:
        return f"random weights for {what}, seed {r.seed}"
    return f"training {what} on {r.data}, {r.epochs} epochs"


# Recipe keys that never change the weights: precision budgets and the host-side dense CRF.
_NOT_TRAINING = ("budget", "crf")
_MODEL_KEYS = ("arch", "size", "backbone", "output_stride", "upsampling")


def _training_keys(recipe_dict: dict[str, Any]) -> dict[str, Any]:
    """The recipe without the keys that cannot change the trained weights (unknown keys stay in:
    retraining for nothing is slow, reusing stale weights would be wrong)."""
    return {k: v for k, v in recipe_dict.items() if not k.startswith(_NOT_TRAINING)}


def reference_inputs(plan: BuildPlan) -> dict[str, Any]:
    """The obtain stage's key material."""
    if plan.checkpoint is not None and plan.checkpoint.is_dir():
        files = {p.name: file_sha256(p) for p in sorted(plan.checkpoint.iterdir()) if p.is_file()}
        return {"mode": "checkpoint-folder", "arch": plan.arch, "files": files}
    versions = package_versions()
    if plan.checkpoint is not None:
        return {"mode": "weights-file", "arch": plan.arch, "sha256": file_sha256(plan.checkpoint), "size": plan.size,
                "backbone": plan.backbone, "input_size": list(plan.recipe.input_size),
                "data": plan.data, "versions": versions}
    mode = "random-init" if plan.random_init else "train"
    recipe = _training_keys(plan.recipe.to_dict())
    if plan.random_init:  # training options do not matter for untrained weights
        recipe = {k: recipe[k] for k in (*_MODEL_KEYS, "input_size", "seed", "data")}
    return {"mode": mode, "recipe": recipe, "data": spec_fingerprint(plan.data), "versions": versions}


def _copy_folder(src: Path, dst: Path, arch: str) -> None:
    """Copy a checkpoint folder of ``arch`` to ``dst`` after checking that it loads.

    Raises:
        CheckpointError: a checkpoint of another architecture, or one that does not load.
    """
    check_checkpoint_folder(src, arch)
    load_checkpoint(src)  # corrupt or mismatched weights fail here, in one line
    if src.resolve() == dst.resolve():
        return
    with atomic_dir(dst) as tmp:
        for name in (WEIGHTS, MODEL_JSON, METRICS_JSON):
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
        if not (tmp / METRICS_JSON).exists():
            (tmp / METRICS_JSON).write_text("{}\n")


def _classes(plan: BuildPlan) -> tuple[str, ...]:
    from segexport.data import open_dataset

    return tuple(open_dataset(plan.data, "val", size=tuple(plan.recipe.input_size), seed=plan.seed, length=1).classes)


def _from_weights_file(plan: BuildPlan, weights: Path, dst: Path) -> None:
    """Load a state-dict file into ``ARCH`` and save it as the reference checkpoint folder."""
    from segexport.pipeline.sources import _class_names
    from segexport.weights import model_from_weights_file, training_heads

    if is_module_spec(plan.arch):
        _foreign_from_weights_file(plan, weights, dst)
        return
    size = plan.size or "paper"  # as `segexport export ARCH --checkpoint FILE`: published weights are paper size
    model = model_from_weights_file(plan.arch, weights, size=size, backbone=plan.backbone)
    data_classes = _classes(plan)
    counted = _class_names(model)
    classes = data_classes if len(data_classes) == len(counted) else counted
    args: dict[str, Any] = {"size": size, "backbone": plan.backbone, "num_classes": len(classes)}
    args.update(training_heads(plan.arch, model.state_dict()))
    config = ModelConfig(
        arch=plan.arch, build_args={k: v for k, v in args.items() if v is not None}, classes=classes,
        preprocess=recipe_preprocess(plan.recipe),
        training={"source": f"weights:{weights}", "sha256": file_sha256(weights)},
    )
    save_checkpoint(dst, model, config, {})


def _foreign_from_weights_file(plan: BuildPlan, weights: Path, dst: Path) -> None:
    """A user's network (``MODULE:CALLABLE``) with its own state-dict file, saved as the reference
    checkpoint folder; it must predict the data set's classes."""
    from segexport.errors import ConfigError
    from segexport.models import build_model
    from segexport.pipeline.sources import _class_names
    from segexport.weights import load_foreign_weights

    classes = _classes(plan)
    args = {k: v for k, v in plan.recipe.model_args(len(classes)).items() if v is not None}
    model = build_model(plan.arch, **args)
    load_foreign_weights(model, weights)
    outputs = len(_class_names(model))
    if outputs != len(classes):
        raise ConfigError(f"{plan.arch} with {weights.name} predicts {outputs} classes but the data set {plan.data} "
                          f"has {len(classes)}; pass its class count through --model-kwargs or use matching data")
    config = ModelConfig(
        arch=plan.arch, build_args=args, classes=classes, preprocess=recipe_preprocess(plan.recipe),
        training={"source": f"weights:{weights}", "sha256": file_sha256(weights)},
    )
    save_checkpoint(dst, model, config, {})


def _random_init(plan: BuildPlan, dst: Path) -> None:
    """Save the recipe's model with seeded untrained weights as the reference checkpoint folder."""
    from segexport.models import build_model, check_input_size

    classes = _classes(plan)
    args = {k: v for k, v in plan.recipe.model_args(len(classes)).items() if v is not None}
    with torch.random.fork_rng():  # seeded init without resetting the caller's generator
        torch.manual_seed(plan.seed)
        model = build_model(plan.arch, **args).eval()
    check_input_size(model, *plan.recipe.input_size)
    config = ModelConfig(
        arch=plan.arch, build_args=args, classes=classes, preprocess=recipe_preprocess(plan.recipe),
        training={"random_init": True, "seed": plan.seed},
    )
    save_checkpoint(dst, model, config, {})


def make_reference(plan: BuildPlan, *, progress: bool) -> list[Path]:
    """Write ``BUILD_DIR/reference`` the way ``plan`` says; return its files.

    Raises:
        CheckpointError: a checkpoint of another architecture or one that does not load.
        InputError, ConfigError: bad data or options for training.
    """
    dst = plan.build_dir / REFERENCE_DIR
    if plan.checkpoint is not None and plan.checkpoint.is_dir():
        _copy_folder(plan.checkpoint, dst, plan.arch)
    elif plan.checkpoint is not None:
        _from_weights_file(plan, plan.checkpoint, dst)
    elif plan.random_init:
        _random_init(plan, dst)
    else:
        from segexport.train_run import train_checkpoint

        train_checkpoint(plan.recipe, dst, progress=progress, force=True)  # the build claimed its folder
    return read_reference(dst).files()
