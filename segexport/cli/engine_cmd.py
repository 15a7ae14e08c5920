"""``segexport engine``: a strongly typed TensorRT engine from an FP16 or INT8 ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from segexport.cli.export_cmd import parse_input_size
from segexport.cli.options import FORCE_HELP


def size_option(param: typer.CallbackParam, value: str | None) -> tuple[int, int] | None:
    """Typer callback: ``HxW`` -> ``(H, W)``, the error naming the option it came from."""
    try:
        return parse_input_size(value)
    except typer.BadParameter as exc:
        exc.param_hint = f"'{param.opts[0]}'" if param.opts else None
        raise


def _print_record(engine: Path) -> None:
    from segexport.engine.record import read_engine_record, record_path

    record = read_engine_record(engine)
    profile = record["settings"]["profile"]
    table = Table(title=f"{record['onnx']} -> {engine}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("precision", f"{record['precision']} (strongly typed)")
    table.add_row("TensorRT / GPU", f"{record['tensorrt_version']} on {record['gpu']['name']} "
                  f"(compute {record['gpu']['compute_capability']})")
    shapes = "static" if not profile["dynamic"] else " / ".join(
        "x".join(map(str, profile[k])) for k in ("min", "opt", "max"))
    table.add_row(f"{profile['input']} min/opt/max", shapes)
    table.add_row("workspace", f"{record['settings']['workspace_gb']} GiB")
    table.add_row("timing cache", record["settings"]["timing_cache"] or "none")
    table.add_row("record", str(record_path(engine)))
    table.add_row("seconds", str(record["build_seconds"]))
    Console().print(table)


def _check_bounds(**batches: int | None) -> None:
    """Batches beyond segexport's limit (see :mod:`segexport.limits`) fail before any work."""
    from segexport import limits

    for key, value in batches.items():
        if value is not None and value > limits.BATCH_MAX:
            limits.check_count(value, f"--{key.replace('_', '-')}", limits.BATCH_MAX)


def engine_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="FP16 or INT8 (Q/DQ) ONNX model from segexport quantize."),
    out: Path | None = typer.Option(None, help="Engine file (default: MODEL with the suffix .plan)."),
    min_batch: int | None = typer.Option(None, "--min-batch", help="Smallest batch (dynamic batch; default 1)."),
    opt_batch: int | None = typer.Option(None, "--opt-batch", help="Batch TensorRT tunes for (default 1)."),
    max_batch: int | None = typer.Option(None, "--max-batch", help="Largest batch (default 8)."),
    min_size: str | None = typer.Option(None, "--min-size", callback=size_option,
                                           help="HxW, dynamic-size models only (default: the export size)."),
    opt_size: str | None = typer.Option(None, "--opt-size", callback=size_option, help="HxW TensorRT tunes for."),
    max_size: str | None = typer.Option(None, "--max-size", callback=size_option, help="Largest HxW."),
    workspace: float | None = typer.Option(None, "--workspace", metavar="GB", help="Workspace memory limit in GiB (default 4)."),
    timing_cache: Path | None = typer.Option(
        None, "--timing-cache", help="Tactic timings: loaded when the file exists, saved after the build."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the engine's build record as JSON."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Build a strongly typed TensorRT engine (TensorRT 10 or 11) and its build record MODEL.json.

    The ONNX graph decides every precision (FP16 weights, INT8 Q/DQ scales); no precision
    flag is set. An engine runs only on the TensorRT version and GPU model that built it; the
    record beside it says which. Needs an NVIDIA GPU, its driver and the tensorrt package
    (exit 2 naming what is missing, with the equivalent trtexec line).

    Examples:

        segexport engine builds/deeplabv3p/model.int8.tensorrt.onnx --max-batch 16

        segexport engine model.fp16.onnx --out model.fp16.plan --timing-cache builds/timing.cache
    """
    from segexport.engine.build import build_engine
    from segexport.engine.record import record_path
    from segexport.ownership import claim_outputs, path_source

    _check_bounds(min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch)
    target = out if out is not None else model.with_suffix(".plan")
    claim_outputs(target.parent, [target.name, record_path(target).name], source=path_source("model", model, target.parent),
                  force=force)
    engine = build_engine(
        model, target,
        min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
        min_size=min_size, opt_size=opt_size, max_size=max_size,  # type: ignore[arg-type]  # parsed by the callback
        workspace_gb=workspace, timing_cache=timing_cache,
    )
    if as_json:
        from segexport.engine.record import read_engine_record

        typer.echo(json.dumps(read_engine_record(engine), indent=2))
    else:
        _print_record(engine)


def register(app: typer.Typer) -> None:
    app.command("engine")(engine_command)
