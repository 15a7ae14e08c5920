"""The report's pictures, drawn with Pillow: ``parity.png`` and ``latency.png``.

``parity.png`` has one row per variant; for each shown image: the input, the reference's
labels, the variant's labels and the pixels where they differ (red on the greyed input).
``latency.png`` has one bar per row: p50 batch-1 latency, with a whisker to p90.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segexport.fsutil import atomic_path
from segexport.ownership import is_known
from segexport.precision.evaluate import Prediction
from segexport.verify.parity import Inputs, most_disagreeing

PARITY_PNG, LATENCY_PNG = "parity.png", "latency.png"
PARITY_IMAGES = 3  # images in the parity picture: those where the variants disagree most

PANEL = 128  # pixels of the longer side of each picture panel
GAP = 6
LABEL_WIDTH = 150
COLUMNS = ("input", "reference", "variant", "differs")
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
DIFF = (230, 20, 20)


def class_palette(count: int) -> np.ndarray:
    """``count x 3`` uint8 colours, the PASCAL VOC scheme (class 0 black, then distinct hues)."""
    colours = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        c, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
        colours[index] = rgb
    return colours


def _font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _panel(array: np.ndarray, size: tuple[int, int], *, labels: bool) -> Image.Image:
    image = Image.fromarray(array)
    return image.resize(size, Image.Resampling.NEAREST if labels else Image.Resampling.BILINEAR)


def _difference(image: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The input in faded grey with pixels where ``a != b`` in red."""
    grey = (image.astype(np.float32).mean(2, keepdims=True) * 0.4 + 150).astype(np.uint8)
    out = np.repeat(grey, 3, axis=2)
    out[a != b] = DIFF
    return out


@dataclass
class ParityRow:
    """One variant's labels on the shown images (``[K, H, W]`` uint8)."""

    name: str
    labels: np.ndarray


def save_parity_image(path: str | Path, images: np.ndarray, reference: np.ndarray, rows: Sequence[ParityRow],
                      classes: Sequence[str]) -> Path:
    """Write ``parity.png`` atomically.

    Args:
        path: where to write it.
        images: the shown val images, ``[K, H, W, 3]`` uint8 (not normalised).
        reference: the reference's labels on them, ``[K, H, W]``.
        rows: one per variant.
        classes: class names, for the legend.
    """
    count, height, width = reference.shape
    scale = PANEL / max(height, width)
    pw, ph = max(1, round(width * scale)), max(1, round(height * scale))
    group = 4 * pw + 3 * 2 + GAP * 2
    header, line, legend = 34, ph + 18, 24
    canvas = Image.new("RGB", (LABEL_WIDTH + count * group, header + len(rows) * line + legend), BACKGROUND)
    draw, font = ImageDraw.Draw(canvas), _font()
    palette = class_palette(max(len(classes), int(reference.max()) + 1, *(int(r.labels.max()) + 1 for r in rows)))
    for k in range(count):
        x0 = LABEL_WIDTH + k * group
        draw.text((x0, 2), f"image {k + 1}", fill=TEXT, font=font)
        for c, title in enumerate(COLUMNS):
            draw.text((x0 + c * (pw + 2), 18), title, fill=TEXT, font=font)
    for r, row in enumerate(rows):
        y = header + r * line
        draw.text((4, y + ph // 2 - 6), row.name, fill=TEXT, font=font)
        for k in range(count):
            x0 = LABEL_WIDTH + k * group
            differs = row.labels[k] != reference[k]
            panels = [(images[k], False), (palette[reference[k]], True), (palette[row.labels[k]], True),
                      (_difference(images[k], row.labels[k], reference[k]), True)]
            for c, (array, labels) in enumerate(panels):
                canvas.paste(_panel(array, (pw, ph), labels=labels), (x0 + c * (pw + 2), y))
            draw.text((x0 + 3 * (pw + 2), y + ph + 2), f"{int(differs.sum())} px ({differs.mean():.2%})",
                      fill=TEXT, font=font)
    _legend(draw, font, palette, classes, (4, canvas.height - legend + 4))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def _legend(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, palette: np.ndarray,
            classes: Sequence[str], origin: tuple[int, int]) -> None:
    x, y = origin
    for index, name in enumerate(classes):
        draw.rectangle((x, y, x + 12, y + 12), fill=tuple(int(v) for v in palette[index]), outline=TEXT)
        draw.text((x + 16, y), name, fill=TEXT, font=font)
        x += 16 + int(draw.textlength(name, font=font)) + 12


@dataclass
class LatencyBar:
    """One bar: a row's name, p50 and p90 in milliseconds (the reference's bar is grey)."""

    name: str
    p50: float
    p90: float
    reference: bool = False


def save_latency_chart(path: str | Path, bars: Sequence[LatencyBar], title: str) -> Path:
    """Write ``latency.png`` atomically: a horizontal bar per row (p50), a whisker to p90."""
    width, left, right, row, top = 760, 170, 150, 26, 30
    canvas = Image.new("RGB", (width, top + row * max(1, len(bars)) + 10), BACKGROUND)
    draw, font = ImageDraw.Draw(canvas), _font()
    draw.text((8, 8), title, fill=TEXT, font=font)
    longest = max((b.p90 for b in bars), default=1.0) or 1.0
    span = width - left - right
    for i, bar in enumerate(bars):
        y = top + i * row
        end, whisker = left + span * bar.p50 / longest, left + span * bar.p90 / longest
        draw.text((8, y + 5), bar.name, fill=TEXT, font=font)
        draw.rectangle((left, y + 3, max(left + 1, end), y + row - 5), fill=(150, 150, 150) if bar.reference else (70, 120, 190))
        draw.line((end, y + row // 2 - 1, whisker, y + row // 2 - 1), fill=TEXT, width=1)
        draw.line((whisker, y + 6, whisker, y + row - 8), fill=TEXT, width=1)
        draw.text((whisker + 6, y + 5), f"p50 {bar.p50:.2f} ms, p90 {bar.p90:.2f}", fill=TEXT, font=font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def write_pictures(root: Path, report: dict[str, Any], inputs: Inputs, predictions: dict[str, Prediction],
                   classes: tuple[str, ...], reference_name: str) -> dict[str, str | None]:
    """``parity.png`` (with accuracy; a stale one is removed without) and ``latency.png`` of a
    verify report; their names, by ``parity_png`` and ``latency_png`` (None: not drawn)."""
    files: dict[str, str | None] = {"parity_png": None, "latency_png": None}
    reference = predictions.get(reference_name)
    shown = [row["name"] for row in report["variants"] if row["name"] in predictions]
    if inputs.val is not None and reference is not None and shown:
        picked = most_disagreeing(reference, [predictions[n] for n in shown], PARITY_IMAGES)
        rows = [ParityRow(name, predictions[name].labels[picked]) for name in shown]
        save_parity_image(root / PARITY_PNG, inputs.val.images[picked], reference.labels[picked], rows, classes)
        files["parity_png"] = PARITY_PNG
    elif is_known(root / PARITY_PNG):  # an earlier run's picture, stale now (never a file segexport did not write)
        (root / PARITY_PNG).unlink()
    timed = [row for row in [report["reference"], *report["variants"]] if row.get("latency_ms")]
    bars = [LatencyBar(row["name"], row["latency_ms"]["p50"], row["latency_ms"]["p90"], row is report["reference"])
            for row in timed]
    if bars:
        title = f"{report['arch']}: batch-1 latency in ms (bar p50, whisker p90), {report['device']}"
        save_latency_chart(root / LATENCY_PNG, bars, title)
        files["latency_png"] = LATENCY_PNG
    return files
