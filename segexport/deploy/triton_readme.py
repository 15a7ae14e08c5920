"""The README of a Triton model repository: models, preprocessing, classes, server requirements."""

from __future__ import annotations

from typing import TYPE_CHECKING

import segexport
from segexport.deploy.artifact import ArtifactSpec

if TYPE_CHECKING:
    from segexport.deploy.triton import TritonModel, TritonRepo
    from segexport.verify.manifest import BuildManifest

README_MARK = "# Triton model repository written by segexport"

_CLIENT = '''```python
import numpy as np
import tritonclient.http as http

client = http.InferenceServerClient("localhost:8000")
image = http.InferInput("IMAGE", [1], "BYTES")
image.set_data_from_numpy(np.array([open("photo.jpg", "rb").read()], dtype=np.object_))
mask = client.infer("{name}", [image]).as_numpy("MASK")  # uint8 [H, W], the photo's size
```'''


def _dims(model: TritonModel, tensors: list) -> str:
    batch = ["N"] if model.max_batch_size > 0 else []
    return ", ".join(f"`{t.name}` {'bytes' if t.dtype == 'object' else t.dtype} "
                     f"[{', '.join(batch + [str(d) if d > 0 else '?' for d in t.shape])}]" for t in tensors)


def _models_table(repo: TritonRepo) -> list[str]:
    lines = ["| model | variant | platform | precision | inputs | outputs | max batch | instances kind |",
             "|---|---|---|---|---|---|---|---|"]
    for m in repo.models:
        lines.append(f"| `{m.name}` | {m.variant} | {m.platform} | {m.precision} | {_dims(m, m.inputs)} | "
                     f"{_dims(m, m.outputs)} | {m.max_batch_size} | {m.kind} |")
    return lines


def _preprocessing(spec: ArtifactSpec, instance: bool = False) -> list[str]:
    p = spec.preprocess
    how = ("bilinear resize to that size" if p.resize == "resize"
           else "pad bottom and right to that size with the mean colour (images must not be larger)")
    return [
        "## Preprocessing (every ONNX and TensorRT model)", "",
        (f"- input: float32, layout NCHW, `[N, 3, {p.size[0]}, {p.size[1]}]` (height x width = "
        f"{p.size[0]} x {p.size[1]}), RGB channel order;"),
        f"- geometry: {how};",
        "- values: `x = (pixel / 255 - mean) / std` per channel, with",
        f"  `mean = {list(p.mean)}` and `std = {list(p.std)}`;",
        _INSTANCE_OUTPUTS if instance else "- output `logits`: float32 `[N, C, H, W]`; a pixel's class is the argmax over C.",
        "",
    ]


_INSTANCE_OUTPUTS = (
    "- outputs of an instance network, padded to D detections per image, best first: `boxes` float32 "
    "`[N, D, 4]` (x1, y1, x2, y2 in input pixels), `scores` float32 `[N, D]`, `classes` int32 `[N, D]` "
    "(indices into the table below), `masks` float32 `[N, D, M, M]` (probabilities inside each box) and "
    "`count` int32 `[N]` (filled slots; the rest are zeros). Paste each mask into its box and threshold "
    "it at 0.5, as `segexport predict` does.")


def _classes(spec: ArtifactSpec) -> list[str]:
    return ["## Classes", "", "| index | name |", "|---|---|",
            *(f"| {i} | {name} |" for i, name in enumerate(spec.classes)), ""]


def _e2e(model: TritonModel) -> list[str]:
    return [
        f"## End-to-end model `{model.name}` (Python backend)", "",
        ("Input `IMAGE`: TYPE_STRING `[1]`, the encoded bytes of one image (PNG, JPEG, ...). Output `MASK`: "
        "TYPE_UINT8 `[H, W]`, the class of every pixel at the image's own size. It decodes, preprocesses as "
        "above, runs `1/model.onnx` with ONNX Runtime (CUDA when available, else CPU), resizes the logits "
        "back to the image size and takes the argmax: the masks `segexport predict` writes."), "",
        ("The server needs Triton's Python backend with the stub built for its Python, and for that Python "
        "numpy < 2 (the stub is built against numpy 1.x; e.g. Debian's `python3-numpy`), Pillow and "
        "onnxruntime. The stub embeds the system Python in isolated mode, which ignores `PYTHONPATH`; "
        "`model.py` adds the `PYTHONPATH` entries itself, so the packages may live in a folder of their own:"), "",
        "```bash",
        "python3 -m pip install --target /opt/segexport-env 'numpy<2' pillow onnxruntime",
        "PYTHONPATH=/opt/segexport-env tritonserver --model-repository=$PWD",
        "```", "",
        "A request with `tritonclient`:", "", _CLIENT.format(name=model.name), "",
        ("It is also the template for an ensemble around the engine models: keep `decode_rgb`, `preprocess` "
        "and `labels_at_size` from `model.py`, and call the TensorRT model in between."), "",
    ]


def render_readme(repo: TritonRepo, manifest: BuildManifest, spec: ArtifactSpec) -> str:
    """The repository's README.md (its first line marks the folder as written by segexport)."""
    lines = [f"{README_MARK} {segexport.__version__}", "",
             (f"Architecture `{manifest.arch}`, built from `{manifest.reference}` (val data `{manifest.data}`). "
             "Serve it with `tritonserver --model-repository=$PWD`."), "", "## Models", "", *_models_table(repo), ""]
    if repo.skipped:
        lines += ["## Variants not served", "", *(f"- {v}: {why}" for v, why in repo.skipped.items()), ""]
    if any(m.platform == "tensorrt_plan" for m in repo.models):
        lines += [("TensorRT plans run only on the TensorRT version and GPU model that built them (their build "
                  "record `*.json` in the build folder says which): the server's TensorRT backend must match."), ""]
    lines += [*_preprocessing(spec, manifest.task == "instance"), *_classes(spec)]
    lines += [line for m in repo.models if m.platform == "python" for line in _e2e(m)]
    if repo.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in repo.notes), ""]
    return "\n".join(lines)
