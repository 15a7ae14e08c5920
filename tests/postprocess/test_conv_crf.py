"""ConvCRF: equal to the host CRF when its window covers the image; exported with --crf conv it
passes the TensorRT check and matches PyTorch on ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error

from segexport.data import Preprocess, normalize_batch
from segexport.errors import ConfigError
from segexport.export.metadata import read_metadata
from segexport.export.source import resolve_source
from segexport.export.verify_onnx import open_session
from segexport.postprocess import (
    ConvCRF,
    CrfModel,
    CrfParams,
    crf_params,
    denormalize,
    dense_crf,
)
from segexport.recipe import load_recipe

PARAMS = CrfParams(appearance_weight=5.0, appearance_xy=4.0, appearance_rgb=15.0,
                   smoothness_weight=3.0, smoothness_xy=1.0, iterations=5)
PRE = Preprocess(size=(6, 7))


def test_window_covering_the_image_equals_the_exact_host_crf() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    logits = rng.normal(0.0, 2.0, (2, 5, 6, 7)).astype(np.float32)
    crf = ConvCRF(PARAMS, mean=PRE.mean, std=PRE.std, window=13)  # every offset of a 6x7 image
    x = normalize_batch(torch.from_numpy(images), PRE)
    with torch.no_grad():
        conv = crf(torch.from_numpy(logits), x).numpy()
    host = dense_crf(logits, images, PARAMS, method="exact")
    np.testing.assert_allclose(conv, host, rtol=0, atol=1e-4)
    assert np.abs(conv - logits).max() > 0.5


def test_denormalize_inverts_normalize_batch() -> None:
    images = np.random.default_rng(1).integers(0, 256, (3, 6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(denormalize(normalize_batch(torch.from_numpy(images), PRE), PRE), images)


def test_bad_window_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="odd integer"):
        ConvCRF(PARAMS, mean=PRE.mean, std=PRE.std, window=6)


def test_export_crf_conv_passes_trt_check_and_matches_pytorch(cli, tmp_path) -> None:
    out = tmp_path / "export"
    result = cli("export", "deeplabv1", "--input-size", "64x64", "--images", "4", "--crf", "conv",
                 "--out", out, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["crf"] == "conv" and summary["passed"] is True
    assert summary["max_logit_error"] <= 1e-4
    assert summary["verification"]["batch"]["identical"] is True
    report = summary["crf_vs_host"]
    assert report["window"] == 7 and 0.0 <= report["agreement_vs_host"] <= 1.0
    assert read_metadata(out / "model.onnx")["crf"] == "conv"

    check = cli("check", out / "model.onnx", "--json")
    assert check.code == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["findings"] == []

    # The same seeded model + ConvCRF in PyTorch vs the file on ONNX Runtime, on new inputs.
    src = resolve_source("deeplabv1", seed=0)
    pre = Preprocess(size=(64, 64))
    model = CrfModel(src.model, ConvCRF(crf_params(load_recipe("deeplabv1")), mean=pre.mean, std=pre.std)).eval()
    images = np.random.default_rng(2).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    x = normalize_batch(torch.from_numpy(images), pre)
    with torch.no_grad():
        want = model(x).numpy()
    got = open_session(out / "model.onnx").run(None, {"images": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4


def test_export_crf_host_is_a_usage_error(cli, tmp_path) -> None:
    result = cli("export", "deeplabv1", "--crf", "host", "--out", tmp_path / "x")
    assert_one_line_error(result, "--crf", "conv", 'crf = "host"')
