"""A hand-assembled build folder for tests of verify, Triton and predict (no `segexport build` run)."""

from __future__ import annotations

import shutil
from pathlib import Path


def assemble_build(checkpoint: Path, root: Path, *, arch: str = "deeplabv3p", images: int = 8,
                   onnx_budget: float = 0.01) -> Path:
    """A build folder like the one `segexport build` writes: the reference checkpoint (copied
    unless it is already ``root/reference``), model.onnx, a CPU INT8 model and build.json with
    an onnx, pytorch-fp16, onnx-int8-cpu and a skipped TensorRT variant. Budgets are loose so
    the build passes; tests tighten them."""
    from segexport.export.stage import export_model
    from segexport.precision.stage import quantize_model
    from segexport.verify.manifest import BuildManifest, VariantSpec, write_manifest

    if Path(checkpoint) != root / "reference":
        shutil.copytree(checkpoint, root / "reference")
    onnx = export_model(str(checkpoint), out=root, images=images).onnx_path
    quantize_model(onnx, precision="int8", target="cpu", calib_images=4, method="minmax", val_images=images,
                   budget=100.0, max_fallback=0, progress=False)
    variants = [
        VariantSpec("onnx", "onnxruntime", "fp32", None, "model.onnx", onnx_budget),
        VariantSpec("pytorch-fp16", "torch", "fp16", None, "reference", 1.0),
        VariantSpec("onnx-int8-cpu", "onnxruntime", "int8", "cpu", "model.int8.cpu.onnx", 100.0),
        VariantSpec("trt-int8", "tensorrt", "int8", "tensorrt", None, 1.0, skipped="no CUDA device (test build)"),
    ]
    write_manifest(root, BuildManifest(arch=arch, reference="reference", data="synthetic", seed=0,
                                       val_images=images, input_size=(64, 64), variants=variants))
    return root
