"""Training of the instance networks (Mask R-CNN, PANet): the same command, recipe keys and
checkpoint as semantic training, with the papers' losses (:mod:`segexport.nn.rcnn_targets`),
horizontal flips as augmentation, and COCO mask/box AP on the val split after every epoch.

Evaluation runs the network's exported form (``forward``: padded detections) and pastes the
masks on the host (:mod:`segexport.instance_outputs`), so the AP reported here is the AP the
verification of an export measures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from segexport.data import Preprocess, normalize_batch
from segexport.data.instances import Instances, semantic_from_instances
from segexport.data.source import SegmentationSource
from segexport.errors import ConfigError, InputError
from segexport.instance_metrics import instance_ap
from segexport.instance_outputs import detections_from_outputs, render_semantic
from segexport.metrics import confusion_matrix, metrics_from_confusion
from segexport.models.instance_shell import InstanceSegmentationModel
from segexport.nn.rcnn_targets import ImageTargets
from segexport.progress import progress_bar
from segexport.train import EVAL_BATCH, TrainConfig, TrainResult, lr_factor


def resized_instances(instances: Instances, preprocess: Preprocess) -> Instances:
    """``instances`` brought to ``preprocess.size`` as the image is (nearest-neighbour masks, in
    ``resize`` or ``pad`` mode); boxes are the new masks' tight boxes, vanished objects dropped."""
    masks = np.stack([preprocess.resize_mask(m.astype(np.uint8)) == 1 for m in instances.masks]) if len(instances) \
        else np.zeros((0, *preprocess.size), dtype=bool)
    kept = masks.reshape(len(masks), -1).any(axis=1)
    return Instances.from_masks(instances.classes[kept], masks[kept], instances.crowd[kept])


def load_instance_set(source: SegmentationSource, preprocess: Preprocess, *, progress: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, list[Instances]]:
    """``(images [N, H, W, 3] uint8, semantic masks [N, H, W] uint8, instances)`` of ``source`` at
    ``preprocess.size`` (resized or padded as its ``resize`` mode says, labels with the image).

    Raises:
        InputError: a sample without instance labels.
    """
    count = len(source)
    size = tuple(preprocess.size)
    images = np.empty((count, *size, 3), dtype=np.uint8)
    masks = np.empty((count, *size), dtype=np.uint8)
    found: list[Instances] = []
    with progress_bar(progress) as bar:
        task = bar.add_task(f"load {source.name}", total=count, info="")
        for i in range(count):
            sample = source[i]
            if sample.instances is None:
                raise InputError(f"{sample.name} has no instance labels; instance networks train on "
                                 "`synthetic` or `coco:PATH` data")
            semantic = sample.mask if sample.mask is not None else semantic_from_instances(
                sample.instances, *sample.image.shape[:2])
            if sample.image.shape[:2] == size:
                images[i], masks[i] = sample.image, semantic
                found.append(sample.instances)
            else:
                images[i], masks[i] = preprocess.resize_image(sample.image), preprocess.resize_mask(semantic)
                found.append(resized_instances(sample.instances, preprocess))
            bar.advance(task)
    return images, masks, found


def image_targets(instances: Instances, flip: bool) -> ImageTargets:
    """Training targets of one image (crowd regions left out), mirrored when ``flip``."""
    keep = ~instances.crowd
    boxes = torch.from_numpy(instances.boxes[keep]).float()
    masks = torch.from_numpy(instances.masks[keep]).float()
    if flip:
        width = masks.shape[-1]
        boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], -1)
        masks = masks.flip(-1)
    return ImageTargets(boxes, torch.from_numpy(instances.classes[keep]).long(), masks)


@torch.inference_mode()
def predict_instances(model: InstanceSegmentationModel, images: np.ndarray, preprocess: Preprocess,
                      batch_size: int = EVAL_BATCH) -> list[np.ndarray]:
    """The network's five padded outputs for uint8 images ``[N, H, W, 3]``, batch by batch, joined."""
    model.eval()
    parts: list[list[np.ndarray]] = []
    for s in range(0, len(images), batch_size):
        outs = model(normalize_batch(torch.from_numpy(images[s : s + batch_size]), preprocess))
        parts.append([o.numpy() for o in outs])
    return [np.concatenate(column) for column in zip(*parts)]


def paint_and_score(outputs: list[np.ndarray], truth: list[Instances], size: tuple[int, int],
                    num_classes: int) -> tuple[np.ndarray, dict[str, float]]:
    """The ``[N, H, W]`` class maps padded outputs paint, and their COCO mask/box AP against ``truth``."""
    height, width = size
    found = detections_from_outputs(outputs, height, width)
    painted = np.stack([render_semantic(d, height, width) for d in found])
    return painted, instance_ap(truth, found, [(height, width)] * len(found), num_classes)


def evaluate_instances(outputs: list[np.ndarray], masks: np.ndarray, truth: list[Instances],
                       classes: tuple[str, ...]) -> dict[str, Any]:
    """COCO mask/box AP of padded outputs, and the mIoU of the semantic map they paint."""
    painted, ap = paint_and_score(outputs, truth, masks.shape[1:], len(classes))
    return {**ap, **metrics_from_confusion(confusion_matrix(masks, painted, len(classes))).to_dict(classes)}


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """torch's deterministic algorithms for the duration (then the caller's setting again).

    RoIAlign's gathers and the heads' ``index_put`` accumulate in their backward, and without
    this two trainings of the tiny Mask R-CNN (256 images, one epoch) differed by up to 0.31 in
    a weight when another process loaded the CPU during the second (which kernel adds in thread
    order was not isolated); in deterministic mode by 0, at no measurable cost (BENCHMARKS.md).
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def train_instance_model(model: InstanceSegmentationModel, train: tuple[np.ndarray, list[Instances]],
                         val: tuple[np.ndarray, np.ndarray, list[Instances]], preprocess: Preprocess,
                         cfg: TrainConfig, classes: tuple[str, ...], *, progress: bool = True) -> TrainResult:
    """Train ``model`` in place (one process, CPU); val AP after every epoch.

    Raises:
        ConfigError: bf16 asked for (the RPN's matching needs FP32 boxes).
    """
    if cfg.bf16:
        raise ConfigError("instance networks train in FP32; drop --bf16")
    gen = torch.Generator().manual_seed(cfg.seed)
    images, truth = torch.from_numpy(train[0]), train[1]
    per_epoch = max(1, len(images) // cfg.batch_size)
    total = per_epoch * cfg.epochs
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(total, per_epoch * cfg.warmup_epochs, cfg.poly_power))
    history: list[dict[str, float]] = []
    metrics: dict[str, Any] = {}
    start = time.perf_counter()
    with progress_bar(progress) as bar, deterministic_algorithms():
        task = bar.add_task("train", total=total, info="")
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(len(images), generator=gen)
            running = 0.0
            for step in range(per_epoch):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                flips = torch.rand(len(idx), generator=gen) < 0.5
                x = normalize_batch(images[idx], preprocess)
                x = torch.where(flips[:, None, None, None], x.flip(-1), x)
                targets = [image_targets(truth[int(i)], bool(f)) for i, f in zip(idx, flips)]
                losses = model.forward_train(x, targets, gen)
                loss = sum(losses.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.item()
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {loss.item():.3f}")
            history.append({"epoch": epoch + 1, "loss": running / per_epoch})
            if cfg.evaluates(epoch):
                metrics = evaluate_instances(predict_instances(model, val[0], preprocess), val[1], val[2], classes)
                history[-1].update(val_miou=metrics["miou"], val_mask_ap50=metrics["mask_ap50"],
                                   val_mask_ap=metrics["mask_ap"])
                bar.update(task, info=f"epoch {epoch + 1}/{cfg.epochs} val mask AP50 {metrics['mask_ap50']:.3f}")
    return TrainResult(metrics=metrics, history=history, seconds=time.perf_counter() - start, bf16=False)


def train_from_sources(model: InstanceSegmentationModel, train_src: SegmentationSource, val_src: SegmentationSource,
                       preprocess: Preprocess, cfg: TrainConfig, *, progress: bool = True) -> tuple[TrainResult, int]:
    """Load both splits at the input size and train; (result, training images)."""
    images, _, truth = load_instance_set(train_src, preprocess, progress=progress)
    val = load_instance_set(val_src, preprocess, progress=progress)
    result = train_instance_model(model, (images, truth), val, preprocess, cfg, tuple(train_src.classes),
                                  progress=progress)
    return result, len(images)
