"""``segexport check``: static compatibility of an ONNX file with a deployment target."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segexport.errors import CheckFailed

if TYPE_CHECKING:
    from segexport.export.trt_check import CompatReport

_STYLE = {"unsupported": "bold red", "restricted": "yellow", "info": "dim"}


class Target(str, Enum):
    tensorrt = "tensorrt"


def check_command(
    model: Path = typer.Argument(..., help="ONNX file to check (ours or anyone's)."),
    target: Target = typer.Option(Target.tensorrt, "--target", help="Runtime to check against."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Check MODEL for operators, attributes and data types the target's ONNX parser rejects.

    Needs no GPU and no tensorrt package: the rules come from NVIDIA's onnx-tensorrt operator
    support matrix. Exit 1 when anything is unsupported.

    Examples:

        segexport check builds/fcn8s/model.onnx

        segexport check model.onnx --target tensorrt --json | jq '.findings[] | select(.severity == "unsupported")'
    """
    from segexport.export.trt_check import check_tensorrt_compat

    report = check_tensorrt_compat(model)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise CheckFailed(report.summary())


def _print_report(report: CompatReport) -> None:
    console = Console()
    if not report.findings:
        console.print(f"{report.model}: all {report.nodes} nodes supported by {report.target} "
                      f"({report.matrix})", highlight=False)
        return
    table = Table(title=f"{report.model} vs {report.target} ({report.matrix})")
    table.add_column("severity")
    table.add_column("node")
    table.add_column("op")
    table.add_column("message", overflow="fold")
    table.add_column("rule", style="dim")
    for f in report.findings:
        cells = (escape(f.node or "-"), escape(f.op_type or "-"), escape(f.message), escape(f.rule))
        table.add_row(f"[{_STYLE[f.severity]}]{f.severity}[/]", *cells)
    console.print(table)
    if report.ok:
        console.print(report.summary(), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("check")(check_command)
