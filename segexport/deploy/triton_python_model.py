"""Triton Python-backend model: encoded image bytes in, class mask at the image's own size out.

``segexport triton --python-backend`` copies this file as ``model.py`` into ``NAME_e2e/1/``,
beside the ONNX model and ``segexport.json`` (input size, mean, std, resize mode, classes, I/O
names). It needs numpy (< 2: the backend's stub is built against numpy 1.x), Pillow and
onnxruntime on the server, and nothing of segexport. Per request: decode the image, preprocess
it exactly as ``segexport.data.Preprocess`` does, run ONNX Runtime (CUDA when the server's
onnxruntime has it, else CPU), resize the logits back to the image size, argmax.

``segexport predict`` post-processes with :func:`labels_at_size` from this file, so the CLI and
the server produce the same masks; decoding and preprocessing mirror ``segexport.data``
(``read_rgb``, ``Preprocess.image``) and tests/deploy checks them against it bit for bit.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

if sys.flags.isolated:
    # The stub embeds the system Python in isolated mode, which ignores PYTHONPATH; honour it so
    # that numpy/Pillow/onnxruntime can live in a folder of their own instead of the system's.
    sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

# Imported after the path fix above.
import numpy as np
from PIL import Image

SPEC_FILE = "segexport.json"
INPUT_NAME = "IMAGE"
OUTPUT_NAME = "MASK"


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes -> HxWx3 uint8 RGB (grey, palette, alpha and 16-bit converted like ``read_rgb``).

    Raises:
        OSError, ValueError: the bytes are not an image Pillow can decode.
    """
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode.startswith("I"):  # 16-bit greyscale: keep the top 8 bits
        grey = np.asarray(image).astype(np.int64)
        image = Image.fromarray((grey >> 8 if grey.max() > 255 else grey).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def preprocess(rgb: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """HxWx3 uint8 -> ``[1, 3, size]`` float32: resized (bilinear) or padded, /255, minus mean, over std.

    Raises:
        ValueError: under ``pad``, an image larger than the model's input size.
    """
    height, width = spec["size"]
    if rgb.shape[:2] != (height, width):
        if spec["resize"] == "resize":
            rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))
        elif rgb.shape[0] > height or rgb.shape[1] > width:
            raise ValueError(f"image of {rgb.shape[0]}x{rgb.shape[1]} is larger than the pad size {height}x{width}")
        else:
            padded = np.empty((height, width, 3), dtype=np.uint8)
            padded[...] = [int(np.clip(round(m * 255.0), 0, 255)) for m in spec["mean"]]
            padded[: rgb.shape[0], : rgb.shape[1]] = rgb
            rgb = padded
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec["mean"], dtype=np.float32)) / np.asarray(spec["std"], dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


def logits_at_size(logits: np.ndarray, size: tuple[int, int], resize: str) -> np.ndarray:
    """``[C, h, w]`` logits at the model's input size -> ``[C, H, W]`` logits at the image's ``size``.

    Under ``resize`` the logits are resized bilinearly to ``size`` (smoother borders than
    upsampling labels); under ``pad`` the image's region is cropped out.
    """
    height, width = size
    if resize == "pad":
        return logits[:, :height, :width]
    if logits.shape[1:] != (height, width):
        return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(c, dtype=np.float32))
                                    .resize((width, height), Image.Resampling.BILINEAR)) for c in logits])
    return logits


def labels_at_size(logits: np.ndarray, size: tuple[int, int], resize: str) -> np.ndarray:
    """``[C, h, w]`` logits at the model's input size -> ``[H, W]`` uint8 labels at the image's ``size``
    (the argmax of :func:`logits_at_size`)."""
    return logits_at_size(logits, size, resize).argmax(0).astype(np.uint8)


class TritonPythonModel:
    """Triton's Python-backend entry points (``initialize``, ``execute``, ``finalize``)."""

    def initialize(self, args: dict[str, Any]) -> None:
        import onnxruntime as ort

        here = Path(__file__).resolve().parent
        self.spec = json.loads((here / SPEC_FILE).read_text())
        options = ort.SessionOptions()
        options.log_severity_level = 3
        providers = [p for p in ("CUDAExecutionProvider",) if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(here / self.spec["onnx"]), options,
                                            providers=[*providers, "CPUExecutionProvider"])

    def segment(self, data: bytes) -> np.ndarray:
        """Encoded image -> uint8 class mask of the image's height and width."""
        rgb = decode_rgb(data)
        x = preprocess(rgb, self.spec)
        logits = self.session.run([self.spec["output"]], {self.spec["input"]: x})[0][0]
        return labels_at_size(logits, rgb.shape[:2], self.spec["resize"])

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy().reshape(-1)
            try:
                mask = self.segment(bytes(data[0]))
            except (OSError, ValueError) as exc:  # undecodable bytes, or too large for a pad model
                error = pb_utils.TritonError(f"cannot segment this image: {exc}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, mask)]))
        return responses

    def finalize(self) -> None:
        self.session = None
