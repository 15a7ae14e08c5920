"""A hand-assembled build folder for tests of verify, Triton and predict (no `segexport build` run)."""

from __future__ import annotations

import shutil
from pathlib import Path

LOOSE_BUDGET = 100.0  # mIoU points: no variant can drop more, so no trained model breaks it


def assemble_build(checkpoint: Path, root: Path, *, arch: str = "deeplabv3p", images: int = 8,
                   onnx_budget: float = 0.01) -> Path:
    """A build folder like the one `segexport build` writes: the reference checkpoint (copied
    unless it is already ``root/reference``), model.onnx, a CPU INT8 model and build.json with
    an onnx, pytorch-fp16, onnx-int8-cpu and a skipped TensorRT variant. The FP16 and INT8
    budgets are 100 points, more than any mIoU can drop, so the build passes whatever weights
    this CPU trained; the FP32 ONNX one (``onnx_budget``) relies on ONNX Runtime matching PyTorch.
    Tests tighten them."""
    from segexport.pipeline.export_stage import export_model
    from segexport.precision.stage import quantize_model
    from segexport.verify.manifest import BuildManifest, VariantSpec, write_manifest

    if Path(checkpoint) != root / "reference":
        shutil.copytree(checkpoint, root / "reference")
    onnx = export_model(str(checkpoint), out=root, images=images).onnx_path
    quantize_model(onnx, precision="int8", target="cpu", calib_images=4, method="minmax", val_images=images,
                   budget=LOOSE_BUDGET, max_fallback=0, progress=False)
    variants = [
        VariantSpec("onnx", "onnxruntime", "fp32", None, "model.onnx", onnx_budget),
        VariantSpec("pytorch-fp16", "torch", "fp16", None, "reference", LOOSE_BUDGET),
        VariantSpec("onnx-int8-cpu", "onnxruntime", "int8", "cpu", "model.int8.cpu.onnx", LOOSE_BUDGET),
        VariantSpec("trt-int8", "tensorrt", "int8", "tensorrt", None, 1.0, skipped="no CUDA device (test build)"),
    ]
    write_manifest(root, BuildManifest(arch=arch, reference="reference", data="synthetic", seed=0,
                                       val_images=images, input_size=(64, 64), variants=variants))
    return root


def as_if_segexport_wrote(path: Path) -> Path:
    """Record a file a test wrote by hand in its folder's ledger, as segexport records its own
    artifacts (verify refuses files it has no record of)."""
    from segexport.ownership import file_digest, record_file

    record_file(path, file_digest(path))
    return path
