"""The ``segexport`` command line: a thin Typer app over library functions.

Errors become exit codes here and only here: 2 for bad input, 1 for a failed check.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from segexport.errors import SegexportError

app = typer.Typer(
    name="segexport",
    help="Take segmentation networks from PyTorch to verified deployment artifacts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _register_commands() -> None:
    from segexport.cli import (
        check_cmd,
        evaluate_cmd,
        export_cmd,
        list_cmd,
        quantize_cmd,
        train_cmd,
    )

    for module in (list_cmd, train_cmd, evaluate_cmd, export_cmd, quantize_cmd, check_cmd):
        module.register(app)
    from segexport.cli import engine_cmd, predict_cmd, triton_cmd

    for module in (engine_cmd, triton_cmd, predict_cmd):
        module.register(app)
    from segexport.cli import build_cmd

    build_cmd.register(app)
    from segexport.cli import bench_cmd, verify_cmd

    verify_cmd.register(app)
    bench_cmd.register(app)


def main() -> None:
    """Console-script entry point."""
    _register_commands()
    try:
        app()
    except SegexportError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; no partial artifact was left behind")
        sys.exit(130)
