"""The reference row of a build's verification: PyTorch FP32 on the checkpoint, or (a build from
an ONNX file, which has no PyTorch model) the FP32 ONNX on its backend."""

from __future__ import annotations

from pathlib import Path

from segexport.checkpoint import ModelConfig
from segexport.errors import InputError
from segexport.runners.registry import get_backend
from segexport.runners.torch_runner import TorchRunner
from segexport.verify.manifest import BuildManifest, VariantSpec

REFERENCE_NAME = "pytorch"


def reference_spec(manifest: BuildManifest) -> VariantSpec:
    """The reference row: PyTorch FP32 on the checkpoint, or (a build from an ONNX file, which
    has no PyTorch model) the FP32 ONNX on its backend, named after that backend's rows."""
    name = REFERENCE_NAME if manifest.reference_backend == "torch" else get_backend(manifest.reference_backend).row
    return VariantSpec(name=name, backend=manifest.reference_backend, precision="fp32", target=None,
                       artifact=manifest.reference, budget_pts=None)


def is_reference(spec: VariantSpec, manifest: BuildManifest) -> bool:
    return spec.name == reference_spec(manifest).name and spec.budget_pts is None


def reference_config(root: Path, manifest: BuildManifest) -> ModelConfig:
    """The reference's config: the checkpoint's (its loading also proves it sound), or for an
    FP32 ONNX reference the one its segexport metadata describes."""
    if manifest.reference_backend != "torch":
        from segexport.precision.onnx_model import read_model_info

        info = read_model_info(root / manifest.reference)
        if not info.classes:
            raise InputError(f"{root / manifest.reference}: names no classes; re-run `segexport build` on the ONNX file")
        return ModelConfig(arch=info.arch or manifest.arch, build_args={}, classes=tuple(info.classes),
                           preprocess=info.preprocess)
    with TorchRunner(root / manifest.reference) as runner:
        config = runner.config
    if config.arch != manifest.arch:
        raise InputError(f"{root / manifest.reference}: a {config.arch} checkpoint, but build.json says "
                         f"{manifest.arch}; re-run `segexport build {manifest.arch}`")
    return config
