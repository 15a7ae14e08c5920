"""The sensitivity pass on a model of known layer errors, and the budget on real INT8 models."""

from __future__ import annotations

import json
import re

import onnx
import pytest
from accuracy_helpers import scenes_labelled_by

from segexport.errors import CheckFailed, ConfigError
from segexport.precision.sensitivity import (
    default_max_fallback,
    keep_until_budget,
    rank_layers,
)
from segexport.precision.stage import quantize_model

# A fake variant: each layer adds a known logit error and costs a known mIoU (in points) when quantized.
ERROR = {"conv1": 0.5, "conv2": 4.0, "add": 0.0, "conv3": 2.0, "head": 8.0}
COST = {"conv1": 0.2, "conv2": 0.6, "add": 0.0, "conv3": 0.5, "head": 1.5}
LAYERS = [{"name": n, "op_type": "Add" if n == "add" else "Conv"} for n in ERROR]
REFERENCE = 0.80


def _proxy(kept):
    return sum(e for n, e in ERROR.items() if n not in kept)


def _miou(calls):
    def miou_of(kept):
        calls.append(list(kept))
        return REFERENCE - sum(c for n, c in COST.items() if n not in kept) / 100.0
    return miou_of


def test_layers_rank_by_the_error_they_remove():
    ranking = rank_layers(LAYERS, _proxy, _proxy([]), progress=False)
    assert [s.name for s in ranking] == ["head", "conv2", "conv3", "conv1", "add"]
    assert ranking[0].sensitivity == pytest.approx(8.0) and ranking[-1].sensitivity == 0.0


def test_fewest_most_sensitive_layers_are_kept_until_the_budget_holds():
    calls = []
    ranking = rank_layers(LAYERS, _proxy, _proxy([]), progress=False)
    outcome = keep_until_budget(ranking, _miou(calls), reference_miou=REFERENCE, budget=1.0, max_fallback=4, progress=False)
    # all quantized: 2.8 points; head kept: 1.3; head and conv2 kept: 0.7 <= 1.0
    assert outcome.passed and outcome.kept == ["head", "conv2"] and outcome.drop == pytest.approx(0.7)
    assert calls == [["head"], ["head", "conv2"]]
    assert [t["kept"] for t in outcome.tried] == [1, 2]
    assert outcome.to_dict()["kept_fp32"][0]["name"] == "head"


def test_max_fallback_limits_the_pass_and_the_best_candidate_is_reported():
    ranking = rank_layers(LAYERS, _proxy, _proxy([]), progress=False)
    outcome = keep_until_budget(ranking, _miou([]), reference_miou=REFERENCE, budget=0.1, max_fallback=10, progress=False)
    # 'add' removes no error and is never kept; with the other four kept the drop is 0
    assert outcome.passed and outcome.kept == ["head", "conv2", "conv3", "conv1"]
    outcome = keep_until_budget(ranking, _miou([]), reference_miou=REFERENCE, budget=0.1, max_fallback=2, progress=False)
    assert not outcome.passed and outcome.kept == ["head", "conv2"] and outcome.drop == pytest.approx(0.7)


def test_default_max_fallback_is_a_fifth():
    assert [default_max_fallback(n) for n in (0, 1, 4, 5, 41, 100)] == [0, 1, 1, 1, 8, 20]


@pytest.fixture(scope="module")
def own_labels(tiny_checkpoint, tmp_path_factory) -> str:
    """Val data labelled by the model itself: a positive drop for any variant that changes a pixel."""
    return f"folder:{scenes_labelled_by(tiny_checkpoint, tmp_path_factory.mktemp('scenes') / 'own', count=16)}"


def _percentile_51(onnx_path, out, *, budget: float, max_fallback: int, val: str):
    # percentile 51 clips half of every activation away
    return quantize_model(onnx_path, precision="int8", target="tensorrt", method="percentile", percentile=51.0,
                          calib_images=16, val=val, budget=budget, max_fallback=max_fallback, out=out, progress=False)


def _measured_drop(deeplab_onnx, out, val: str) -> float:
    """The drop with the pass off and a budget nothing breaks; > 0 on the model's own labels."""
    drop = _percentile_51(deeplab_onnx, out, budget=100.0, max_fallback=0, val=val).summary["accuracy"]["drop_points"]
    assert drop > 0, "INT8 with half of every activation clipped agreed with FP32 on every pixel"
    return drop


def test_broken_budget_fails_after_writing_the_files(deeplab_onnx, own_labels, tmp_path):
    budget = _measured_drop(deeplab_onnx, tmp_path / "measure", own_labels) / 2
    with pytest.raises(CheckFailed, match=r"INT8 tensorrt: mIoU drop .* points > budget .* \(--max-fallback 0\)"):
        _percentile_51(deeplab_onnx, tmp_path, budget=budget, max_fallback=0, val=own_labels)
    assert (tmp_path / "model.int8.tensorrt.onnx").is_file() and (tmp_path / "calibration.cache").is_file()
    summary = json.loads((tmp_path / "quantize.json").read_text())["variants"]["int8.tensorrt"]
    assert summary["passed"] is False and summary["fallback"] is None and summary["kept_fp32"] == []
    assert summary["accuracy"]["drop_points"] == 2 * budget and summary["budget_points"] == budget


@pytest.mark.slow
def test_sensitivity_pass_runs_on_a_real_model_and_lists_what_it_tried(deeplab_onnx, own_labels, tmp_path):
    # Below the measured drop the pass must run; whether 1 or 2 FP32 layers then hold the budget
    # depends on the trained weights, so both outcomes are checked for what they record.
    budget = _measured_drop(deeplab_onnx, tmp_path / "measure", own_labels) / 2
    try:
        _percentile_51(deeplab_onnx, tmp_path, budget=budget, max_fallback=2, val=own_labels)
    except CheckFailed as exc:
        assert re.search(r"with [12] layers kept in FP32 \(--max-fallback 2\)", str(exc)), str(exc)
    summary = json.loads((tmp_path / "quantize.json").read_text())["variants"]["int8.tensorrt"]
    fallback = summary["fallback"]
    assert fallback["max_fallback"] == 2 and fallback["candidates"] == summary["quantized_layers"] == len(fallback["ranking"])
    tried = [t["kept"] for t in fallback["tried"]]
    assert tried == ([1] if summary["passed"] and len(summary["kept_fp32"]) == 1 else [1, 2])
    assert 1 <= len(summary["kept_fp32"]) <= 2 and summary["passed"] is (summary["accuracy"]["drop_points"] <= budget)
    sensitivities = [r["sensitivity"] for r in fallback["ranking"]]
    assert sensitivities == sorted(sensitivities, reverse=True)
    kept_in_model = json.loads({p.key: p.value for p in onnx.load(summary["output"]).metadata_props}["kept_fp32"])
    assert sorted(summary["kept_fp32"]) == kept_in_model


@pytest.mark.parametrize("options, match", [
    ({"budget": -1.0}, "--budget"),
    ({"max_fallback": -1}, "--max-fallback"),
    ({"method": "minmax", "percentile": 99.0}, "--percentile applies"),
    ({"method": "percentile", "percentile": 30.0}, "--percentile must be"),
    ({"method": "kl"}, "--method must be"),
    ({"target": "gpu"}, "--target must be"),
    ({"val_images": 0}, "--val-images"),
])
def test_bad_options_are_config_errors(deeplab_onnx, tmp_path, options, match):
    with pytest.raises(ConfigError, match=match):
        quantize_model(deeplab_onnx, precision="int8", out=tmp_path, progress=False, **{"calib_images": 4, **options})
