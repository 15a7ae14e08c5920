"""segexport.pipeline.build: a tiny build end to end, and exactly what a re-run redoes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from segexport.engine import engine_unavailable_reason
from segexport.hashing import file_sha256
from segexport.ownership import LEDGER_NAME
from segexport.pipeline import BuildOptions, build

QUICK = {"epochs": 1, "train_images": 32, "val_images": 8, "batch_size": 8}
OPTIONS = {"input_size": (64, 64), "fp16": True, "int8": True, "calib_images": 8, "method": "minmax",
           "max_fallback": 0, "overrides": QUICK}
VARIANTS = ["onnx", "openvino", "onnx-fp16", "pytorch-fp16", "onnx-int8-tensorrt", "onnx-int8-cpu", "openvino-int8",
            "trt-fp16", "trt-int8"]
MADE = ["reference", "export", "fp16", "int8-tensorrt", "int8-cpu", "int8-openvino", "tensorrt-check"]
ARTIFACTS = ["reference/checkpoint.safetensors", "model.onnx", "model.fp16.onnx", "model.int8.tensorrt.onnx",
             "model.int8.cpu.onnx", "model.int8.openvino.onnx", "calibration.cache", "calibration.json"]


def run_build(**options) -> dict:
    return build(BuildOptions("deeplabv3p", **options))


def statuses(report: dict) -> dict[str, str]:
    return {s["stage"]: s["status"] for s in report["stages"]}


def hashes(folder: Path) -> dict[str, str]:
    return {name: file_sha256(folder / name) for name in ARTIFACTS}


@pytest.fixture(scope="module")
def first_build(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted tiny build, made at ``ROOT/build`` with ROOT as the working folder."""
    root = tmp_path_factory.mktemp("first")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        report = run_build(out="build", triton_repo="repo", **OPTIONS)
    return root / "build", report


@pytest.fixture
def copy_of_build(first_build, tmp_path, monkeypatch) -> Path:
    """A copy of the first build at the same relative path (``build``), the working folder beside it."""
    shutil.copytree(first_build[0], tmp_path / "build")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "build"


def test_first_build_writes_manifest_report_and_every_variant(first_build):
    folder, report = first_build
    manifest = json.loads((folder / "build.json").read_text())
    written = json.loads((folder / "report.json").read_text())
    assert [v["name"] for v in manifest["variants"]] == VARIANTS
    assert [v["name"] for v in written["variants"]] == VARIANTS
    assert manifest["input_size"] == [64, 64] and manifest["val_images"] == 8 and manifest["reference"] == "reference"
    assert all((folder / name).is_file() for name in ARTIFACTS)
    assert all(statuses(report)[stage] == "ran" for stage in [*MADE, "verify"])
    by_name = {v["name"]: v for v in manifest["variants"]}
    assert by_name["onnx-int8-cpu"]["budget_pts"] == 0.5 and by_name["onnx-int8-tensorrt"]["budget_pts"] == 1.0
    calibration = {"method": "minmax", "images": 8, "source": "synthetic"}
    assert by_name["onnx-int8-cpu"]["details"]["calibration"] == calibration
    notes = written["notes"]  # OpenVINO's inference precision: the whole graph, or what INT8 left unquantized
    assert any(n.startswith("openvino: openvino computed the graph in ") for n in notes), notes
    assert any(n.startswith("openvino-int8: openvino computed the layers left unquantized in ") for n in notes), notes
    reason = engine_unavailable_reason()
    if reason is not None:  # no GPU here: the engines are listed, skipped, with the trtexec line
        assert by_name["trt-int8"]["skipped"] == reason and by_name["trt-int8"]["artifact"] is None
        assert by_name["trt-int8"]["details"]["trtexec"].startswith("trtexec --onnx=build/model.int8.tensorrt.onnx")
        assert statuses(report)["trt-int8"] == "skipped"
    last = json.loads((folder / ".stages" / "last_run.json").read_text())
    assert [s["stage"] for s in last["stages"]] == [s["stage"] for s in report["stages"]]


def test_triton_repo_is_written_at_the_end_of_the_build(first_build):
    folder, report = first_build
    served = [f"deeplabv3p_{v}" for v in VARIANTS if not v.startswith(("pytorch", "trt"))]
    assert report["triton"]["models"] == served and statuses(report)["triton"] == "ran"
    repo = folder.parent / "repo"
    assert sorted(p.name for p in repo.iterdir() if p.name != LEDGER_NAME) == sorted([*served, "README.deeplabv3p.md"])
    assert 'backend: "openvino"' in (repo / "deeplabv3p_openvino-int8" / "config.pbtxt").read_text()
    assert (repo / "deeplabv3p_openvino-int8" / "1" / "model.onnx").read_bytes() == \
        (folder / "model.int8.openvino.onnx").read_bytes()


def test_rerun_with_nothing_changed_only_verifies(first_build, copy_of_build):
    before = hashes(copy_of_build)
    report = run_build(out="build", **OPTIONS)
    assert {stage: statuses(report)[stage] for stage in MADE} == dict.fromkeys(MADE, "cached")
    assert statuses(report)["verify"] == "ran"
    assert hashes(copy_of_build) == before
    first = {v["name"]: v["miou"] for v in first_build[1]["variants"]}
    assert {v["name"]: v["miou"] for v in report["variants"]} == first


def test_budget_change_redoes_only_verify(copy_of_build):
    report = run_build(out="build", **{**OPTIONS, "budget_int8": 50.0, "budget_fp16": 20.0})
    assert {stage: statuses(report)[stage] for stage in MADE} == dict.fromkeys(MADE, "cached")
    budgets = {v["name"]: v["budget_pts"] for v in report["variants"]}
    assert budgets["onnx-int8-tensorrt"] == budgets["onnx-int8-cpu"] == budgets["openvino-int8"] == 50.0
    assert budgets["onnx-fp16"] == 20.0


def test_calibration_change_redoes_exactly_the_int8_stages(copy_of_build):
    report = run_build(out="build", **{**OPTIONS, "calib_images": 6})
    got = statuses(report)
    assert [got[s] for s in MADE] == ["cached", "cached", "cached", "ran", "ran", "ran", "ran"]
    record = json.loads((copy_of_build / ".stages" / "int8-tensorrt.json").read_text())
    assert record["inputs"]["calib_images"] == 6


def test_damaged_artifact_is_rebuilt_bitwise_and_leftovers_removed(copy_of_build):
    before = hashes(copy_of_build)
    target = copy_of_build / "model.int8.cpu.onnx"
    target.write_bytes(target.read_bytes()[:-10])
    leftover = copy_of_build / ".model.int8.cpu.onnx.segexport-tmp.k1ll3d.part"  # what a killed atomic write leaves
    leftover.write_bytes(b"partial")
    report = run_build(out="build", **OPTIONS)
    got = statuses(report)
    assert [got[s] for s in MADE] == ["cached", "cached", "cached", "cached", "ran", "cached", "cached"]
    assert hashes(copy_of_build) == before
    assert not leftover.exists()


def test_random_init_latency_only_build(tmp_path):
    report = run_build(out=tmp_path / "b", random_init=True, skip_accuracy=True, int8=True, target="cpu",
                   input_size=(64, 64), calib_images=4, method="minmax", overrides={"val_images": 4})
    assert [v["name"] for v in report["variants"]] == ["onnx", "onnx-int8-cpu"]
    assert report["accuracy_measured"] is False and report["random_init"] is True
    assert all(v["latency_ms"]["p50"] > 0 for v in report["variants"])
    record = json.loads((tmp_path / "b" / ".stages" / "reference.json").read_text())
    assert record["inputs"]["mode"] == "random-init"
    assert json.loads((tmp_path / "b" / "build.json").read_text())["random_init"] is True


def test_weights_file_becomes_the_reference_checkpoint(tiny_checkpoint, tmp_path):
    weights = tiny_checkpoint / "checkpoint.safetensors"
    report = run_build(checkpoint=weights, size="tiny", input_size=(64, 64), out=tmp_path / "b", overrides={"val_images": 4})
    config = json.loads((tmp_path / "b" / "reference" / "model.json").read_text())
    assert config["training"]["source"] == f"weights:{weights}"
    assert config["build_args"]["size"] == "tiny" and len(config["classes"]) == 8
    assert file_sha256(tmp_path / "b" / "reference" / "checkpoint.safetensors") == file_sha256(weights)
    assert report["variants"][0]["name"] == "onnx" and report["variants"][0]["agreement"] >= 0.999
