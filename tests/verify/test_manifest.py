"""build.json: written atomically, read back equal, and every malformed field is one line naming the fix."""

from __future__ import annotations

import json

import pytest

from segexport.errors import InputError
from segexport.verify.manifest import (
    BuildManifest,
    VariantSpec,
    read_manifest,
    write_manifest,
)


def _manifest() -> BuildManifest:
    return BuildManifest(
        arch="fcn8s", reference="reference", data="synthetic", seed=3, val_images=16, input_size=(64, 96),
        variants=[VariantSpec("onnx", "onnxruntime", "fp32", None, "model.onnx", 0.05),
                  VariantSpec("trt-int8", "tensorrt", "int8", "tensorrt", None, 1.0, skipped="no CUDA device",
                              details={"trtexec": "trtexec --onnx=model.int8.tensorrt.onnx"})],
        random_init=True)


def test_round_trip(tmp_path):
    path = write_manifest(tmp_path, _manifest())
    assert path == tmp_path / "build.json"
    assert read_manifest(tmp_path) == _manifest()
    assert json.loads(path.read_text())["input_size"] == [64, 96]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".segexport-files.json", "build.json"]  # the file and its ledger; no temporary file left


def _broken(tmp_path, change) -> str:
    write_manifest(tmp_path, _manifest())
    data = json.loads((tmp_path / "build.json").read_text())
    change(data)
    (tmp_path / "build.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "build.json") in message and "segexport build" in message
    return message


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda d: d.pop("arch"), "missing keys ['arch']"),
    (lambda d: d.update(colour="red"), "unknown keys ['colour']"),
    (lambda d: d["variants"][0].update(backend="tflite"), "variants[0].backend must be one of torch, onnxruntime"),
    (lambda d: d["variants"][0].update(precision="int4"), "variants[0].precision must be one of fp32, fp16, int8"),
    (lambda d: d["variants"][0].update(budget_pts="small"), "variants[0].budget_pts must be int or float or null"),
    (lambda d: d["variants"][0].update(budget_pts=-1), "variants[0].budget_pts must be a number >= 0"),
    (lambda d: d["variants"][0].update(artifact=None), "'onnx' has neither an artifact nor a skip reason"),
    (lambda d: d["variants"][1].update(name="onnx"), "variant names must be unique, ['onnx'] repeat"),
    (lambda d: d.update(input_size=[64]), "input_size must be [height, width]"),
    (lambda d: d.update(seed=True), "seed must be int, got True"),
    (lambda d: d.update(variants={}), "variants must be list"),
])
def test_malformed_fields_are_one_line(tmp_path, change, fragment):
    assert fragment in _broken(tmp_path, change)


def test_missing_folder_file_and_bad_json_are_one_line(tmp_path):
    with pytest.raises(InputError, match="not a build folder"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(InputError, match="build.json: missing; .* is not a finished build"):
        read_manifest(tmp_path)
    (tmp_path / "build.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_manifest(tmp_path)
