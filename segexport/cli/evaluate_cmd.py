"""``segexport evaluate``: metrics of a checkpoint folder on a validation split."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder written by `segexport train`."),
    data: str | None = typer.Option(None, help="Data spec (default: the data it was trained on)."),
    images: int | None = typer.Option(None, min=1, help="Evaluate the first N val images."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Evaluate CHECKPOINT: mIoU, pixel accuracy and per-class IoU.

    Examples:

        segexport evaluate builds/deeplabv3p/reference

        segexport evaluate builds/fcn8s/reference --data voc:/data/VOCdevkit --json

        torchrun --standalone --nproc-per-node 4 -m segexport evaluate builds/fcn8s/reference

    Under torchrun every process evaluates its shard of the images; rank 0 prints the totals.
    """
    from segexport.distributed import distributed_session
    from segexport.verify.evaluate import evaluate_checkpoint

    with distributed_session() as ctx:
        result = evaluate_checkpoint(checkpoint, data=data, images=images, progress=progress and not as_json)
    if ctx is not None and not ctx.is_main:
        return  # rank 0 reports
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{checkpoint} on {result['data']} val ({result['images']} images)")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for name, iou in result["per_class_iou"].items():
        table.add_row(name, "-" if iou is None else f"{iou:.4f}")
    table.add_section()
    table.add_row("[bold]mIoU[/]", f"[bold]{result['miou']:.4f}[/]")
    table.add_row("pixel accuracy", f"{result['pixel_acc']:.4f}")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
