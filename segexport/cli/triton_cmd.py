"""``segexport triton``: a Triton Inference Server model repository from a build folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segexport.cli.options import FORCE_HELP


def triton_command(
    build_dir: Path = typer.Argument(..., metavar="BUILD_DIR", help="Folder written by segexport build (with build.json)."),
    repo: Path = typer.Option(..., "--repo", help="Repository folder (other models in it are left alone)."),
    name: str | None = typer.Option(None, help="Model name prefix (default: the architecture)."),
    max_batch: int | None = typer.Option(None, "--max-batch", help="max_batch_size of batching models (default 8)."),
    instances: int = typer.Option(1, "--instances", help="Instances per model (instance_group count)."),
    python_backend: bool = typer.Option(
        False, "--python-backend", help="Add NAME_e2e: encoded image bytes in, class mask out (Python backend)."
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Add one Triton model per built variant (ONNX Runtime or TensorRT) and README.NAME.md to a repository.

    Only the models NAME_* are written (each folder atomically); other models stay as they are.

    Each model gets config.pbtxt (platform, input/output names, types and dims read from the
    model, max_batch_size, dynamic batching, instance group) and 1/model.onnx or 1/model.plan.
    The README gives the preprocessing, the classes and what the server needs.

    Examples:

        segexport triton builds/deeplabv3p --repo triton_repo

        segexport triton builds/fcn8s --repo /models --name fcn --max-batch 16 --instances 2 --python-backend
    """
    from segexport import limits
    from segexport.deploy.triton import write_triton_repo

    if max_batch is not None and max_batch > limits.BATCH_MAX:
        limits.check_count(max_batch, "--max-batch", limits.BATCH_MAX)
    if instances > limits.INSTANCES_MAX:
        limits.check_count(instances, "--instances", limits.INSTANCES_MAX)

    result = write_triton_repo(build_dir, repo, name=name, max_batch=max_batch, instances=instances,
                               python_backend=python_backend, force=force)
    table = Table(title=f"Triton repository {result.path}")
    table.add_column("model", overflow="fold")
    for column in ("platform", "precision", "max batch", "instances"):
        table.add_column(column)
    for m in result.models:
        table.add_row(escape(m.name), m.platform, m.precision, str(m.max_batch_size), f"{instances} x {m.kind}")
    console = Console()
    console.print(table)
    for variant, why in result.skipped.items():
        console.print(f"not served: {escape(variant)}: {escape(why)}", highlight=False)
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    console.print(f"preprocessing, classes and server needs: {result.readme}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("triton")(triton_command)
