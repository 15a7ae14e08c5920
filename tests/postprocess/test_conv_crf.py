"""ConvCRF: equal to the host CRF when its window covers the image; exported with --crf conv it
passes the TensorRT check and matches PyTorch on ONNX Runtime."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error

from segexport.data import Preprocess, load_arrays, normalize_batch, open_dataset
from segexport.errors import ConfigError
from segexport.export.metadata import read_metadata
from segexport.export.onnx_export import export_onnx
from segexport.postprocess import (
    ConvCRF,
    CrfParams,
    crf_params,
    denormalize,
    dense_crf,
)
from segexport.postprocess.conv_crf import DEFAULT_ITERATIONS
from segexport.postprocess.export import float32_error, onnx_crf_error
from segexport.recipe import load_recipe
from segexport.runners.onnxruntime_runner import open_session

PARAMS = CrfParams(appearance_weight=5.0, appearance_xy=4.0, appearance_rgb=15.0,
                   smoothness_weight=3.0, smoothness_xy=1.0, iterations=5)
PRE = Preprocess(size=(6, 7))


def test_window_covering_the_image_equals_the_exact_host_crf() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    logits = rng.normal(0.0, 2.0, (2, 5, 6, 7)).astype(np.float32)
    crf = ConvCRF(PARAMS, mean=PRE.mean, std=PRE.std, window=13, dilation=1)  # every offset of 6x7
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


class _LogitsAndCrf(torch.nn.Module):
    """Decisive logits from a fixed 1x1 conv, then a ConvCRF: the CRF's graph in seconds."""

    def __init__(self, crf: ConvCRF) -> None:
        super().__init__()
        self.head = torch.nn.Conv2d(3, 5, 1)
        self.crf = crf

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.crf(10.0 * self.head(images), images)


def _scenes(count: int, side: int) -> np.ndarray:
    pre = Preprocess(size=(side, side))
    images, _ = load_arrays(open_dataset("synthetic", "val", size=(side, side), seed=1, length=count), pre)
    return normalize_batch(torch.from_numpy(images), pre).numpy()


@pytest.mark.parametrize("iterations", [DEFAULT_ITERATIONS, 10])
def test_exported_conv_crf_matches_pytorch_on_onnxruntime(tmp_path, iterations: int) -> None:
    torch.manual_seed(0)
    params = dataclasses.replace(crf_params(load_recipe("deeplabv1")), iterations=iterations)
    model = _LogitsAndCrf(ConvCRF(params, mean=PRE.mean, std=PRE.std)).eval()
    export_onnx(model, tmp_path / "crf.onnx", input_size=(48, 48))
    x = _scenes(4, 48)
    session = open_session(tmp_path / "crf.onnx")
    got = session.run(None, {"images": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
        exact = copy.deepcopy(model).double()(torch.from_numpy(x).double()).numpy()
    if iterations == DEFAULT_ITERATIONS:
        assert np.abs(got - want).max() <= 1e-4
    else:
        # Past a few iterations mean field amplifies rounding where two classes tie, in every
        # backend: ONNX Runtime must stay as close to the float64 result as PyTorch's float32 is
        # (a wrong operator would be off by whole logits, not a few times the float32 error).
        assert np.abs(got - exact).max() <= 4 * np.abs(want - exact).max()
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    singles = np.concatenate([session.run(None, {"images": x[i : i + 1]})[0] for i in range(4)])
    np.testing.assert_array_equal(singles, got)


def test_float32_error_grows_with_iterations() -> None:
    """The reported precision floor is float32 against float64 on the same logits: tiny for one
    step, larger for many, zero for none."""
    x = torch.from_numpy(_scenes(2, 32))
    logits = 10.0 * torch.randn(2, 5, 32, 32, generator=torch.Generator().manual_seed(0))
    base = crf_params(load_recipe("deeplabv1"))
    errors = [float32_error(ConvCRF(dataclasses.replace(base, iterations=n), mean=PRE.mean, std=PRE.std),
                            logits, x) for n in (0, 1, 10)]
    assert errors[0] == 0.0 and 0.0 < errors[1] < 1e-4 and errors[2] > errors[1]


def test_export_crf_conv_passes_trt_check(cli, tmp_path) -> None:
    out = tmp_path / "export"
    result = cli("export", "deeplabv1", "--input-size", "64x64", "--images", "4", "--crf", "conv",
                 "--out", out, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["crf"] == "conv" and summary["passed"] is True and summary["agreement"] >= 0.9999
    assert summary["verification"]["batch"]["identical"] is True
    report = summary["crf_vs_host"]
    assert (report["window"], report["dilation"]) == (7, 3) and 0.0 <= report["agreement_vs_host"] <= 1.0
    assert report["params"]["iterations"] == DEFAULT_ITERATIONS and report["host_iterations"] == 10
    assert 0.0 < report["float32_error"] < 1e-4
    assert report["onnx_crf_error"] <= report["onnx_crf_tolerance"] == 1e-4
    metadata = read_metadata(out / "model.onnx")
    assert metadata["crf"] == "conv" and json.loads(metadata["crf_params"])["iterations"] == DEFAULT_ITERATIONS
    check = cli("check", out / "model.onnx", "--json")
    assert check.code == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["findings"] == []


def test_export_crf_host_is_a_usage_error(cli, tmp_path) -> None:
    result = cli("export", "deeplabv1", "--crf", "host", "--out", tmp_path / "x")
    assert_one_line_error(result, "--crf", "conv", 'crf = "host"')


def test_onnx_crf_error_sees_a_crf_that_differs(tmp_path) -> None:
    """The cut graph's CRF is compared with the PyTorch CRF given: the one exported matches to
    1e-4, one with another smoothness weight does not."""
    params = dataclasses.replace(crf_params(load_recipe("deeplabv1")), iterations=DEFAULT_ITERATIONS)
    torch.manual_seed(0)
    model = _LogitsAndCrf(ConvCRF(params, mean=PRE.mean, std=PRE.std)).eval()
    export_onnx(model, tmp_path / "crf.onnx", input_size=(32, 32), output="both")
    x = torch.from_numpy(_scenes(2, 32))
    with torch.no_grad():
        logits = 10.0 * model.head(x)
    assert onnx_crf_error(tmp_path / "crf.onnx", model.crf, logits, x) <= 1e-4
    other = ConvCRF(dataclasses.replace(params, smoothness_weight=1.0), mean=PRE.mean, std=PRE.std).eval()
    assert onnx_crf_error(tmp_path / "crf.onnx", other, logits, x) > 0.1


def test_cli_default_iterations_are_the_library_default() -> None:
    import inspect

    from segexport.cli.export_cmd import export_command

    assert inspect.signature(export_command).parameters["crf_iterations"].default.default == DEFAULT_ITERATIONS
