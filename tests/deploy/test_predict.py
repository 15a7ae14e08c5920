"""``segexport predict``: masks equal to the verify step's labels, any image size, overlays, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import assert_one_line_error
from PIL import Image

from segexport.data import Preprocess, open_dataset
from segexport.deploy.predict import predict_images
from segexport.deploy.triton_python_model import labels_at_size
from segexport.engine import engine_unavailable_reason
from segexport.errors import InputError

REASON = engine_unavailable_reason()


def _val_images(tiny_build_dir, folder, count=6):
    """The build's first val images (at the input size) as PNG files, and the verify step's inputs."""
    from segexport.checkpoint import ModelConfig
    from segexport.precision.evaluate import load_val

    data = json.loads((tiny_build_dir / "reference" / "model.json").read_text())
    config = ModelConfig.from_dict(data, "model.json")
    val = load_val("synthetic", config.preprocess, count=count, seed=0, num_classes=len(config.classes))
    folder.mkdir()
    for i, image in enumerate(val.images):
        Image.fromarray(image).save(folder / f"val_{i}.png")
    return val


@pytest.mark.parametrize("artifact", ["model.onnx", "model.int8.cpu.onnx"])
def test_masks_equal_the_verify_steps_labels(tiny_build_dir, tmp_path, artifact):
    from segexport.runners import open_runner
    from segexport.verify.parity import predict_runner

    val = _val_images(tiny_build_dir, tmp_path / "images")
    with open_runner(tiny_build_dir / artifact) as runner:
        verified = predict_runner(runner, val.normalised(0, len(val))).labels
    results = predict_images(tiny_build_dir / artifact, [tmp_path / "images"], out=tmp_path / "masks", progress=False)
    assert [r.image.name for r in results] == [f"val_{i}.png" for i in range(len(val))]
    for i, r in enumerate(results):
        with Image.open(r.mask) as mask:
            assert mask.mode == "P"
            assert np.array_equal(np.asarray(mask), verified[i])


def test_any_image_size_gets_a_mask_of_its_size_and_an_overlay(tiny_build_dir, tmp_path, cli):
    from segexport.runners import open_runner

    sample = open_dataset("synthetic", "val", size=(50, 90), seed=3, length=1)[0]
    Image.fromarray(sample.image).save(tmp_path / "wide.png")
    result = cli("predict", tiny_build_dir / "model.onnx", tmp_path / "wide.png", "--out", tmp_path / "out",
                 "--overlay", "--json")
    assert result.code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["size"] == [50, 90] and record["mask"] == str(tmp_path / "out" / "wide.png")
    with Image.open(tmp_path / "out" / "wide.png") as mask, Image.open(record["overlay"]) as overlay:
        assert mask.size == overlay.size == (90, 50)
        labels = np.asarray(mask)
    # The same as preprocessing by hand, running at the input size and resizing the logits back.
    pre = Preprocess.from_dict(json.loads((tiny_build_dir / "reference" / "model.json").read_text())["preprocess"])
    with open_runner(tiny_build_dir / "model.onnx") as runner:
        logits = runner.run(pre.image(sample.image)[None])[0]
    assert np.array_equal(labels, labels_at_size(logits, (50, 90), "resize"))


def test_missing_image_clashing_names_and_missing_engine_backend(tiny_build_dir, build_with_engine, tmp_path, cli):
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert_one_line_error(cli("predict", tiny_build_dir / "model.onnx", tmp_path / "nope.png"), "nope.png")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "x.png")
    with pytest.raises(InputError, match="masks would overwrite each other"):
        predict_images(tiny_build_dir / "model.onnx", [tmp_path / "a", tmp_path / "b"], out=tmp_path / "o")
    if REASON is not None:  # here, a .plan cannot run: exit 2 naming what is missing
        engine = build_with_engine() / "model.int8.plan"
        assert_one_line_error(cli("predict", engine, image, "--out", tmp_path / "o"), "tensorrt")
