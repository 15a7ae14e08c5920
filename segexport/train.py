"""Training: poly learning rate, cross-entropy with ignore index, flip and scale-crop
augmentation, seeded, val mIoU each epoch, a rich progress bar.

Under ``torchrun`` (see :mod:`segexport.distributed`) the same loop trains with
DistributedDataParallel: every process draws the same permutation and the same augmentation
for the whole global batch (``batch_size`` x processes) and trains on its own slice of it,
so one process with ``batch_size`` reproduces exactly what it did before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from segexport.data import (
    IGNORE_INDEX,
    Preprocess,
    normalize_batch,
)
from segexport.data.augment import augment, draw_jitter
from segexport.distributed import (
    DistContext,
    all_reduce_confusion,
    all_reduce_mean,
    current_context,
)
from segexport.errors import ConfigError
from segexport.metrics import confusion_matrix, metrics_from_confusion
from segexport.models import SegmentationModel
from segexport.progress import progress_bar
from segexport.recipe import Recipe

EVAL_BATCH = 16
"""Images per forward pass in evaluation; distributed evaluation shards align to it, so every
process runs the same batches a single process would (bit-identical predictions)."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-4
    aux_weight: float = 0.4
    scale_min: float = 0.75
    scale_max: float = 1.5
    seed: int = 0
    poly_power: float = 0.9
    bf16: bool | None = None  # bfloat16 autocast for training steps; None: where the device has bf16 kernels
    sync_bn: bool = False  # SyncBatchNorm across the processes of a distributed run (CUDA only)
    class_balance: str | None = None  # "median_frequency": per-class loss weights from the training masks
    se_weight: float = 0.2  # the class-presence (SE) loss of networks that have that head
    warmup_epochs: int = 0  # the learning rate rises linearly over these first epochs
    eval_every: int = 1  # val metrics after every Nth epoch and the last

    def evaluates(self, epoch: int) -> bool:
        """Whether the val split is scored after ``epoch`` (0-based): every ``eval_every``-th and the last."""
        return (epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs

    @classmethod
    def from_recipe(cls, r: Recipe) -> TrainConfig:
        return cls(
            r.epochs, r.batch_size, r.lr, r.weight_decay, r.aux_weight, r.scale_min, r.scale_max, r.seed,
            bf16=r.bf16, sync_bn=r.sync_bn, class_balance=r.class_balance, se_weight=r.se_weight,
            warmup_epochs=r.warmup_epochs, eval_every=r.eval_every,
        )

    def use_bf16(self, device: torch.device | None = None) -> bool:
        """Whether training steps on ``device`` (default CPU) run under bfloat16 autocast (evaluation runs in FP32)."""
        if self.bf16 is not None:
            return self.bf16
        if device is not None and device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        # oneDNN's bf16 kernels (AVX512-BF16/AMX) make CPU training 1.2-2x faster here; on CPUs
        # without them bf16 would be emulated and slower, so "auto" means FP32 there.
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def median_frequency_weights(masks: np.ndarray, num_classes: int) -> torch.Tensor:
    """SegNet's median frequency balancing (Eigen and Fergus 2015): the weight of class c is
    median(freq) / freq(c), where freq(c) is c's pixel count divided by the pixel count of the
    images in which c appears. Classes absent from ``masks`` get weight 1 (they never occur).

    Args:
        masks: ``N x H x W`` class indices (255 = ignore).
        num_classes: number of classes.
    """
    flat = masks.reshape(len(masks), -1)
    counts = np.stack([np.bincount(m[m != IGNORE_INDEX], minlength=num_classes)[:num_classes] for m in flat])
    labelled = counts.sum(1, keepdims=True)
    present = counts > 0
    pixels = counts.sum(0).astype(np.float64)
    seen = (labelled * present).sum(0).astype(np.float64)
    weights = np.ones(num_classes)
    known = pixels > 0
    if known.any():
        freq = pixels[known] / seen[known]
        weights[known] = np.median(freq) / freq
    return torch.tensor(weights, dtype=torch.float32)


@dataclass
class TrainResult:
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    bf16: bool = False


@torch.inference_mode()
def predict_labels(
    model: SegmentationModel, images: np.ndarray, preprocess: Preprocess, batch_size: int = EVAL_BATCH
) -> np.ndarray:
    """Argmax labels ``[N,H,W]`` (uint8) for uint8 images ``[N,H,W,3]`` at the preprocessing size,
    computed on the device the model is on."""
    model.eval()
    device = next(model.parameters()).device
    out = np.empty(images.shape[:3], dtype=np.uint8)
    for s in range(0, len(images), batch_size):
        x = normalize_batch(torch.from_numpy(images[s : s + batch_size]).to(device), preprocess)
        out[s : s + batch_size] = model(x).argmax(1).to(torch.uint8).cpu().numpy()
    return out


def evaluate_model(
    model: SegmentationModel, images: np.ndarray, masks: np.ndarray, preprocess: Preprocess, num_classes: int
) -> np.ndarray:
    """Confusion matrix of the model's predictions on preprocessed-size images and masks (this process's only)."""
    return confusion_matrix(masks, predict_labels(model, images, preprocess), num_classes)


def lr_factor(total: int, warmup: int, power: float) -> Callable[[int], float]:
    """The learning rate's factor at step ``it``: a linear warm-up over the first ``warmup`` steps
    (none when 0), times the poly decay ``(1 - it / total) ** power``."""
    return lambda it: min(1.0, (it + 1) / warmup if warmup else 1.0) * (1 - it / total) ** power


def present_classes(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[N, num_classes]`` float targets: 1 where the class occurs in the image's mask
    (ignored pixels count for none), the target of EncNet's SE-loss."""
    n = masks.shape[0]
    labels = masks.reshape(n, -1).long()
    valid = labels != IGNORE_INDEX
    counts = torch.zeros(n, num_classes + 1, dtype=torch.long, device=masks.device)
    counts.scatter_add_(1, torch.where(valid, labels, num_classes), valid.long())
    return (counts[:, :num_classes] > 0).float()


class _TrainForward(nn.Module):
    """``model.forward_train`` as a module's ``forward``: DistributedDataParallel syncs gradients
    only for what runs through its own ``forward``."""

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.forward_train(x)


def check_sync_bn(cfg: TrainConfig, ctx: DistContext | None) -> None:
    """Raises:
    ConfigError: SyncBatchNorm asked for in a distributed run on CPUs (it has GPU kernels only).
    """
    if cfg.sync_bn and ctx is not None and ctx.device.type != "cuda":
        raise ConfigError(
            "recipe key sync_bn = true needs CUDA GPUs (SyncBatchNorm has no CPU kernels); "
            "set sync_bn = false for a CPU (gloo) run"
        )


def _training_forward(
    model: SegmentationModel, cfg: TrainConfig, ctx: DistContext | None
) -> Callable[[torch.Tensor], tuple[torch.Tensor | None, ...]]:
    """``model.forward_train``, through DistributedDataParallel (and SyncBatchNorm if asked) when distributed."""
    if ctx is None:
        return model.forward_train  # a single process: BatchNorm already sees the whole batch
    check_sync_bn(cfg, ctx)
    if cfg.sync_bn:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BatchNorm children in place
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(_TrainForward(model), device_ids=device_ids)


def steps_per_epoch(count: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps per epoch: whole global batches (``batch_size`` x processes).

    The ragged last batch is dropped (BatchNorm); a single process with fewer images than
    one batch takes one short step.

    Raises:
        ConfigError: a distributed run with fewer images than one global batch.
    """
    global_batch = batch_size * world_size
    if count >= global_batch or world_size == 1:
        return max(1, count // global_batch)
    raise ConfigError(
        f"{count} training images cannot fill one global batch of {batch_size} x {world_size} processes; "
        "lower --batch-size or use fewer processes"
    )


@dataclass
class _Stepper:
    """One optimizer step on this process's slice of a global batch."""

    forward: Callable[[torch.Tensor], tuple[torch.Tensor | None, ...]]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    cfg: TrainConfig
    preprocess: Preprocess
    device: torch.device
    bf16: bool
    rank: int = 0
    weight: torch.Tensor | None = None  # per-class loss weights (class_balance)

    def step(self, images: torch.Tensor, masks: torch.Tensor, batch: torch.Tensor, gen: torch.Generator) -> float:
        """Train on ``batch`` (indices of the global batch, in order); the loss of this process's slice."""
        cfg = self.cfg
        jitter = draw_jitter(len(batch), tuple(masks.shape[1:]), (cfg.scale_min, cfg.scale_max), gen)
        mine = slice(self.rank * cfg.batch_size, (self.rank + 1) * cfg.batch_size)
        idx = batch[mine]
        x = normalize_batch(images[idx].to(self.device), self.preprocess)
        x, y = augment(x, masks[idx].to(self.device), jitter[mine])
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out, aux, *presence = self.forward(x)
        loss = F.cross_entropy(out.float(), y, weight=self.weight, ignore_index=IGNORE_INDEX)
        if aux is not None:
            loss = loss + cfg.aux_weight * F.cross_entropy(aux.float(), y, weight=self.weight, ignore_index=IGNORE_INDEX)
        if presence and presence[0] is not None:  # a class-presence head (EncNet's SE-loss)
            loss = loss + cfg.se_weight * F.binary_cross_entropy_with_logits(
                presence[0].float(), present_classes(y, presence[0].shape[1]))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # DistributedDataParallel averages the gradients over the processes here
        self.opt.step()
        self.sched.step()
        return loss.item()


def train_model(
    model: SegmentationModel,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    preprocess: Preprocess,
    cfg: TrainConfig,
    classes: tuple[str, ...],
    *,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place on uint8 arrays; evaluate on ``val`` after every epoch.

    In a distributed run (an initialised process group, see :mod:`segexport.distributed`)
    every process passes the whole ``train`` arrays and its own shard of ``val``; the model
    trains on the process's device (``cuda:LOCAL_RANK`` with nccl) under
    DistributedDataParallel, val confusion matrices are summed over the processes, and only
    rank 0 shows progress. The model is on the CPU when this returns.

    Returns:
        The final epoch's val metrics, the per-epoch history and the wall time.

    Raises:
        ConfigError: sync_bn on CPUs, or too few images for one global batch (distributed runs).
    """
    ctx = current_context()
    rank, world = (ctx.rank, ctx.world_size) if ctx else (0, 1)
    device = ctx.device if ctx else torch.device("cpu")
    gen = torch.Generator().manual_seed(cfg.seed)
    images, masks = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    per_epoch = steps_per_epoch(len(images), cfg.batch_size, world)
    total = per_epoch * cfg.epochs
    forward = _training_forward(model.to(device), cfg, ctx)
    if ctx is not None:
        torch.manual_seed(cfg.seed + rank)  # dropout: a stream of its own per process, as per sample in one process
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(total, per_epoch * cfg.warmup_epochs, cfg.poly_power))
    bf16 = cfg.use_bf16(device)
    weight = median_frequency_weights(train[1], len(classes)).to(device) if cfg.class_balance else None
    stepper = _Stepper(forward, opt, sched, cfg, preprocess, device, bf16, rank, weight)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with progress_bar(progress and rank == 0) as bar:
        task = bar.add_task("train", total=total, info="")
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(len(images), generator=gen)  # the same on every process
            running = 0.0
            for step in range(per_epoch):
                batch = order[step * cfg.batch_size * world : (step + 1) * cfg.batch_size * world]
                loss = stepper.step(images, masks, batch, gen)
                running += loss
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.3f}")
            entry = {"epoch": epoch + 1, "loss": all_reduce_mean(running / per_epoch)}
            if cfg.evaluates(epoch):
                m = metrics_from_confusion(all_reduce_confusion(evaluate_model(model, *val, preprocess, len(classes))))
                entry["val_miou"] = m.miou
                bar.update(task, info=f"epoch {epoch + 1}/{cfg.epochs} val mIoU {m.miou:.3f}")
            history.append(entry)
    seconds = time.perf_counter() - start
    model.to("cpu")
    return TrainResult(metrics=m.to_dict(classes), history=history, seconds=seconds, bf16=bf16)
