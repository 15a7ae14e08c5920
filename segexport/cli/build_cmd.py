"""``segexport build``: the whole pipeline in one command, with a report and a CI gate (exit 1)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from segexport.cli import options as opts
from segexport.cli.export_cmd import parse_input_size
from segexport.precision.targets import TARGETS


def parse_budget(value: str | None, option: str) -> float | None:
    """``"0.5"`` -> 0.5 points; None stays None.

    Parsed here rather than by Typer so that a budget that is not a number is one line
    (exit 2), not a usage block.

    Raises:
        ConfigError: not a finite number >= 0.
    """
    from segexport.errors import ConfigError

    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{option} {value!r} is not a number of mIoU points >= 0; pass e.g. {option} 0.5")
    return number


def _artifacts(report: dict[str, Any]) -> list[str]:
    root = Path(report["build_dir"])
    rows = [report["reference"], *report["variants"]]
    paths = [str(root / row["artifact"]) for row in rows if row.get("artifact") and not row.get("skipped")]
    files = report.get("files", {})
    return paths + [str(root / name) for key, name in files.items() if key != "report_md" and name]


def _print_result(report: dict[str, Any]) -> None:
    from segexport.verify.render import print_report_table, wide_console

    # Off a terminal (CI logs, pipes) rich would wrap the table to 80 columns, hiding figures.
    print_report_table(report, wide_console())
    root = Path(report["build_dir"])
    typer.echo(f"report: {root / 'report.md'}")
    typer.echo("artifacts: " + ", ".join(dict.fromkeys(_artifacts(report))))
    triton = report.get("triton")
    if triton:
        typer.echo(f"triton: {len(triton['models'])} models in {triton['repo']} ({', '.join(triton['models'])}); "
                   f"how to serve them: {triton['readme']}")


def build_command(
    arch: str | None = typer.Argument(None, metavar="ARCH|MODEL.onnx",
                                      help="Architecture name (see `segexport list`) or an ONNX file; or --model."),
    model: str | None = opts.MODEL_OPTION, model_kwargs: str | None = opts.MODEL_KWARGS_OPTION,
    mean: str | None = opts.MEAN_OPTION, std: str | None = opts.STD_OPTION,
    recipe: Path | None = typer.Option(None, help="Recipe TOML to use instead of the packaged one."),
    classes: Path | None = typer.Option(
        None, help="Class names, one per line, for an ONNX file source (default: its metadata or the data set's)."),
    checkpoint: Path | None = typer.Option(
        None, help="Checkpoint folder (segexport train) or state-dict file (torchvision, segexport); default: train."),
    size: str | None = typer.Option(None, help="Model size: tiny or paper (default: recipe)."),
    backbone: str | None = typer.Option(None, help="Backbone name (default: recipe)."),
    input_size: str | None = typer.Option(None, "--input-size", help="HEIGHTxWIDTH (default: checkpoint or recipe)."),
    fp16: bool = typer.Option(False, "--fp16", help="Also FP16: ONNX, PyTorch in true half arithmetic, TensorRT."),
    int8: bool = typer.Option(False, "--int8", help="Also INT8 for each --target (and the TensorRT engine)."),
    target: str = typer.Option("all", help=f"INT8 targets: {', '.join(TARGETS)}, several comma-separated, or all "
                               "(both: its old name); TensorRT engines only with tensorrt."),
    data: str | None = typer.Option(None, help="Data spec for training and verification (default: recipe)."),
    calib: str | None = typer.Option(None, help="Calibration images: a folder or a data spec (default: synthetic)."),
    calib_images: int | None = typer.Option(None, "--calib-images", help="Calibration images (default 256)."),
    method: str | None = typer.Option(None, help="Calibration: minmax (default), entropy or percentile."),
    max_fallback: int | None = typer.Option(
        None, "--max-fallback", help="Most layers kept in higher precision to meet a budget (default a fifth; 0 off)."),
    out: Path | None = typer.Option(None, help="Build folder (default: builds/ARCH)."),
    budget_fp16: str | None = typer.Option(
        None, "--budget-fp16", metavar="PTS", help="Largest FP16 mIoU drop in points (default: recipe, 0.1)."),
    budget_int8: str | None = typer.Option(
        None, "--budget-int8", metavar="PTS", help="Largest INT8 mIoU drop in points (default: recipe, 1.0; CPU 0.5)."),
    junit: Path | None = typer.Option(None, help="Also write JUnit XML here (one test case per variant)."),
    triton_repo: Path | None = typer.Option(
        None, "--triton-repo", help="At the end, add the built models to this Triton model repository "
        "(as `segexport triton BUILD --repo DIR`; other models in it are left alone)."),
    random_init: bool = typer.Option(False, "--random-init", help="Untrained weights (latency only; no training)."),
    skip_accuracy: bool = typer.Option(False, "--skip-accuracy", help="Latency rows only (no accuracy figures)."),
    epochs: int | None = typer.Option(None, min=1, help="Training epochs (default: recipe)."),
    train_images: int | None = typer.Option(None, "--train-images", min=1, help="Training images (default: recipe)."),
    val_images: int | None = typer.Option(None, "--val-images", min=1, help="Val images (default: recipe)."),
    seed: int | None = typer.Option(None, help="Seed of data, weights and calibration sample (default: recipe)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars (on a terminal)."),
    force: bool = typer.Option(False, "--force", help=opts.FORCE_HELP),
) -> None:
    """Train or load ARCH, export, quantize, build engines, verify every variant and write a report.

    Writes builds/ARCH/: reference/, model.onnx, model.fp16.onnx,
    model.int8.*.onnx, engines, build.json, report.json, report.md, parity.png,
    latency.png. Stages are cached by content hash: a re-run redoes only what
    changed. Exit 1 when a variant breaks its mIoU budget.

    Examples:

        segexport build deeplabv3p --int8

        segexport build fcn8s --fp16 --int8 --junit results.xml

        segexport build deeplabv3p --checkpoint builds/deeplabv3p/reference --int8 --budget-int8 0.5

        segexport build deeplabv3p --size paper --backbone resnet50 --input-size 512x512 --random-init --int8 --target cpu

        segexport build deeplabv3p --checkpoint builds/deeplabv3p/reference --int8 --skip-accuracy --out /tmp/latency

        segexport build deeplabv3p --int8 --target openvino --triton-repo /models

        segexport build --model mynets:make_unet --model-kwargs '{"width": 16}' --fp16 --int8

        segexport build model.onnx --data synthetic --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --int8
    """
    from segexport.cli import set_interrupt_hint
    from segexport.errors import CheckFailed
    from segexport.models.foreign import folder_name
    from segexport.pipeline import BuildOptions, build

    arch, kwargs = opts.pick_model(arch, model, model_kwargs, recipe)
    set_interrupt_hint(f"finished stages are kept in {out or Path('builds') / folder_name(arch)}; "
                       "run the same command again to resume from there")

    overrides = {k: v for k, v in (("epochs", epochs), ("train_images", train_images), ("val_images", val_images),
                                   ("seed", seed)) if v is not None}
    options = BuildOptions(
        arch, network=opts.model_overrides(kwargs, mean, std), classes=classes, recipe=recipe, checkpoint=checkpoint, size=size, backbone=backbone, input_size=parse_input_size(input_size),
        fp16=fp16, int8=int8, target=target, data=data, calib=calib, calib_images=calib_images, method=method,
        budget_fp16=parse_budget(budget_fp16, "--budget-fp16"), budget_int8=parse_budget(budget_int8, "--budget-int8"),
        max_fallback=max_fallback, out=out, random_init=random_init, skip_accuracy=skip_accuracy, junit=junit,
        triton_repo=triton_repo, overrides=overrides, force=force,
    )
    report = build(options, progress=progress, log=typer.echo)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for note in report["build_notes"]:
        err.print(f"warning: {note}", markup=False)
    _print_result(report)
    if report["pass"] is False:
        failed = [row["name"] for row in report["variants"] if row.get("pass") is False]
        raise CheckFailed(f"{', '.join(failed) or 'a variant'} broke the budget or failed to run; "
                          f"see {Path(report['build_dir']) / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.command("build")(build_command)
