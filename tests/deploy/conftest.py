"""Deploy-test builds: the session's ``tiny_build_dir`` (tests/conftest.py), and a copy of it
with a TensorRT engine row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from segexport.verify.manifest import VariantSpec, read_manifest, write_manifest


def _with_engine(tiny_build_dir: Path, tmp_path: Path, max_batch: int) -> Path:
    """A copy of the build with a trt-int8 row whose engine record says ``max_batch``.

    The engine file is a placeholder: what is tested is the config written from its record.
    """
    build = tmp_path / "build"
    shutil.copytree(tiny_build_dir, build)
    (build / "model.int8.plan").write_bytes(b"placeholder engine")
    io_specs = {"inputs": [{"name": "images", "dtype": "float32", "shape": [-1, 3, 64, 64]}],
                "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 8, 64, 64]}]}
    record = {"format": "segexport-engine/1", "precision": "int8", "tensorrt_version": "10.13.0",
              "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}, "metadata": {}, **io_specs,
              "settings": {"profile": {"input": "images", "min": [1, 3, 64, 64], "opt": [1, 3, 64, 64],
                                       "max": [max_batch, 3, 64, 64], "dynamic": True}}}
    (build / "model.int8.json").write_text(json.dumps(record))
    manifest = read_manifest(build)
    row = next(i for i, v in enumerate(manifest.variants) if v.name == "trt-int8")
    manifest.variants[row] = VariantSpec("trt-int8", "tensorrt", "int8", "tensorrt", "model.int8.plan", 1.0)
    write_manifest(build, manifest)
    return build


@pytest.fixture
def build_with_engine(tiny_build_dir, tmp_path):
    """Factory: ``build_with_engine(max_batch=4)``, a copy of the build with a trt-int8 engine row."""
    return lambda max_batch=4: _with_engine(tiny_build_dir, tmp_path, max_batch)
