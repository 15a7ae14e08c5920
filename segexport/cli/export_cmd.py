"""``segexport export``: rewrite, export to ONNX and verify on ONNX Runtime."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from segexport.cli import options as opts

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_OUTPUTS = ("logits", "labels", "both")


def parse_input_size(value: str | None) -> tuple[int, int] | None:
    """``"HxW"`` -> ``(H, W)``; None stays None.

    Raises:
        typer.BadParameter: anything else (a usage error, exit 2).
    """
    if value is None:
        return None
    match = _SIZE.match(value)
    if not match or 0 in (int(match[1]), int(match[2])):
        raise typer.BadParameter(
            f"{value!r} is not HEIGHTxWIDTH with positive integers, e.g. 128x128", param_hint="'--input-size'"
        )
    return int(match[1]), int(match[2])


def _check_output(value: str) -> str:
    if value not in _OUTPUTS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(_OUTPUTS)}")
    return value


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _instance_rows(table: Table, s: dict[str, Any]) -> None:
    v = s["verification"]
    for batch in ("batch_1", "batch_4"):
        m = v[batch]
        table.add_row(f"detections, {batch.replace('_', ' ')}",
                      f"{m['matched']} of {m['reference']} matched (IoU >= {v['match_iou']}, score within "
                      f"{v['score_tolerance']}), ONNX Runtime found {m['candidate']}; worst IoU {m['min_box_iou']:.6f}, "
                      f"score {m['max_score_error']:.1e}, mask {m['max_mask_error']:.1e}")


def _print_summary(result: Any) -> None:
    s = result.summary
    table = Table(title=f"{s['arch']} -> {result.onnx_path}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("source", s["source"])
    table.add_row("graph", f"opset {s['opset']}, IR {s['ir_version']}, outputs {', '.join(s['outputs'])}, "
                  f"{s['nodes']['exported']} -> {s['nodes']['final']} nodes")
    if s.get("task") == "instance":
        _instance_rows(table, s)
    else:
        _semantic_rows(table, s, json.loads(result.rewrites_path.read_text())["rewrites"])
    table.add_row("seconds", ", ".join(f"{k} {v}" for k, v in s["seconds"].items()))
    Console().print(table)


def _semantic_rows(table: Table, s: dict[str, Any], rewrites: list[dict[str, Any]]) -> None:
    batch = s["verification"]["batch"]
    replaced = [f"{r['rule']}:{r['target']}" for r in rewrites if r["action"] == "replaced" and r["rule"] != "model"]
    table.add_row("input", f"images {'N' if s['dynamic_batch'] else 1}x3x"
                  + ("HxW (dynamic)" if s["dynamic_hw"] else "x".join(map(str, s["input_size"]))))
    table.add_row("rewrites", ", ".join(replaced) or "none")
    table.add_row("agreement", f"{s['agreement']:.6f} (budget {s['agreement_budget']}), "
                  f"vs original {_fmt(s['agreement_vs_original'], '.6f')}")
    table.add_row("max |logit diff|", f"{_fmt(s['max_logit_error'], '.2e')}, "
                  f"vs original {_fmt(s['max_logit_error_vs_original'], '.2e')}")
    table.add_row("sizes checked", ", ".join(f"{h}x{w}" for h, w in s["sizes_checked"]))
    if batch is not None:
        table.add_row("batch 1 vs 4", "identical" if batch["identical"] else f"differ ({batch['max_diff']})")
    if s.get("crf_vs_host"):
        c = s["crf_vs_host"]
        table.add_row("crf", f"conv {c['window']}x{c['window']} (dilation {c['dilation']}), "
                      f"{c['params']['iterations']} iterations, agreement with the host CRF "
                      f"({c['host_iterations']} iterations) {c['agreement_vs_host']:.4f}, "
                      f"float32 vs float64 {c['float32_error']:.1e}")
        table.add_row("crf vs PyTorch", f"max |diff| {c['onnx_crf_error']:.1e} given the same logits "
                      f"(tolerance {c['onnx_crf_tolerance']:.1e})")


def export_command(
    source: str | None = typer.Argument(None, metavar="ARCH|CHECKPOINT_DIR",
                                        help="Architecture name or checkpoint folder; or --model."),
    model: str | None = opts.MODEL_OPTION, model_kwargs: str | None = opts.MODEL_KWARGS_OPTION,
    mean: str | None = opts.MEAN_OPTION, std: str | None = opts.STD_OPTION,
    out: Path | None = typer.Option(
        None, help="Output folder (default: builds/ARCH/export; for a checkpoint folder, 'export' beside it)."
    ),
    size: str | None = typer.Option(None, help="Model size for an ARCH: tiny or paper."),
    checkpoint: Path | None = typer.Option(None, help="State-dict file (torchvision or segexport) for an ARCH."),
    input_size: str | None = typer.Option(None, "--input-size", help="HEIGHTxWIDTH (default: the checkpoint's or recipe's)."),
    opset: int = typer.Option(18, help="ONNX opset, 18 to 23 (18: native to the exporter, read by TensorRT 10)."),
    dynamic_batch: bool = typer.Option(True, "--dynamic-batch/--static-batch", help="Dynamic batch axis, or batch 1."),
    dynamic_hw: bool = typer.Option(False, "--dynamic-hw", help="Dynamic height and width, verified at three sizes."),
    keep_deconv: bool = typer.Option(False, "--keep-deconv", help="Keep transposed convs (no resize rewrite)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Run onnx-simplifier."),
    output: str = typer.Option("logits", callback=_check_output, help="Outputs: logits, labels (int32 argmax) or both."),
    images: int = typer.Option(32, min=1, help="Synthetic val images to verify on."),
    seed: int = typer.Option(0, help="Data seed (and weight seed without --checkpoint)."),
    crf: str = typer.Option("none", help="In-graph CRF: none, or conv (local-window mean field, DeepLab v1/v2)."),
    crf_iterations: int = typer.Option(
        3, "--crf-iterations", min=1,
        help="Mean-field steps of --crf conv. Beyond 3 the CRF's float32 output is not reproducible to 1e-4 "
             "(mean field amplifies rounding where classes tie); the summary's float32_error says how far."),
    as_json: bool = typer.Option(False, "--json", help="Print the export summary as JSON."),
    force: bool = typer.Option(False, "--force", help=opts.FORCE_HELP),
) -> None:
    """Export ARCH or CHECKPOINT_DIR to model.onnx (+ rewrites.json), verified on ONNX Runtime.

    Exit 1 when ONNX Runtime disagrees with PyTorch (argmax agreement below 99.99%).

    Examples:

        segexport export builds/fcn8s/reference

        segexport export deeplabv3p --size tiny --dynamic-hw --output both --json

        segexport export deeplabv3_resnet50 --checkpoint deeplabv3_resnet50_coco.pth --input-size 512x512

        segexport export builds/deeplabv1/reference --crf conv

        segexport export --model mynets:make_unet --checkpoint unet.pth --input-size 256x256
    """
    from segexport.pipeline.export_stage import export_model

    source, kwargs = opts.pick_model(source, model, model_kwargs)
    result = export_model(
        source, overrides=opts.model_overrides(kwargs, mean, std), out=out, size=size, checkpoint=checkpoint, input_size=parse_input_size(input_size),
        opset=opset, dynamic_batch=dynamic_batch, dynamic_hw=dynamic_hw, keep_deconv=keep_deconv,
        simplify=simplify, output=output, images=images, seed=seed, crf=crf,
        crf_iterations=crf_iterations, force=force,
    )
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for note in result.notes:
        err.print(f"warning: {note}", markup=False)
    if as_json:
        payload = {"onnx": str(result.onnx_path), "rewrites": str(result.rewrites_path), **result.summary}
        typer.echo(json.dumps(payload, indent=2))
        return
    _print_summary(result)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
