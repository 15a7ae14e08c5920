"""``segexport verify``: every variant of a build folder against its PyTorch reference."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from segexport.cli.options import FORCE_HELP


def verify_command(
    build_dir: Annotated[Path, typer.Argument(metavar="BUILD_DIR", help="A build folder with build.json (segexport build).")],
    data: Annotated[str | None, typer.Option(help="Val data spec (default: the build's, e.g. synthetic).")] = None,
    images: Annotated[int | None, typer.Option(help="Verify on the first N val images (default: the build's count).")] = None,
    runs: Annotated[int | None, typer.Option(help="Timed batch-1 runs per row (default: up to 30 within 10 s).")] = None,
    skip_accuracy: Annotated[bool, typer.Option("--skip-accuracy", help="Latency rows only; no data needed.")] = False,
    junit: Annotated[Path | None, typer.Option(help="Also write a JUnit XML file (one test case per variant).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar (on a terminal).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json instead of the table.")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Verify BUILD_DIR: mIoU, agreement, logit error, latency and memory of every variant.

    Every variant runs the same val images as the PyTorch FP32 reference. Writes report.json,
    report.md, parity.png and latency.png into BUILD_DIR. Exit 1 when a variant breaks its
    mIoU budget (or fails to run), after printing the table.

    Examples:

        segexport verify builds/deeplabv3p

        segexport verify builds/deeplabv3p --junit verify.xml --json

        segexport verify builds/deeplabv3p --skip-accuracy --runs 100

        torchrun --standalone --nproc-per-node 4 -m segexport verify builds/deeplabv3p --data cityscapes:/data/cityscapes

    Under torchrun every process scores its shard of the val images (the figures equal a single
    process's exactly); rank 0 times the variants, writes the report and prints.
    """
    from segexport.distributed import distributed_session
    from segexport.errors import CheckFailed
    from segexport.pipeline.legacy import adopt_earlier_build
    from segexport.verify.render import print_report_table, verdict, wide_console
    from segexport.verify.report import REPORT_MD, verify_build

    with distributed_session() as ctx, _locked(build_dir, ctx):
        if ctx is None or ctx.is_main:
            adopt_earlier_build(build_dir)  # a build folder from before the ledger (see pipeline.legacy)
        report = verify_build(build_dir, data=data, images=images, skip_accuracy=skip_accuracy, junit=junit,
                              progress=progress and not as_json, latency_runs=runs, force=force)
    if ctx is not None and not ctx.is_main:
        return  # rank 0 reports (and sets the exit code torchrun passes on)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report_table(report, wide_console())
    if not report["pass"]:
        broken = [f"{row['name']} ({verdict(row)})" for row in report["variants"] if row["pass"] is False]
        raise CheckFailed(f"{len(broken)} variant(s) failed: {', '.join(broken)}; see {Path(build_dir) / REPORT_MD}")


def _locked(build_dir: Path, ctx: Any) -> contextlib.AbstractContextManager[Any]:
    """The build folder's lock (rank 0 holds it for all processes under torchrun)."""
    from segexport.locks import folder_lock

    if (ctx is not None and not ctx.is_main) or not build_dir.is_dir():
        return contextlib.nullcontext()  # a missing folder is reported by verify_build, in one line
    return folder_lock(build_dir, "segexport verify", option="BUILD_DIR")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
