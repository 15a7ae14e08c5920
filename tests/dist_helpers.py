"""Helpers for tests that run several processes with torch.distributed.

Worker functions live here, in a plain module on ``sys.path``, because spawned processes
import them by name.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import nn

from segexport.data import Preprocess, load_arrays, open_dataset

SIZE = (64, 64)
CLASSES = 8  # the synthetic data set's


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it for a bound socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, job: Callable[..., Any], out: Path, args: tuple, kwargs: dict,
           cpu: bool) -> None:
    # What torchrun would set for this process.
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    if cpu:  # hide GPUs before CUDA initialises, so the group is gloo on a GPU machine too
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from segexport.distributed import distributed_session

    with distributed_session() as ctx:
        result = job(ctx, *args, **kwargs)
    torch.save(result, out / f"rank{rank}.pt")


def launch(
    job: Callable[..., Any], out: Path, *args: Any, world: int = 2, cpu: bool = True, timeout: float = 120.0,
    **kwargs: Any,
) -> list[Any]:
    """Run ``job(ctx, *args, **kwargs)`` in ``world`` spawned processes forming one process group
    (gloo on CPUs with ``cpu``, else nccl where CUDA is available).

    Returns:
        What ``job`` returned on each rank, in rank order.
    """
    procs = mp.start_processes(
        _entry, args=(world, free_port(), job, out, args, kwargs, cpu), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not procs.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.kill()
            raise TimeoutError(f"distributed job did not finish within {timeout} s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


class EvalLocked(nn.Module):
    """Keeps a module in eval mode whatever ``train()`` says: frozen BatchNorm statistics, no dropout."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.eval()

    def train(self, mode: bool = True) -> EvalLocked:
        self.training = False
        self.inner.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def freeze_norm_and_dropout(model: nn.Module) -> nn.Module:
    """Wrap every BatchNorm and dropout layer of ``model`` (in place) in :class:`EvalLocked`."""
    for name, child in list(model.named_children()):
        if isinstance(child, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)):
            setattr(model, name, EvalLocked(child))
        else:
            freeze_norm_and_dropout(child)
    return model


def arrays(split: str, count: int) -> tuple[Any, Any]:
    """``count`` synthetic samples of ``split`` at 64x64, as uint8 arrays."""
    return load_arrays(open_dataset("synthetic", split, size=SIZE, length=count), Preprocess(size=SIZE))


def initial_fcn8s() -> nn.Module:
    """The tiny fcn8s every training job starts from (seed 0)."""
    from segexport.models import build_model

    torch.manual_seed(0)
    return build_model("fcn8s", size="tiny", num_classes=CLASSES)


def train_frozen(ctx: Any, batch_size: int, *, sync_bn: bool = False, freeze: bool = True) -> dict[str, torch.Tensor]:
    """Two training steps of a tiny fcn8s on 8 images (per-process ``batch_size``); its final weights.

    Scales are drawn from [1, 1.5] so no pixel is padded with the ignore label: every process
    then averages its loss over the same number of pixels, and DDP's mean of the per-process
    gradients is the gradient of the combined batch.
    """
    from segexport.distributed import shard_source
    from segexport.train import EVAL_BATCH, TrainConfig, train_model

    model = initial_fcn8s()
    if freeze:
        freeze_norm_and_dropout(model)
    world = 1 if ctx is None else ctx.world_size
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3, scale_min=1.0, scale_max=1.5, bf16=False,
                      sync_bn=sync_bn)
    preprocess = Preprocess(size=SIZE)
    val_src = shard_source(open_dataset("synthetic", "val", size=SIZE, length=4), block=EVAL_BATCH)
    assert 8 // (batch_size * world) == 2, "two steps of the global batch"
    train_model(model, arrays("train", 8), load_arrays(val_src, preprocess),
                preprocess, cfg, tuple(str(i) for i in range(CLASSES)), progress=False)
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "sync_bn": any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())}


def evaluate_job(ctx: Any, checkpoint: Path, images: int) -> Any:
    """The confusion matrix of ``segexport evaluate``'s library function on this process."""
    from segexport.verify.evaluate import evaluate_confusion

    return evaluate_confusion(checkpoint, images=images, progress=False).confusion


def evaluate_on_device_job(ctx: Any, checkpoint: Path, images: int) -> tuple[Any, Any]:
    """(the sharded and reduced confusion matrix, the one of all images evaluated by this process alone),
    both on this process's device."""
    from segexport.checkpoint import load_checkpoint
    from segexport.train import evaluate_model
    from segexport.verify.evaluate import evaluate_confusion

    reduced = evaluate_confusion(checkpoint, images=images, progress=False).confusion
    model, config = load_checkpoint(checkpoint)
    model.to(ctx.device)
    images_, masks = arrays("val", images)
    return reduced, evaluate_model(model, images_, masks, config.preprocess, len(config.classes))
