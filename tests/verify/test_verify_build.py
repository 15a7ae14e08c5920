"""``verify_build`` and ``segexport verify`` on a small hand-assembled build folder (tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from build_helpers import as_if_segexport_wrote
from cli_helpers import assert_one_line_error
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segexport.verify.manifest import VariantSpec, read_manifest, write_manifest
from segexport.verify.report import verify_build

VARIANT_KEYS = {"name", "backend", "precision", "target", "artifact", "miou", "miou_drop_pts", "agreement",
                "max_abs_logit_error", "latency_ms", "throughput_ips", "speedup_vs_pytorch", "budget_pts", "pass",
                "skipped", "pixel_acc", "per_class_iou", "mean_abs_logit_error", "peak_rss_mb"}


def _copy(build, tmp_path_factory, name):
    target = tmp_path_factory.mktemp(name) / "build"
    shutil.copytree(build, target)
    return target


@pytest.fixture(scope="module")
def verified(tiny_build_dir, tmp_path_factory):
    """(build folder, report, JUnit path) of one verification of a copy of the tiny build."""
    build = _copy(tiny_build_dir, tmp_path_factory, "verified")
    junit = build.parent / "verify.xml"
    return build, verify_build(build, junit=junit, progress=False, latency_runs=5), junit


def _constant_class_model(path, classes: int = 8, size: int = 64):
    """A real but useless model: a 1x1 Conv with zero weights whose bias always picks class 1."""
    bias = np.zeros(classes, dtype=np.float32)
    bias[1] = 1.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w", "b"], ["logits"])], "constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes, size, size])],
        initializer=[numpy_helper.from_array(np.zeros((classes, 3, 1, 1), np.float32), "w"),
                     numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def test_report_schema_and_files(verified):
    build, report, _ = verified
    assert report["arch"] == "deeplabv3p" and report["pass"] is True and report["accuracy_measured"] is True
    assert report["images"] == 8 and report["input_size"] == [64, 64] and report["data"] == "synthetic"
    assert {"miou", "pixel_acc", "latency_ms"} <= set(report["reference"])
    assert report["reference"]["backend"] == "torch" and report["reference"]["precision"] == "fp32"
    assert [n for n in report["notes"] if n.startswith("reference:")] == [
        "reference: PyTorch FP32 on the reference checkpoint, the same inputs as every variant"]
    assert [v["name"] for v in report["variants"]] == ["onnx", "pytorch-fp16", "onnx-int8-cpu", "trt-int8"]
    for row in report["variants"]:
        assert VARIANT_KEYS <= set(row), VARIANT_KEYS - set(row)
    assert {"device", "threads", "versions", "methods"} <= set(report)
    assert report["versions"]["onnxruntime"] and "RSS" in report["methods"]["memory"]
    assert json.loads((build / "report.json").read_text()) == report
    markdown = (build / "report.md").read_text()
    assert "| variant | backend |" in markdown and "](parity.png)" in markdown and "](latency.png)" in markdown
    assert all(f"| {v['name']} |" in markdown for v in report["variants"])
    with Image.open(build / "parity.png") as parity, Image.open(build / "latency.png") as chart:
        assert parity.format == chart.format == "PNG"
        assert parity.height > 3 * 128 and chart.height > 4 * 20  # 3 measured variants; 4 timed rows
    assert report["files"] == {"report_md": "report.md", "parity_png": "parity.png", "latency_png": "latency.png"}


def test_measured_rows(verified):
    _, report, _ = verified
    ref = report["reference"]
    rows = {v["name"]: v for v in report["variants"]}
    onnx_row = rows["onnx"]
    assert onnx_row["agreement"] >= 0.999 and onnx_row["max_abs_logit_error"] < 1e-3
    assert onnx_row["miou_drop_pts"] == pytest.approx(100 * (ref["miou"] - onnx_row["miou"]))
    for row in (onnx_row, rows["pytorch-fp16"], rows["onnx-int8-cpu"]):
        latency = row["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] and row["runs"] == 5
        assert row["speedup_vs_pytorch"] == pytest.approx(ref["latency_ms"]["p50"] / latency["p50"])
        assert row["throughput_ips"] > 0 and row["throughput_batch"] == 8 and row["pass"] is True
        assert set(row["per_class_iou"]) == {"background", "disk", "square", "triangle", "ring", "cross", "star",
                                             "crescent"}
    assert "true half" in rows["pytorch-fp16"]["device"] and rows["onnx-int8-cpu"]["precision"] == "int8"
    skipped = rows["trt-int8"]
    assert skipped["skipped"] == "no CUDA device (test build)" and skipped["pass"] is None
    assert skipped["latency_ms"] is None and skipped["miou"] is None


def test_junit_has_one_testcase_per_variant(verified):
    _, report, junit = verified
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [v["name"] for v in report["variants"]]
    assert suite.get("tests") == "4" and suite.get("failures") == "0" and suite.get("skipped") == "1"
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert [c.get("name") for c in skipped] == ["trt-int8"]
    assert skipped[0].find("skipped").get("message") == "no CUDA device (test build)"


def test_skip_accuracy_measures_latency_only(tiny_build_dir, tmp_path_factory):
    build = _copy(tiny_build_dir, tmp_path_factory, "latency-only")
    (build / "parity.png").write_bytes(b"stale")
    as_if_segexport_wrote(build / "parity.png")  # an earlier verify's picture
    report = verify_build(build, skip_accuracy=True, progress=False, latency_runs=3)
    assert report["accuracy_measured"] is False and report["pass"] is True and report["images"] == 0
    measured = [v for v in report["variants"] if not v["skipped"]]
    assert [v["name"] for v in measured] == ["onnx", "onnx-int8-cpu"]
    skipped = {v["name"]: v["skipped"] for v in report["variants"] if v["skipped"]}
    assert skipped["pytorch-fp16"].startswith("accuracy not measured, and PyTorch's float16 on a CPU")
    assert all(v["miou"] is None and v["pass"] is None and v["runs"] == 3 for v in measured)
    assert not (build / "parity.png").exists() and (build / "latency.png").is_file()


def test_a_broken_budget_or_a_broken_artifact_fails_with_exit_1(cli, tiny_build_dir, tmp_path_factory):
    build = _copy(tiny_build_dir, tmp_path_factory, "broken")
    _constant_class_model(build / "model.constant.onnx")
    (build / "model.corrupt.onnx").write_bytes(b"not an ONNX model")  # a build wrote a model that does not load
    for name in ("model.constant.onnx", "model.corrupt.onnx"):
        as_if_segexport_wrote(build / name)
    manifest = read_manifest(build)
    broken = [VariantSpec("onnx-constant", "onnxruntime", "fp32", None, "model.constant.onnx", 0.0),
              VariantSpec("onnx-corrupt", "onnxruntime", "fp32", None, "model.corrupt.onnx", 1.0)]
    write_manifest(build, dataclasses.replace(manifest, variants=[*manifest.variants, *broken]))
    junit = build.parent / "verify.xml"
    result = cli("verify", build, "--junit", junit, "--runs", "3", "--no-progress")
    assert_one_line_error(result, "2 variant(s) failed: onnx-constant (FAIL), onnx-corrupt (ERROR)", "report.md",
                          code=1)
    assert "onnx-constant" in result.stdout and "FAIL" in result.stdout and "ERROR" in result.stdout
    report = json.loads((build / "report.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    assert report["pass"] is False and rows["onnx-constant"]["pass"] is False and rows["onnx-corrupt"]["pass"] is False
    assert rows["onnx-constant"]["miou_drop_pts"] > 0 and rows["onnx"]["pass"] is True
    assert "ONNX Runtime cannot load it" in rows["onnx-corrupt"]["error"] and rows["onnx-corrupt"]["miou"] is None
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert [n for n, c in cases.items() if c.find("failure") is not None] == ["onnx-constant"]
    assert [n for n, c in cases.items() if c.find("error") is not None] == ["onnx-corrupt"]
    assert "> budget 0 points" in cases["onnx-constant"].find("failure").get("message")


def test_cli_json_output(cli, tiny_build_dir, tmp_path_factory):
    build = _copy(tiny_build_dir, tmp_path_factory, "json")
    result = cli("verify", build, "--json", "--images", "4", "--runs", "2")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pass"] is True and report["images"] == 4
    assert report == json.loads((build / "report.json").read_text())


def test_bad_build_dirs_are_one_line_exit_2(cli, tiny_build_dir, tmp_path):
    missing = tmp_path / "nowhere"
    assert_one_line_error(cli("verify", missing), str(missing), "not a build folder")
    assert_one_line_error(cli("verify", tmp_path), "build.json: missing")
    build = tmp_path / "build"
    shutil.copytree(tiny_build_dir, build)
    (build / "model.int8.cpu.onnx").unlink()
    assert_one_line_error(cli("verify", build), "model.int8.cpu.onnx: listed in build.json (onnx-int8-cpu) but missing")
    assert_one_line_error(cli("verify", tiny_build_dir, "--images", "0"), "--images must be an integer >= 1")


@pytest.mark.parametrize("damage", ["truncated", "fp32-in-place-of-int8"])
def test_an_artifact_that_is_not_what_the_build_wrote_is_refused(cli, tiny_build_dir, tmp_path_factory, damage):
    build = _copy(tiny_build_dir, tmp_path_factory, damage)
    int8 = build / "model.int8.cpu.onnx"
    if damage == "truncated":
        int8.write_bytes(int8.read_bytes()[:1000])
    else:
        shutil.copyfile(build / "model.onnx", int8)
    before = {p: p.read_bytes() for p in build.rglob("*") if p.is_file()}
    result = cli("verify", build, "--no-progress")
    assert_one_line_error(result, str(int8), "not written by segexport, or changed since", "re-run `segexport build")
    assert {p: p.read_bytes() for p in build.rglob("*") if p.is_file()} == before


def test_a_graph_of_another_precision_is_refused_even_without_records(cli, tiny_build_dir, tmp_path_factory):
    build = _copy(tiny_build_dir, tmp_path_factory, "no-records")
    for ledger in build.rglob(".segexport-files.json"):  # a folder copied without segexport's records
        ledger.unlink()
    shutil.copyfile(build / "model.onnx", build / "model.int8.cpu.onnx")
    result = cli("verify", build, "--no-progress")
    assert_one_line_error(result, "model.int8.cpu.onnx: an fp32 graph, but build.json lists it as onnx-int8-cpu (int8)")
