"""Absurd seeds, sizes, batches and counts: exit 2, one line naming the limit, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error

HUGE_SEED = str(2**70)
HUGE = str(10**7)  # beyond every count limit
# 8000x8000 is within the side limit, but a forward pass at it needs terabytes by the estimate.
NO_MEMORY = "8000x8000"


@pytest.mark.parametrize("args, fragments", [
    (["train", "fcn8s", "--seed", HUGE_SEED], ["--seed", "outside 0..4294967295"]),
    (["train", "fcn8s", "--epochs", "100000"], ["--epochs", "from 1 to 10000"]),
    (["train", "fcn8s", "--batch-size", "100000"], ["--batch-size", "from 1 to 1024"]),
    (["build", "deeplabv3p", "--seed", HUGE_SEED], ["--seed", "outside 0..4294967295"]),
    (["build", "deeplabv3p", "--input-size", "100000x100000"], ["--input-size", "each side must be 1 to 8192"]),
    (["build", "deeplabv3p", "--input-size", NO_MEMORY], ["needs about", "GiB available", "smaller --input-size"]),
    (["build", "deeplabv3p", "--int8", "--calib-images", HUGE], ["--calib-images", "from 1 to 1000000"]),
    (["build", "deeplabv3p", "--val-images", HUGE], ["--val-images", "from 1 to 1000000"]),
    (["build", "deeplabv3p", "--train-images", HUGE], ["--train-images", "from 1 to 1000000"]),
    (["build", "deeplabv3p", "--epochs", "100000"], ["--epochs", "from 1 to 10000"]),
    (["export", "deeplabv3p", "--seed", HUGE_SEED], ["--seed", "outside 0..4294967295"]),
    (["export", "deeplabv3p", "--input-size", "100000x100000"], ["--input-size", "each side must be 1 to 8192"]),
    (["export", "deeplabv3p", "--input-size", NO_MEMORY], ["needs about", "GiB available", "smaller --input-size"]),
    (["export", "deeplabv3p", "--images", HUGE], ["--images", "from 1 to 1000000"]),
])
def test_bounds_before_any_work(cli, tmp_path, args, fragments):
    out = tmp_path / "out"
    assert_one_line_error(cli(*args, "--out", out), *fragments)
    assert not out.exists()


def _listing(folder: Path) -> list[str]:
    """What a command wrote into ``folder`` (hidden lock files aside)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("args, fragments", [
    (["quantize", "{onnx}", "--int8", "--seed", HUGE_SEED], ["--seed", "outside 0..4294967295"]),
    (["quantize", "{onnx}", "--int8", "--calib-images", HUGE], ["--calib-images", "from 1 to 1000000"]),
    (["quantize", "{onnx}", "--fp16", "--val-images", "1000000"], ["--val-images 1000000", "smaller --val-images"]),
    (["bench", "{onnx}", "--batch", "100000"], ["--batch", "from 1 to 1024"]),
    (["bench", "{onnx}", "--runs", "0"], ["--runs", "from 1 to 100000"]),
    (["bench", "{onnx}", "--threads", "100000"], ["--threads", "from 1 to 1024"]),
    (["bench", "{onnx}", "--input-size", "100000x100000"], ["--input-size", "each side must be 1 to 8192"]),
    (["bench", "{onnx}", "--input-size", NO_MEMORY], ["model.onnx: a forward pass at 8000x8000", "smaller --input-size or --batch"]),
    (["verify", "{build}", "--images", HUGE], ["--images", "from 1 to 1000000"]),
    (["verify", "{build}", "--images", "1000000"], ["--images 1000000 (64x64 images", "smaller --images"]),
    (["verify", "{build}", "--runs", str(10**9)], ["--runs", "from 1 to 100000"]),
    (["engine", "{onnx}", "--max-batch", "100000"], ["--max-batch", "from 1 to 1024"]),
    (["triton", "{build}", "--repo", "{tmp}/repo", "--instances", "100000"], ["--instances", "from 1 to 256"]),
])
def test_bounds_on_built_artifacts(cli, tiny_build_dir, tmp_path, args, fragments):
    before = _listing(tiny_build_dir)
    values = {"onnx": tiny_build_dir / "model.onnx", "build": tiny_build_dir, "tmp": tmp_path}
    assert_one_line_error(cli(*(a.format(**values) for a in args)), *fragments)
    assert _listing(tiny_build_dir) == before and not (tmp_path / "repo").exists()
