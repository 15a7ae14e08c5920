"""The Triton model repository writer (configs, files, README) and the Python-backend model's code."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segexport.data import Preprocess
from segexport.data.imagefiles import read_rgb
from segexport.deploy import triton_python_model as tpm
from segexport.deploy.triton import write_triton_repo
from segexport.errors import ConfigError, InputError

ONNX_CONFIG = '''name: "seg_onnx"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "images"
    data_type: TYPE_FP32
    dims: [ 3, 64, 64 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 8, 64, 64 ]
  }
]
dynamic_batching { }
instance_group [
  {
    count: 2
    kind: KIND_AUTO
  }
]
'''


def _body(config: Path) -> str:
    """A config.pbtxt without its comment header (which names the build folder)."""
    return "".join(line for line in config.read_text().splitlines(keepends=True) if not line.startswith("#"))


def test_repository_has_one_model_per_built_variant(tiny_build_dir, tmp_path):
    repo = write_triton_repo(tiny_build_dir, tmp_path / "repo", name="seg", instances=2, python_backend=True)
    assert [m.name for m in repo.models] == ["seg_onnx", "seg_onnx-int8-cpu", "seg_e2e"]
    assert _body(tmp_path / "repo" / "seg_onnx" / "config.pbtxt") == ONNX_CONFIG
    int8 = _body(tmp_path / "repo" / "seg_onnx-int8-cpu" / "config.pbtxt")
    assert "kind: KIND_CPU" in int8 and 'platform: "onnxruntime_onnx"' in int8
    assert (tmp_path / "repo" / "seg_onnx" / "1" / "model.onnx").read_bytes() == (tiny_build_dir / "model.onnx").read_bytes()
    assert set(repo.skipped) == {"pytorch-fp16", "trt-int8"}
    assert "TorchScript" in repo.skipped["pytorch-fp16"]
    e2e = tmp_path / "repo" / "seg_e2e"
    assert 'backend: "python"' in _body(e2e / "config.pbtxt") and "max_batch_size: 0" in _body(e2e / "config.pbtxt")
    assert (e2e / "1" / "model.py").read_text() == Path(tpm.__file__).read_text()
    spec = json.loads((e2e / "1" / "segexport.json").read_text())
    assert spec["size"] == [64, 64] and spec["input"] == "images" and spec["output"] == "logits"
    assert len(spec["classes"]) == 8 and spec["variant"] == "onnx"


def test_readme_gives_preprocessing_classes_and_skipped_variants(tiny_build_dir, tmp_path):
    write_triton_repo(tiny_build_dir, tmp_path / "repo", python_backend=True)
    readme = (tmp_path / "repo" / "README.deeplabv3p.md").read_text()
    pre = Preprocess.from_dict(json.loads((tiny_build_dir / "reference" / "model.json").read_text())["preprocess"])
    assert f"`mean = {list(pre.mean)}` and `std = {list(pre.std)}`" in readme
    assert "layout NCHW, `[N, 3, 64, 64]`" in readme and "bilinear resize" in readme
    assert "| 0 | background |" in readme
    assert "- trt-int8: no CUDA device (test build)" in readme
    assert "numpy < 2" in readme and "PYTHONPATH" in readme


def test_writes_only_the_models_of_its_name_and_keeps_everything_else(tiny_build_dir, tmp_path):
    repo = tmp_path / "repo"
    write_triton_repo(tiny_build_dir, repo, name="a")
    (repo / "users_model").mkdir()
    (repo / "users_model" / "config.pbtxt").write_text("mine")
    before = (repo / "a_onnx" / "1" / "model.onnx").read_bytes()
    write_triton_repo(tiny_build_dir, repo, name="b")  # another name: adds, deletes nothing
    write_triton_repo(tiny_build_dir, repo, name="a")  # its own models: replaced in place
    assert (repo / "users_model" / "config.pbtxt").read_text() == "mine"
    assert (repo / "a_onnx" / "1" / "model.onnx").read_bytes() == before
    assert {"a_onnx", "b_onnx", "README.a.md", "README.b.md"} <= {p.name for p in repo.iterdir()}


def test_refuses_model_folders_it_did_not_write_unless_forced(tiny_build_dir, tmp_path):
    repo = tmp_path / "repo"
    (repo / "seg_onnx").mkdir(parents=True)
    (repo / "seg_onnx" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="'seg_onnx' exists and segexport did not write it.*--force"):
        write_triton_repo(tiny_build_dir, repo, name="seg")
    assert sorted(p.name for p in repo.iterdir()) == ["seg_onnx"]
    write_triton_repo(tiny_build_dir, repo, name="seg", force=True)
    assert (repo / "seg_onnx" / "notes.txt").read_text() == "keep me"  # kept inside the replaced folder
    assert (repo / "seg_onnx" / "config.pbtxt").is_file()


def test_engine_model_batches_within_its_profile(build_with_engine, tmp_path):
    build = build_with_engine(max_batch=4)
    repo = write_triton_repo(build, tmp_path / "repo", name="seg")
    config = _body(tmp_path / "repo" / "seg_trt-int8" / "config.pbtxt")
    assert 'platform: "tensorrt_plan"' in config and "max_batch_size: 4" in config and "kind: KIND_GPU" in config
    assert (tmp_path / "repo" / "seg_trt-int8" / "1" / "model.plan").read_bytes() == b"placeholder engine"
    assert [m.max_batch_size for m in repo.models] == [8, 8, 4]
    with pytest.raises(ConfigError, match="--max-batch 16 exceeds the engine's profile"):
        write_triton_repo(build, tmp_path / "repo2", max_batch=16)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", [None, "RGBA", "L", "P", "I;16"])
def test_server_decoding_matches_read_rgb(tmp_path, mode):
    rgb = np.random.default_rng(1).integers(0, 256, (21, 34, 3), dtype=np.uint8)
    data = _png(rgb, mode) if mode != "I;16" else _png(rgb[..., 0].astype(np.uint16) * 257)
    (tmp_path / "x.png").write_bytes(data)
    assert np.array_equal(tpm.decode_rgb(data), read_rgb(tmp_path / "x.png"))


@pytest.mark.parametrize("resize", ["resize", "pad"])
def test_server_preprocessing_matches_preprocess_bit_for_bit(resize):
    pre = Preprocess(size=(48, 40), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), resize=resize)
    spec = {"size": [48, 40], "mean": list(pre.mean), "std": list(pre.std), "resize": resize}
    for shape in ((48, 40), (30, 37), (100, 80) if resize == "resize" else (48, 17)):
        rgb = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
        assert np.array_equal(tpm.preprocess(rgb, spec)[0], pre.image(rgb))


def test_labels_at_size_resizes_logits_or_crops_padding():
    logits = np.random.default_rng(0).normal(size=(5, 8, 8)).astype(np.float32)
    assert np.array_equal(tpm.labels_at_size(logits, (8, 8), "resize"), logits.argmax(0))
    assert np.array_equal(tpm.labels_at_size(logits, (5, 6), "pad"), logits[:, :5, :6].argmax(0))
    halves = np.zeros((2, 8, 8), dtype=np.float32)
    halves[0, :, :4] = halves[1, :, 4:] = 1.0
    want = np.zeros((16, 24), dtype=np.uint8)
    want[:, 12:] = 1
    assert np.array_equal(tpm.labels_at_size(halves, (16, 24), "resize"), want)
