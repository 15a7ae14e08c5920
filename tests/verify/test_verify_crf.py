"""``+crf`` rows of ``verify_build``: a tiny DeepLab v1 build (recipe ``crf = "host"``) gets them,
a DeepLabv3+ build does not; under torchrun they equal a single process's."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from dist_helpers import launch
from rich.console import Console

from segexport.postprocess import crf_params, crf_row
from segexport.recipe import load_recipe, resolve_recipe
from segexport.verify.render import print_report_table
from segexport.verify.report import verify_build

IMAGES = 8
ROW_KEYS = {"variant", "base", "images", "miou", "pixel_acc", "trimap_miou", "base_miou", "base_pixel_acc",
            "base_trimap_miou", "miou_gain_pts", "trimap_gain_pts", "changed_pixels", "crf_ms_per_image",
            "crf_ms_p90", "trimap_band_px", "crf", "engine_ms_p50", "error"}
EXACT = ("images", "miou", "pixel_acc", "trimap_miou", "base_miou", "base_pixel_acc", "base_trimap_miou",
         "miou_gain_pts", "trimap_gain_pts", "changed_pixels", "trimap_band_px", "crf")


def _seeded_deeplabv1(out: Path) -> Path:
    """A tiny deeplabv1 checkpoint folder (64x64) with seeded untrained weights.

    Untrained on purpose: a tiny deeplabv1 trained for a few epochs at 64x64 still labels every
    pixel background, where the CRF has nothing to change; random logits give it work.
    """
    from segexport.checkpoint import ModelConfig, save_checkpoint
    from segexport.data import Preprocess, open_dataset
    from segexport.models import build_model

    classes = tuple(open_dataset("synthetic", "val", size=(64, 64), seed=0, length=1).classes)
    args = {k: v for k, v in resolve_recipe(load_recipe("deeplabv1")).model_args(len(classes)).items() if v is not None}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("deeplabv1", **args).eval()
    config = ModelConfig(arch="deeplabv1", build_args=args, classes=classes, preprocess=Preprocess(size=(64, 64)),
                         training={"random_init": True, "seed": 0})
    return save_checkpoint(out, model, config, {})


@pytest.fixture(scope="module")
def v1_build(tmp_path_factory) -> Path:
    """A hand-assembled tiny deeplabv1 build (64x64): reference, model.onnx, a CPU INT8 model, and
    an onnx, pytorch-fp16, onnx-int8-cpu and a skipped TensorRT variant."""
    from build_helpers import assemble_build

    root = tmp_path_factory.mktemp("v1") / "deeplabv1"
    checkpoint = _seeded_deeplabv1(root / "reference")
    return assemble_build(checkpoint, root, arch="deeplabv1", images=IMAGES, onnx_budget=1.0)


def _copy(build: Path, target: Path) -> Path:
    shutil.copytree(build, target)
    return target


@pytest.fixture(scope="module")
def v1_report(v1_build, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    build = _copy(v1_build, tmp_path_factory.mktemp("verified") / "build")
    return build, verify_build(build, progress=False, latency_runs=2)


def test_deeplabv1_build_has_crf_rows(v1_report):
    build, report = v1_report
    rows = report["crf"]
    assert [r["variant"] for r in rows] == ["pytorch+crf", "onnx+crf", "onnx-int8-cpu+crf"]
    measured = {row["name"]: row for row in [report["reference"], *report["variants"]]}
    params = crf_params(load_recipe("deeplabv1")).to_dict()
    for row in rows:
        assert set(row) == ROW_KEYS, set(row) ^ ROW_KEYS
        assert row["error"] is None and row["images"] == IMAGES and row["crf"] == params
        numbers = [row[k] for k in ROW_KEYS - {"variant", "base", "crf", "error"}]
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers), row
        base = measured[row["base"]]
        # Without the CRF the row scores the very labels of its variant's own row.
        assert row["base_miou"] == base["miou"] and row["base_pixel_acc"] == base["pixel_acc"]
        assert row["miou_gain_pts"] == 100.0 * (row["miou"] - row["base_miou"])
        assert row["engine_ms_p50"] == base["latency_ms"]["p50"] and row["crf_ms_p90"] >= row["crf_ms_per_image"] > 0
        assert 0.0 < row["changed_pixels"] < 1.0
    assert report["pass"] is True  # CRF rows carry no budget
    assert any("no +crf row for pytorch-fp16" in note for note in report["notes"])
    assert json.loads((build / "report.json").read_text()) == report


def test_crf_rows_equal_the_single_runner_crf_row(v1_report):
    from segexport.checkpoint import load_checkpoint
    from segexport.precision.evaluate import load_val
    from segexport.runners import open_runner

    build, report = v1_report
    _, config = load_checkpoint(build / "reference")
    val = load_val("synthetic", config.preprocess, count=IMAGES, seed=0, num_classes=len(config.classes))
    params = crf_params(load_recipe("deeplabv1"))
    with open_runner(build / "model.onnx") as runner:
        want = crf_row("onnx", runner, val.images, val.masks, config.preprocess, len(config.classes), params)
    got = next(row for row in report["crf"] if row["base"] == "onnx")
    assert {k: got[k] for k in EXACT} == {k: want[k] for k in EXACT}


def test_crf_rows_in_report_md_and_terminal_table(v1_report):
    build, report = v1_report
    markdown = (build / "report.md").read_text()
    assert "## Dense CRF (host)" in markdown
    assert all(f"| {row['variant']} | {row['miou']:.4f} | {row['miou_gain_pts']:+.3f} |" in markdown
               for row in report["crf"])
    console = Console(record=True, width=220)
    print_report_table(report, console)
    text = console.export_text()
    assert "Dense CRF (host)" in text and all(row["variant"] in text for row in report["crf"])


def test_no_crf_rows_without_accuracy_or_for_deeplabv3p(v1_build, tiny_build_dir, tmp_path):
    latency_only = verify_build(_copy(v1_build, tmp_path / "v1"), skip_accuracy=True, progress=False, latency_runs=1)
    assert latency_only["crf"] is None
    assert any('sets crf = "host"; no +crf rows without accuracy' in note for note in latency_only["notes"])
    v3p = _copy(tiny_build_dir, tmp_path / "v3p")
    report = verify_build(v3p, images=4, progress=False, latency_runs=1)
    assert report["accuracy_measured"] is True and report["crf"] is None
    assert not any("crf" in note for note in report["notes"])
    assert "Dense CRF" not in (v3p / "report.md").read_text()


def crf_job(ctx: Any, build: Path, images: int) -> list[dict[str, Any]]:
    """This process's ``+crf`` rows of one verification (spawned: imported by module name)."""
    return verify_build(build, images=images, progress=False, latency_runs=1)["crf"]


def test_sharded_crf_rows_equal_one_process(v1_build, tmp_path):
    # 24 images in blocks of 16: rank 0 refines images 0-15, rank 1 images 16-23.
    single = crf_job(None, _copy(v1_build, tmp_path / "single"), 24)
    ranks = launch(crf_job, tmp_path, _copy(v1_build, tmp_path / "build"), 24)
    for alone, main, other in zip(single, *ranks, strict=True):
        assert {k: main[k] for k in EXACT} == {k: other[k] for k in EXACT} == {k: alone[k] for k in EXACT}
        assert main["crf_ms_per_image"] > 0 and other["crf_ms_per_image"] == main["crf_ms_per_image"]
