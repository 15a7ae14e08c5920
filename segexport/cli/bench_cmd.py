"""``segexport bench``: latency and throughput of checkpoint folders, ONNX files and engines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from segexport.cli.export_cmd import parse_input_size
from segexport.cli.options import BACKEND_HELP
from segexport.verify.render import wide_console


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print(result: dict[str, Any]) -> None:
    table = Table(title=f"segexport bench · {result['device']} · {result['threads']} threads", title_justify="left")
    for name in ("artifact", "backend", "precision", "input", "p50 ms", "p90 ms", "p99 ms", "runs", "img/s",
                 "batch", "speedup", "peak MB"):
        table.add_column(name, justify="left" if name in ("artifact", "backend", "precision") else "right")
    for row in result["rows"]:
        lat = row["latency_ms"]
        table.add_row(row["artifact"], row["backend"], row["precision"], "x".join(map(str, row["input_size"])),
                      f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", str(row["runs"]),
                      f"{row['throughput_ips']:.1f}", str(row["throughput_batch"]),
                      _fmt(row["speedup_vs_pytorch"], ".2f"), _fmt(row["peak_rss_mb"], ".0f"))
    wide_console().print(table)


def bench_command(
    artifacts: Annotated[list[Path], typer.Argument(
        metavar="ARTIFACT", help="Checkpoint folders (PyTorch), .onnx files, OpenVINO .xml, .plan engines.")],
    runs: Annotated[int | None, typer.Option(help="Timed batch-1 runs (default: up to 30 within 10 s each).")] = None,
    batch: Annotated[int | None, typer.Option(help="Batch of the throughput figure (default 8).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: torch's setting).")] = None,
    input_size: Annotated[str | None, typer.Option("--input-size", help="HEIGHTxWIDTH (default: each artifact's).")] = None,
    backend: Annotated[str | None, typer.Option(help=BACKEND_HELP)] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar (on a terminal).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Time ARTIFACTs on random normalised inputs of their size: no data needed.

    Batch-1 latency (p50/p90/p99 after warm-up), batched throughput and peak memory; speedups
    are relative to the first checkpoint folder given (its PyTorch FP32 model).

    Examples:

        segexport bench builds/deeplabv3p/reference builds/deeplabv3p/model.onnx builds/deeplabv3p/model.int8.cpu.onnx

        segexport bench model.onnx --runs 200 --batch 16 --json

        segexport bench builds/deeplabv3p/reference builds/deeplabv3p/model.int8.openvino.onnx --backend openvino
    """
    from segexport.verify.bench import bench_artifacts

    result = bench_artifacts(artifacts, runs=runs, batch=batch, threads=threads,
                             input_size=parse_input_size(input_size), progress=progress and not as_json,
                             backend=backend)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print(result)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
