"""``segexport quantize``: INT8 (TensorRT or CPU) or FP16 from an FP32 ONNX model, judged against a budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from segexport.cli.options import FORCE_HELP
from segexport.precision.targets import DEFAULT_TARGET, targets_help


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _accuracy_rows(table: Table, s: dict[str, Any]) -> None:
    acc = s["accuracy"]
    if acc is None:
        table.add_row("accuracy", "not measured (see warnings)")
        return
    table.add_row("val", f"{acc['val']}, {acc['images']} images")
    if acc.get("metric") == "AP":  # an instance network (precision.instance_judge)
        v, r = acc["variant"], acc["reference"]
        table.add_row("AP", f"mask {v['mask_ap']:.4f} vs FP32 {r['mask_ap']:.4f}, box {v['box_ap']:.4f} vs FP32 "
                      f"{r['box_ap']:.4f}: drop {acc['drop_points']:.3f} points (budget {s['budget_points']})")
        table.add_row("AP50, map mIoU", f"mask {v['mask_ap50']:.4f}, box {v['box_ap50']:.4f}, mIoU {v['miou']:.4f} "
                      f"(FP32 {r['mask_ap50']:.4f}, {r['box_ap50']:.4f}, {r['miou']:.4f})")
        return
    table.add_row("mIoU", f"{acc['variant']['miou']:.4f} vs FP32 {acc['reference']['miou']:.4f}: drop "
                  f"{acc['drop_points']:.3f} points (budget {s['budget_points']})")
    table.add_row("argmax agreement", f"{acc['agreement']:.6f}, max |logit diff| {_fmt(acc['max_logit_error'], '.3g')}")
    half = s.get("true_half")
    if half is not None:
        table.add_row("true half (torch)", f"{half['dtype']}: mIoU drop {half['drop_points']:.3f} points, "
                      f"agreement {half['agreement']:.6f}")


def _graph_rows(table: Table, s: dict[str, Any]) -> None:
    if s["precision"] == "fp16":
        c = s["conversion"]
        kept = ", ".join(f"{op} x{n}" for op, n in c["kept_fp32_ops"].items()) or "none"
        table.add_row("kept FP32 (ops)", kept)
        table.add_row("io / weights", f"{s['graph']['inputs']} -> {s['graph']['outputs']}, {s['graph']['initializer_types']}")
        return
    g, cal = s["graph"], s["calibration"]
    images = cal["images"]
    reused = " (reused from --calib-cache)" if cal["cache"]["reused"] else ""
    table.add_row("calibration", f"{cal['settings']['method']} on {images['used']} images of {images['source']} "
                  f"(seed {images['seed']}, {images['skipped']} skipped){reused}")
    table.add_row("Q/DQ", f"{g['quantize_linear']} Q, {g['dequantize_linear']} DQ, zero points {g['zero_point_types']}, "
                  f"constants {g['constants']}")
    if "optimized" in g:
        table.add_row("ORT fused convs", f"{g['optimized']['QLinearConv']} QLinearConv of {g['optimized']['Conv_in_model']} Conv")


def _print_summary(result: Any) -> None:
    s = result.summary
    table = Table(title=f"{s['variant']} -> {result.model_path}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    _graph_rows(table, s)
    _accuracy_rows(table, s)
    kept = s["kept_fp32"]
    table.add_row("kept FP32 (layers)", ", ".join(kept) if kept else "none")
    table.add_row("result", "passed" if s["passed"] else ("not judged" if s["passed"] is None else "FAILED"))
    table.add_row("files", ", ".join(str(Path(f).name) for f in result.files))
    table.add_row("seconds", ", ".join(f"{k} {v}" for k, v in s["seconds"].items()))
    Console().print(table)


def quantize_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="FP32 ONNX model (from segexport export, or one image input)."),
    int8: bool = typer.Option(False, "--int8", help="Make the INT8 model of --target."),
    fp16: bool = typer.Option(False, "--fp16", help="Make model.fp16.onnx (FP32 inputs and outputs)."),
    target: str | None = typer.Option(None, help=f"INT8 target (default {DEFAULT_TARGET}): {targets_help()}."),
    calib: str | None = typer.Option(
        None, help="Calibration images: a folder, or synthetic (default), voc:PATH, cityscapes:PATH, folder:PATH, coco:PATH."
    ),
    calib_images: int | None = typer.Option(None, "--calib-images", help="Calibration images to sample (default 256)."),
    method: str | None = typer.Option(None, help="Calibration: minmax (default), entropy or percentile."),
    percentile: float | None = typer.Option(None, help="Percentile kept by --method percentile (default 99.99)."),
    calib_cache: Path | None = typer.Option(
        None, "--calib-cache", help="Ranges file: reused when it exists (no calibration), written when not."
    ),
    budget: float | None = typer.Option(
        None, help="Largest mIoU drop in points (default: the recipe's; INT8 1.0, CPU 0.5, FP16 0.1)."
    ),
    max_fallback: int | None = typer.Option(
        None, "--max-fallback", help="Most layers kept in FP32 to meet the budget (default: a fifth; 0: off)."
    ),
    val: str | None = typer.Option(None, help="Validation data spec (default: synthetic)."),
    val_images: int | None = typer.Option(None, "--val-images", help="Validation images (default: the whole split)."),
    out: Path | None = typer.Option(None, help="Output folder (default: the model's folder)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    seed: int = typer.Option(0, help="Seed of the calibration sample and of the synthetic data."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars (on a terminal)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Quantize MODEL.onnx to INT8 or FP16 and check its mIoU drop against the budget.

    Writes model.int8.tensorrt.onnx (+ calibration.cache, calibration.json), model.int8.cpu.onnx
    (+ calibration.json) or model.fp16.onnx, and the variant's entry in quantize.json. When the
    drop breaks the budget, the most sensitive layers are kept in FP32 (at most --max-fallback);
    exit 1 if it still breaks.

    Examples:

        segexport quantize builds/deeplabv3p/export/model.onnx --int8

        segexport quantize model.onnx --int8 --target cpu --calib my_images/ --calib-images 512

        segexport quantize model.onnx --int8 --calib-cache builds/deeplabv3p/export/calibration.json

        segexport quantize model.onnx --fp16 --json
    """
    from segexport.errors import ConfigError
    from segexport.precision.stage import quantize_model

    if int8 == fp16:
        raise ConfigError("pass exactly one of --int8 and --fp16")
    result = quantize_model(
        model, precision="int8" if int8 else "fp16", target=target, calib=calib, calib_images=calib_images,
        method=method, percentile=percentile, calib_cache=calib_cache, budget=budget, max_fallback=max_fallback,
        val=val, val_images=val_images, out=out, seed=seed, progress=progress, force=force,
    )
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for note in result.notes:
        err.print(f"warning: {note}", markup=False)
    if as_json:
        typer.echo(json.dumps({**result.summary, "summary_file": str(result.summary_path)}, indent=2))
        return
    _print_summary(result)


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_command)
