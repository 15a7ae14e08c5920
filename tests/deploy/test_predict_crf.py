"""``segexport predict --crf``: the host dense CRF on the logits at the image's size, before the argmax."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from cli_helpers import assert_one_line_error
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segexport.data import Preprocess, open_dataset
from segexport.deploy.artifact import ArtifactSpec
from segexport.deploy.predict import artifact_crf_params, predict_images
from segexport.deploy.triton_python_model import logits_at_size
from segexport.errors import InputError
from segexport.postprocess import DEEPLAB_V1, CrfParams, crf_params, dense_crf
from segexport.recipe import load_recipe


def test_crf_masks_are_dense_crf_of_the_logits_at_image_size(tiny_build_dir, tmp_path, cli):
    from segexport.runners import open_runner

    sizes = {"wide": (50, 90), "square": (64, 64)}
    for i, (stem, size) in enumerate(sizes.items()):
        Image.fromarray(open_dataset("synthetic", "val", size=size, seed=3 + i, length=1)[0].image).save(
            tmp_path / f"{stem}.png")
    images = [tmp_path / f"{stem}.png" for stem in sizes]
    plain = cli("predict", tiny_build_dir / "model.onnx", *images, "--out", tmp_path / "plain", "--json")
    refined = cli("predict", tiny_build_dir / "model.onnx", *images, "--out", tmp_path / "crf", "--crf", "--json")
    assert plain.code == refined.code == 0, plain.stderr + refined.stderr
    records = [json.loads(line) for line in refined.stdout.splitlines()]
    assert all(json.loads(line)["crf_changed"] is None for line in plain.stdout.splitlines())
    pre = Preprocess.from_dict(json.loads((tiny_build_dir / "reference" / "model.json").read_text())["preprocess"])
    with open_runner(tiny_build_dir / "model.onnx") as runner:
        for stem, record in zip(sizes, records, strict=True):
            rgb = np.asarray(Image.open(tmp_path / f"{stem}.png").convert("RGB"))
            logits = logits_at_size(runner.run(pre.image(rgb)[None])[0], rgb.shape[:2], pre.resize)
            by_hand = dense_crf(logits[None], rgb[None], DEEPLAB_V1)[0].argmax(0)  # deeplabv3p: v1's values
            with Image.open(tmp_path / "crf" / f"{stem}.png") as a, Image.open(tmp_path / "plain" / f"{stem}.png") as b:
                with_crf, without = np.asarray(a), np.asarray(b)
            assert np.array_equal(with_crf, by_hand) and np.array_equal(without, logits.argmax(0))
            changed = with_crf != without  # exactly where the CRF moved a label, and it did somewhere
            assert np.array_equal(changed, by_hand != logits.argmax(0)) and changed.any()
            assert record["crf_changed"] == float(changed.mean()) and record["size"] == list(sizes[stem])


def test_crf_params_come_from_the_artifacts_arch_recipe():
    pre = Preprocess(size=(64, 64))
    v1 = crf_params(load_recipe("deeplabv1"))
    assert v1 != DEEPLAB_V1  # the recipe tunes the paper's values for its data
    assert artifact_crf_params(ArtifactSpec(pre, ("a", "b"), "deeplabv1")) == v1
    assert artifact_crf_params(ArtifactSpec(pre, ("a", "b"), "deeplabv2")) == crf_params(load_recipe("deeplabv2"))
    assert artifact_crf_params(ArtifactSpec(pre, ("a", "b"), "deeplabv3p")) == DEEPLAB_V1
    assert artifact_crf_params(ArtifactSpec(pre, ("a", "b"), None)) == CrfParams() == DEEPLAB_V1
    assert artifact_crf_params(ArtifactSpec(pre, ("a", "b"), "../not-an-arch")) == DEEPLAB_V1


def test_a_model_with_the_crf_in_its_graph_refuses_a_second_one(tmp_path, cli):
    # A real 1x1-conv model whose metadata says what `segexport export --crf conv` writes.
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["logits"])], "crf",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2, 8, 8])],
        initializer=[numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    helper.set_model_props(model, {"input_size": "[8, 8]", "mean": "[0.5, 0.5, 0.5]", "std": "[0.5, 0.5, 0.5]",
                                   "classes": '["a", "b"]', "crf": "conv"})
    onnx.save(model, str(tmp_path / "model.onnx"))
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert predict_images(tmp_path / "model.onnx", [tmp_path / "x.png"], out=tmp_path / "o", progress=False)
    with pytest.raises(InputError, match=r"model.onnx: exported with the conv CRF in its graph.*drop --crf"):
        predict_images(tmp_path / "model.onnx", [tmp_path / "x.png"], out=tmp_path / "o", crf=True)
    result = cli("predict", tmp_path / "model.onnx", tmp_path / "x.png", "--crf", "--out", tmp_path / "o")
    assert_one_line_error(result, "model.onnx: exported with the conv CRF in its graph", "drop --crf")
