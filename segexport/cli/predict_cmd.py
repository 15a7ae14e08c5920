"""``segexport predict``: colour masks (and overlays) for images, with any artifact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segexport.cli.options import BACKEND_HELP, FORCE_HELP


def predict_command(
    artifact: Annotated[Path, typer.Argument(metavar="ARTIFACT",
                                             help="Checkpoint folder, .onnx model or .plan engine.")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Image files, or folders of images.")],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("predictions"),
    overlay: Annotated[bool, typer.Option(
        "--overlay", help="Also write STEM.overlay.png (image blended with the mask).")] = False,
    crf: Annotated[bool, typer.Option("--crf", help="Refine the logits at the image's size with the host dense CRF "
                                      "before the argmax (parameters from the artifact's arch recipe, else DeepLab "
                                      "v1's).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON record per image.")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    backend: Annotated[str | None, typer.Option(help=BACKEND_HELP)] = None,
    min_score: Annotated[float | None, typer.Option(
        "--min-score", help="Instance networks: leave out detections scoring below this (default 0.5).")] = None,
) -> None:
    """Segment images of any size and write STEM.png, a palette PNG of class indices.

    Each image is resized to the model's input size with the model's preprocessing (or padded
    for pad models), and the logits are resized back to the image's size before the argmax,
    so masks have the image's size. With --crf the dense CRF of DeepLab v1/v2 refines those
    logits with the image's colours first.

    Instance networks (maskrcnn, panet) also write STEM.json, each detection's class, score,
    box in image pixels and mask area; STEM.png holds the classes their masks paint, and the
    overlay draws each object in its own colour with its box and label.

    Examples:

        segexport predict builds/deeplabv3p/model.int8.cpu.onnx photos/ --out masks --overlay

        segexport predict builds/deeplabv3p/reference street.jpg

        segexport predict builds/deeplabv1/model.onnx photos/ --crf

        segexport predict builds/deeplabv3p/model.int8.openvino.onnx photos/ --backend openvino

        segexport predict builds/maskrcnn/model.int8.cpu.onnx photos/ --overlay --min-score 0.7
    """
    from segexport.deploy.predict import predict_images

    results = predict_images(artifact, images, out=out, overlay=overlay, crf=crf, force=force, backend=backend,
                             min_score=min_score)
    if as_json:
        for r in results:
            record = {"image": str(r.image), "mask": str(r.mask), "overlay": str(r.overlay) if r.overlay else None,
                      "size": list(r.size), "classes": list(r.classes), "crf_changed": r.crf_changed}
            if r.detections is not None:
                record.update(detections=str(r.detections), objects=r.objects)
            typer.echo(json.dumps(record))
        return
    console = Console()
    for r in results:
        changed = "" if r.crf_changed is None else f"; CRF changed {r.crf_changed:.2%} of pixels"
        changed += "" if r.objects is None else f"; {r.objects} objects in {r.detections}"
        console.print(f"{r.image} -> {r.mask} ({r.size[0]}x{r.size[1]}; {', '.join(r.classes)}{changed})",
                      highlight=False, markup=False)
    console.print(f"{len(results)} masks in {out}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
