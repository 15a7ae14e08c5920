"""Shared fixtures: tiny trained checkpoints (trained once per session) and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_cli

from segexport.recipe import load_recipe, resolve_recipe


@pytest.fixture
def cli():
    return run_cli


def _train_tiny(arch: str, out: Path, **overrides) -> Path:
    from segexport.train import train_checkpoint

    quick = dict(epochs=1, train_images=32, val_images=8, batch_size=8, input_size=(64, 64))
    recipe = resolve_recipe(load_recipe(arch), **{**quick, **overrides})
    path, _ = train_checkpoint(recipe, out, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A briefly trained tiny deeplabv3p checkpoint folder (64x64 inputs)."""
    return _train_tiny("deeplabv3p", tmp_path_factory.mktemp("ckpt") / "deeplabv3p")


@pytest.fixture(scope="session")
def tiny_fcn8s_checkpoint(tmp_path_factory) -> Path:
    """A briefly trained tiny fcn8s checkpoint folder (64x64 inputs)."""
    return _train_tiny("fcn8s", tmp_path_factory.mktemp("ckpt") / "fcn8s")


def _assemble_build(checkpoint: Path, root: Path) -> Path:
    """A hand-assembled build folder (what `segexport build` writes): the reference checkpoint,
    model.onnx, a CPU INT8 model and build.json with an onnx, pytorch-fp16, onnx-int8-cpu and a
    skipped TensorRT variant. Budgets are loose so the build passes; tests tighten them."""
    import shutil

    from segexport.export.stage import export_model
    from segexport.precision.stage import quantize_model
    from segexport.verify.manifest import BuildManifest, VariantSpec, write_manifest

    shutil.copytree(checkpoint, root / "reference")
    onnx = export_model(str(checkpoint), out=root, images=8).onnx_path
    quantize_model(onnx, precision="int8", target="cpu", calib_images=4, method="minmax", val_images=8,
                   budget=100.0, max_fallback=0, progress=False)
    variants = [
        VariantSpec("onnx", "onnxruntime", "fp32", None, "model.onnx", 0.01),
        VariantSpec("pytorch-fp16", "torch", "fp16", None, "reference", 1.0),
        VariantSpec("onnx-int8-cpu", "onnxruntime", "int8", "cpu", "model.int8.cpu.onnx", 100.0),
        VariantSpec("trt-int8", "tensorrt", "int8", "tensorrt", None, 1.0, skipped="no CUDA device (test build)"),
    ]
    write_manifest(root, BuildManifest(arch="deeplabv3p", reference="reference", data="synthetic", seed=0,
                                       val_images=8, input_size=(64, 64), variants=variants))
    return root


@pytest.fixture(scope="session")
def tiny_build_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    """A small build folder of the tiny deeplabv3p (64x64, 8 val images); copy it before changing it."""
    return _assemble_build(tiny_checkpoint, tmp_path_factory.mktemp("build") / "deeplabv3p")
