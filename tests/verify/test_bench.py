"""``segexport bench`` on real artifacts, and the timing/memory/verdict helpers behind it and verify."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import assert_one_line_error

from segexport.precision.evaluate import Prediction
from segexport.verify.latency import batch_of, current_rss
from segexport.verify.parity import judge, most_disagreeing


def test_bench_times_a_checkpoint_and_its_onnx_without_data(cli, tiny_build_dir):
    result = cli("bench", tiny_build_dir / "reference", tiny_build_dir / "model.onnx", "--runs", "4", "--batch", "2",
                 "--json", "--threads", "1")
    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    torch_row, onnx_row = out["rows"]
    assert (torch_row["backend"], onnx_row["backend"]) == ("torch", "onnxruntime")
    assert out["reference"] == str(tiny_build_dir / "reference") and out["threads"] == 1
    assert torch_row["speedup_vs_pytorch"] == 1.0
    assert onnx_row["speedup_vs_pytorch"] == pytest.approx(torch_row["latency_ms"]["p50"] / onnx_row["latency_ms"]["p50"])
    for row in out["rows"]:
        assert row["input_size"] == [64, 64] and row["runs"] == 4 and row["throughput_batch"] == 2
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p99"] and row["throughput_ips"] > 0


def test_bench_errors_are_one_line(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert_one_line_error(cli("bench", tmp_path / "notes.txt"), "unknown artifact kind '.txt'")
    assert_one_line_error(cli("bench", tmp_path / "nothing.onnx"), "nothing.onnx: not found")


def test_judge_compares_the_drop_with_the_budget():
    assert judge({"miou_drop_pts": 0.5, "budget_pts": 0.5}) is True
    assert judge({"miou_drop_pts": 0.5001, "budget_pts": 0.5}) is False
    assert judge({"miou_drop_pts": -2.0, "budget_pts": 0.0}) is True
    assert judge({"miou_drop_pts": 3.0, "budget_pts": None}) is None
    assert judge({"miou_drop_pts": None, "budget_pts": 1.0}) is None
    assert judge({"miou_drop_pts": 9.0, "budget_pts": 1.0, "skipped": "no GPU"}) is None
    assert judge({"miou_drop_pts": None, "budget_pts": 1.0, "error": "ORT failed"}) is False


def test_parity_images_are_the_most_disagreeing():
    reference = Prediction(np.zeros((4, 2, 2), np.uint8), None)
    a, b = np.zeros((4, 2, 2), np.uint8), np.zeros((4, 2, 2), np.uint8)
    a[2, 0, 0] = b[2, 1, 1] = 1  # image 2: two differing pixels
    a[3, 0, 0] = 1  # image 3: one
    picked = most_disagreeing(reference, [Prediction(a, None), Prediction(b, None)], 3)
    assert picked == [2, 3, 0]
    assert most_disagreeing(reference, [], 2) == [0, 1]


def test_batch_of_repeats_images_cyclically():
    images = np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1)
    assert batch_of(images, 7).ravel().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert batch_of(images, 2).ravel().tolist() == [0, 1]


def test_peak_rss_sees_a_large_allocation():
    if current_rss() is None:
        pytest.skip("no /proc/self/statm on this system: peak memory is not measured")
    # A fresh interpreter: in a long test session the allocator may hand back pages it kept
    # from earlier tests, and RSS would not grow at all.
    code = ("import numpy as np; from segexport.verify.latency import PeakRss\n"
            "with PeakRss() as m:\n    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched\n"
            "print(m.delta_mb, block[-1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "1" and float(out[0]) >= 60
