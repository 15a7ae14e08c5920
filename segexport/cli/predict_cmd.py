"""``segexport predict``: colour masks (and overlays) for images, with any artifact."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console


def predict_command(
    artifact: Path = typer.Argument(..., metavar="ARTIFACT", help="Checkpoint folder, .onnx model or .plan engine."),
    images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files, or folders of images."),
    out: Path = typer.Option(Path("predictions"), help="Output folder."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write STEM.overlay.png (image blended with the mask)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON record per image."),
) -> None:
    """Segment images of any size and write STEM.png, a palette PNG of class indices.

    Each image is resized to the model's input size with the model's preprocessing (or padded
    for pad models), and the logits are resized back to the image's size before the argmax,
    so masks have the image's size.

    Examples:

        segexport predict builds/deeplabv3p/model.int8.cpu.onnx photos/ --out masks --overlay

        segexport predict builds/deeplabv3p/reference street.jpg
    """
    from segexport.deploy.predict import predict_images

    results = predict_images(artifact, images, out=out, overlay=overlay)
    if as_json:
        for r in results:
            typer.echo(json.dumps({"image": str(r.image), "mask": str(r.mask),
                                   "overlay": str(r.overlay) if r.overlay else None,
                                   "size": list(r.size), "classes": list(r.classes)}))
        return
    console = Console()
    for r in results:
        console.print(f"{r.image} -> {r.mask} ({r.size[0]}x{r.size[1]}; {', '.join(r.classes)})", highlight=False,
                      markup=False)
    console.print(f"{len(results)} masks in {out}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
