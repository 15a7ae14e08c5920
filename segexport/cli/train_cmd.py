"""``segexport train``: train an architecture on a data set and write a checkpoint folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from segexport.cli import options as opts
from segexport.recipe import load_recipe, resolve_recipe


def train_command(
    arch: str | None = typer.Argument(None, help="Architecture name (see `segexport list`); or --model."),
    model: str | None = opts.MODEL_OPTION, model_kwargs: str | None = opts.MODEL_KWARGS_OPTION,
    mean: str | None = opts.MEAN_OPTION, std: str | None = opts.STD_OPTION,
    size: str | None = typer.Option(None, help="Model size: tiny or paper (default: recipe)."),
    backbone: str | None = typer.Option(None, help="Backbone name (default: recipe)."),
    data: str | None = typer.Option(None, help="Data spec: synthetic, voc:PATH, cityscapes:PATH, folder:PATH, coco:PATH."),
    epochs: int | None = typer.Option(None, min=1, help="Training epochs (default: recipe)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=2, help="Batch size, per process under torchrun (default: recipe)."
    ),
    lr: float | None = typer.Option(None, min=0.0, help="Peak learning rate (default: recipe)."),
    seed: int | None = typer.Option(None, help="Random seed for data, init and augmentation."),
    recipe: Path | None = typer.Option(None, help="Recipe TOML to use instead of the packaged one."),
    out: Path | None = typer.Option(None, help="Checkpoint folder (default: builds/ARCH/reference)."),
    backbone_checkpoint: Path | None = typer.Option(
        None, "--backbone-checkpoint", help="ImageNet weights (torchvision .pth or .safetensors) for the backbone."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    force: bool = typer.Option(False, "--force", help=opts.FORCE_HELP),
) -> None:
    """Train ARCH and write checkpoint.safetensors, model.json and metrics.json.

    Examples:

        segexport train deeplabv3p

        segexport train fcn8s --epochs 4 --out /tmp/fcn8s

        segexport train unet --data folder:/data/cells --seed 1

        segexport train --model mynets:make_unet --model-kwargs '{"width": 16}'

        segexport train fcn8s --size paper --backbone-checkpoint vgg16-397923af.pth

        torchrun --standalone --nproc-per-node 4 -m segexport train deeplabv3p --size paper

    Under torchrun (one process per GPU, or per CPU share with gloo) training uses
    DistributedDataParallel; --batch-size is per process, rank 0 writes the checkpoint.
    """
    from segexport.distributed import distributed_session
    from segexport.models import get_entry
    from segexport.models.foreign import folder_name
    from segexport.train_run import train_checkpoint

    arch, kwargs = opts.pick_model(arch, model, model_kwargs, recipe)
    get_entry(arch)  # unknown names fail before any work
    r = resolve_recipe(
        load_recipe(arch, recipe),
        size=size, backbone=backbone, data=data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        **opts.model_overrides(kwargs, mean, std),
    )
    with distributed_session() as ctx:
        path, metrics = train_checkpoint(
            r, out or Path("builds") / folder_name(arch) / "reference", progress=progress, backbone_checkpoint=backbone_checkpoint,
            force=force,
        )
    if ctx is not None and not ctx.is_main:
        return  # rank 0 reports
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(path), **metrics}, indent=2))
    else:
        typer.echo(f"{arch}: val mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_acc']:.4f} -> {path}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
