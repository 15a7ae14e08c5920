"""One training run: a recipe in, a checkpoint folder out.

Reads the recipe's data, builds its model (an ImageNet backbone file first, on request), trains
it with the semantic loop (:mod:`segexport.train`) or the instance one
(:mod:`segexport.train_instance`), and writes the folder with what ``model.json`` records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segexport.checkpoint import CHECKPOINT_FILES, ModelConfig, save_checkpoint
from segexport.data import describe_spec, load_arrays, open_dataset
from segexport.data.preprocess import recipe_preprocess
from segexport.distributed import DistContext, barrier, current_context, shard_source
from segexport.errors import ConfigError
from segexport.hashing import file_sha256
from segexport.models import SegmentationModel, build_model, check_input_size
from segexport.ownership import claim_outputs
from segexport.recipe import Recipe
from segexport.train import EVAL_BATCH, TrainConfig, check_sync_bn, train_model
from segexport.train_instance import train_from_sources
from segexport.weights import load_backbone_weights


def _load_backbone_checkpoint(model: SegmentationModel, path: str | Path | None) -> dict[str, Any]:
    """Load ``path`` into the backbone; what ``model.json`` records about it (empty without one)."""
    if path is None:
        return {}
    load_backbone_weights(model, path)
    return {"backbone_checkpoint": {"file": Path(path).name, "sha256": file_sha256(path)}}


def _distributed_record(cfg: TrainConfig, ctx: DistContext | None) -> dict[str, Any]:
    """What ``model.json`` records about a distributed run (nothing for a single process)."""
    if ctx is None:
        return {}
    return {"distributed": {
        "world_size": ctx.world_size, "backend": ctx.backend, "device": ctx.device.type,
        "global_batch": cfg.batch_size * ctx.world_size, "sync_bn": cfg.sync_bn,
    }}


def train_checkpoint(
    recipe: Recipe, out_dir: str | Path, *, progress: bool = True, backbone_checkpoint: str | Path | None = None,
    force: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Build the recipe's model, train it on the recipe's data, write a checkpoint folder.

    ``backbone_checkpoint`` (an ImageNet weight file, see
    :func:`segexport.weights.load_backbone_weights`) initialises the backbone before training;
    its name and SHA-256 are recorded in ``model.json``.

    ``out_dir`` is checked before any work (:func:`segexport.ownership.claim_outputs`): a folder
    holding files segexport did not write, or another architecture's checkpoint, is refused
    unless ``force``; the new checkpoint replaces an old one atomically, keeping other files.

    In a distributed run every process trains (see :func:`train_model`) and evaluates its shard
    of the val split; rank 0 alone shows progress and writes the folder, the others wait for it.

    Returns:
        The checkpoint folder and its metrics (``miou``, ``pixel_acc``, ``per_class_iou``).

    Raises:
        SegexportError subclasses for bad data, options or output folders.
    """
    ctx = current_context()
    cfg = TrainConfig.from_recipe(recipe)
    check_sync_bn(cfg, ctx)  # before any data is read
    main = ctx is None or ctx.is_main
    if main:
        claim_outputs(out_dir, CHECKPOINT_FILES, owner=f"a checkpoint of {recipe.arch}", force=force)
    size = tuple(recipe.input_size)
    train_src = open_dataset(recipe.data, "train", size=size, seed=recipe.seed, length=recipe.train_images,
                             length_option="--train-images")
    val_src = open_dataset(recipe.data, "val", size=size, seed=recipe.seed, length=recipe.val_images,
                           length_option="--val-images")
    preprocess = recipe_preprocess(recipe)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.arch, **recipe.model_args(len(train_src.classes)))
    check_input_size(model, *size)
    pretrained = _load_backbone_checkpoint(model, backbone_checkpoint)
    if getattr(model, "task", "semantic") == "instance":
        if ctx is not None:
            raise ConfigError("instance networks train in one process; run `segexport train` without torchrun")
        result, train_count = train_from_sources(model, train_src, val_src, preprocess, cfg, progress=progress)
    else:
        train = load_arrays(train_src, preprocess, progress=progress and main)
        val = load_arrays(shard_source(val_src, block=EVAL_BATCH), preprocess, progress=progress and main)
        result = train_model(model, train, val, preprocess, cfg, tuple(train_src.classes), progress=progress)
        train_count = len(train[0])
    config = ModelConfig(
        arch=recipe.arch,
        build_args={k: v for k, v in recipe.model_args(len(train_src.classes)).items() if v is not None},
        classes=tuple(train_src.classes),
        preprocess=preprocess,
        training={
            "recipe": recipe.to_dict(),
            "data": describe_spec(recipe.data),
            "train_images": train_count,
            "val_images": len(val_src),
            "seconds": round(result.seconds, 1),
            "history": result.history,
            "torch_version": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "step_precision": "bf16-autocast" if result.bf16 else "fp32",
            **pretrained,
            **_distributed_record(cfg, ctx),
        },
    )
    path = save_checkpoint(out_dir, model.eval(), config, result.metrics) if main else Path(out_dir)
    barrier()  # the others return once the folder exists
    return path, result.metrics
