"""Training: poly learning rate, cross-entropy with ignore index, flip and scale-crop
augmentation, seeded, val mIoU each epoch, a rich progress bar.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segexport.checkpoint import ModelConfig, save_checkpoint
from segexport.data import IGNORE_INDEX, Preprocess, describe_spec, load_arrays, normalize_batch, open_dataset
from segexport.progress import progress_bar
from segexport.models import SegmentationModel, build_model, check_input_size
from segexport.recipe import Recipe
from segexport.verify.metrics import confusion_matrix, metrics_from_confusion
from segexport.weights import file_sha256, load_backbone_weights

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
    bf16: bool | None = None  # bfloat16 autocast for training steps; None: where the CPU has bf16 kernels

    @classmethod
    def from_recipe(cls, r: Recipe) -> "TrainConfig":
        return cls(
            r.epochs, r.batch_size, r.lr, r.weight_decay, r.aux_weight, r.scale_min, r.scale_max, r.seed,
            bf16=r.bf16,
        )

    def use_bf16(self) -> bool:
        """Whether training steps run under bfloat16 autocast (evaluation always runs in FP32)."""
        if self.bf16 is not None:
            return self.bf16
        # oneDNN's bf16 kernels (AVX512-BF16/AMX) make CPU training 1.2-2x faster here; on CPUs
        # without them bf16 would be emulated and slower, so "auto" means FP32 there.
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class TrainResult:
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    bf16: bool = False


def scale_crop(
    image: torch.Tensor, mask: torch.Tensor, scale: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale one normalised image ``[C,H,W]`` and its mask ``[H,W]``, then crop (or pad
    with the mean colour and ignore) back to ``H x W`` at a random position."""
    h, w = mask.shape
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    msk = F.interpolate(mask[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
    ph, pw = max(0, h - nh), max(0, w - nw)
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph), value=0.0)  # 0 = mean colour after normalisation
        msk = F.pad(msk, (0, pw, 0, ph), value=IGNORE_INDEX)
    top = int(torch.randint(0, img.shape[1] - h + 1, (1,), generator=gen))
    left = int(torch.randint(0, img.shape[2] - w + 1, (1,), generator=gen))
    return img[:, top : top + h, left : left + w], msk[top : top + h, left : left + w]


def augment(
    images: torch.Tensor, masks: torch.Tensor, cfg: TrainConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip and scale-crop of a normalised batch."""
    out_i, out_m = [], []
    for img, msk in zip(images, masks.long()):
        if float(torch.rand((), generator=gen)) < 0.5:
            img, msk = img.flip(-1), msk.flip(-1)
        scale = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * float(torch.rand((), generator=gen))
        img, msk = scale_crop(img, msk, scale, gen)
        out_i.append(img)
        out_m.append(msk)
    return torch.stack(out_i), torch.stack(out_m)


@torch.inference_mode()
def predict_labels(model: SegmentationModel, images: np.ndarray, preprocess: Preprocess, batch_size: int = 16) -> np.ndarray:
    """Argmax labels ``[N,H,W]`` (uint8) for uint8 images ``[N,H,W,3]`` at the preprocessing size."""
    model.eval()
    out = np.empty(images.shape[:3], dtype=np.uint8)
    for s in range(0, len(images), batch_size):
        x = normalize_batch(torch.from_numpy(images[s : s + batch_size]), preprocess)
        out[s : s + batch_size] = model(x).argmax(1).to(torch.uint8).numpy()
    return out


def evaluate_model(
    model: SegmentationModel, images: np.ndarray, masks: np.ndarray, preprocess: Preprocess, num_classes: int
) -> np.ndarray:
    """Confusion matrix of the model's predictions on preprocessed-size images and masks."""
    return confusion_matrix(masks, predict_labels(model, images, preprocess), num_classes)


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

    Returns:
        The final epoch's val metrics, the per-epoch history and the wall time.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    images, masks = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    steps_per_epoch = max(1, len(images) // cfg.batch_size)  # drop the ragged last batch (BatchNorm)
    total = steps_per_epoch * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / total) ** cfg.poly_power)
    history: list[dict[str, float]] = []
    bf16 = cfg.use_bf16()
    start = time.perf_counter()
    with progress_bar(progress) as bar:
        task = bar.add_task("train", total=total, info="")
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(len(images), generator=gen)
            running = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                x = normalize_batch(images[idx], preprocess)
                x, y = augment(x, masks[idx], cfg, gen)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out, aux = model.forward_train(x)
                loss = F.cross_entropy(out.float(), y, ignore_index=IGNORE_INDEX)
                if aux is not None:
                    loss = loss + cfg.aux_weight * F.cross_entropy(aux.float(), y, ignore_index=IGNORE_INDEX)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.item()
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {loss.item():.3f}")
            m = metrics_from_confusion(evaluate_model(model, val[0], val[1], preprocess, len(classes)))
            history.append({"epoch": epoch + 1, "loss": running / steps_per_epoch, "val_miou": m.miou})
            bar.update(task, info=f"epoch {epoch + 1}/{cfg.epochs} val mIoU {m.miou:.3f}")
    seconds = time.perf_counter() - start
    return TrainResult(metrics=m.to_dict(classes), history=history, seconds=seconds, bf16=bf16)


def _load_backbone_checkpoint(model: SegmentationModel, path: str | Path | None) -> dict[str, Any]:
    """Load ``path`` into the backbone; what ``model.json`` records about it (empty without one)."""
    if path is None:
        return {}
    load_backbone_weights(model, path)
    return {"backbone_checkpoint": {"file": Path(path).name, "sha256": file_sha256(path)}}


def train_checkpoint(
    recipe: Recipe, out_dir: str | Path, *, progress: bool = True, backbone_checkpoint: str | Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """Build the recipe's model, train it on the recipe's data, write a checkpoint folder.

    ``backbone_checkpoint`` (an ImageNet weight file, see
    :func:`segexport.weights.load_backbone_weights`) initialises the backbone before training;
    its name and SHA-256 are recorded in ``model.json``.

    Returns:
        The checkpoint folder and its metrics (``miou``, ``pixel_acc``, ``per_class_iou``).

    Raises:
        SegexportError subclasses for bad data, options or output folders.
    """
    size = tuple(recipe.input_size)
    train_src = open_dataset(recipe.data, "train", size=size, seed=recipe.seed, length=recipe.train_images)
    val_src = open_dataset(recipe.data, "val", size=size, seed=recipe.seed, length=recipe.val_images)
    preprocess = Preprocess(size=size)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.arch, **recipe.model_args(len(train_src.classes)))
    check_input_size(model, *size)
    pretrained = _load_backbone_checkpoint(model, backbone_checkpoint)
    train = load_arrays(train_src, preprocess, progress=progress)
    val = load_arrays(val_src, preprocess, progress=progress)
    result = train_model(
        model, train, val, preprocess, TrainConfig.from_recipe(recipe), tuple(train_src.classes), progress=progress
    )
    config = ModelConfig(
        arch=recipe.arch,
        build_args={k: v for k, v in recipe.model_args(len(train_src.classes)).items() if v is not None},
        classes=tuple(train_src.classes),
        preprocess=preprocess,
        training={
            "recipe": recipe.to_dict(),
            "data": describe_spec(recipe.data),
            "train_images": len(train[0]),
            "val_images": len(val[0]),
            "seconds": round(result.seconds, 1),
            "history": result.history,
            "torch_version": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "step_precision": "bf16-autocast" if result.bf16 else "fp32",
            **pretrained,
        },
    )
    path = save_checkpoint(out_dir, model.eval(), config, result.metrics)
    return path, result.metrics
