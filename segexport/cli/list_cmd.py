"""``segexport list``: the registered architectures."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table


def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List the architectures segexport can build.

    Examples:

        segexport list

        segexport list --json | jq '.[].name'
    """
    from segexport.models import (
        list_models,  # lazily: torch loads only when a command runs
    )

    entries = list_models()
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    table = Table(title="segexport architectures")
    table.add_column("name", style="bold")
    table.add_column("task")
    table.add_column("summary")
    table.add_column("backbones")
    for e in entries:
        table.add_row(e.name, e.task, e.summary, ", ".join(e.backbones) or "-")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
