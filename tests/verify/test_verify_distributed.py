"""``verify_build`` and ``segexport verify`` under torch.distributed (2 CPU processes, gloo):
every accuracy figure equals a single process's exactly.

The worker is defined here: spawned processes import this module by name (it is on ``sys.path``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from build_helpers import as_if_segexport_wrote
from cli_helpers import assert_one_line_error
from dist_helpers import free_port, launch

from segexport.errors import InputError
from segexport.precision.evaluate import load_val
from segexport.verify.manifest import VariantSpec, read_manifest, write_manifest
from segexport.verify.report import verify_build

# 8: one block of 16 for two processes, so rank 0's shard is empty and it predicts the first
# block for logits and timing only; 40: rank 0 scores images 0-15, rank 1 images 16-39.
COUNTS = (8, 40)
EXACT = ("miou", "pixel_acc", "per_class_iou", "miou_drop_pts", "agreement")
RUNS = 1


def verify_job(ctx: Any, builds: list[Path], counts: tuple[int, ...]) -> list[dict[str, Any]]:
    """This process's ``verify_build`` report of each build copy (with its image count)."""
    return [verify_build(b, images=n, progress=False, latency_runs=RUNS) for b, n in zip(builds, counts)]


def _copy(build: Path, target: Path, *, corrupt: bool = False) -> Path:
    """A copy of ``build``; with ``corrupt``, plus a variant ONNX Runtime cannot load (an error row)."""
    shutil.copytree(build, target)
    if corrupt:
        (target / "model.corrupt.onnx").write_bytes(b"not an ONNX model")
        as_if_segexport_wrote(target / "model.corrupt.onnx")
        manifest = read_manifest(target)
        broken = VariantSpec("onnx-corrupt", "onnxruntime", "fp32", None, "model.corrupt.onnx", 1.0)
        write_manifest(target, dataclasses.replace(manifest, variants=[*manifest.variants, broken]))
    return target


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in [report["reference"], *report["variants"]]}


def test_sharded_verify_equals_one_process(tiny_build_dir, tmp_path):
    # The second build has a broken variant: every process fails it in step, nobody waits forever.
    single = [verify_build(_copy(tiny_build_dir, tmp_path / f"single{n}", corrupt=n == COUNTS[1]), images=n,
                           progress=False, latency_runs=RUNS) for n in COUNTS]
    builds = [_copy(tiny_build_dir, tmp_path / f"dist{n}", corrupt=n == COUNTS[1]) for n in COUNTS]
    ranks = launch(verify_job, tmp_path, builds, COUNTS)
    for i, (alone, build) in enumerate(zip(single, builds)):
        main, other = ranks[0][i], ranks[1][i]
        assert main["distributed"] == {"world_size": 2, "backend": "gloo", "shard_block": 16}
        assert main["images"] == other["images"] == COUNTS[i]
        assert main["pass"] is other["pass"] is alone["pass"] is (i == 0)
        assert json.loads((build / "report.json").read_text()) == main  # rank 0 wrote it
        assert (build / "parity.png").is_file() and main["files"]["parity_png"] == "parity.png"
        assert any("sharded in blocks of 16" in note for note in main["notes"])
        measured = [name for name, row in _rows(alone).items() if row["miou"] is not None]
        assert measured == ["pytorch", "onnx", "pytorch-fp16", "onnx-int8-cpu"]
        for name in measured:
            want, got, got_other = _rows(alone)[name], _rows(main)[name], _rows(other)[name]
            for key in EXACT:
                assert got.get(key) == got_other.get(key) == want.get(key), (COUNTS[i], name, key)
            # Rank 0 alone keeps logits of the first images (its own or the first block) and times.
            for key in ("max_abs_logit_error", "mean_abs_logit_error"):
                assert got.get(key) == want.get(key), (COUNTS[i], name, key)
            assert got["runs"] == RUNS and got_other["runs"] is None and got_other["latency_ms"] is None
        assert _rows(main)["onnx-int8-cpu"]["agreement"] < 1.0  # a figure that can differ, and does not
    assert ranks[1][0]["files"] is None
    broken = [_rows(r[1])["onnx-corrupt"] for r in (single, *ranks)]
    assert all("ONNX Runtime cannot load it" in row["error"] and row["pass"] is False for row in broken)


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "segexport", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_COLOR": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180, env=env)


def test_cli_verify_under_torchrun_prints_once(tiny_build_dir, tmp_path):
    build = _copy(tiny_build_dir, tmp_path / "build")
    run = _torchrun("verify", str(build), "--images", "40", "--runs", "1", "--json")
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)  # rank 0 alone prints: one JSON document
    assert printed == json.loads((build / "report.json").read_text())
    assert printed["distributed"]["world_size"] == 2 and printed["images"] == 40


def test_class_mismatch_names_the_option_that_gave_the_data(tiny_build_dir):
    from segexport.checkpoint import load_checkpoint

    _, config = load_checkpoint(tiny_build_dir / "reference")
    with pytest.raises(InputError, match=r"^--data synthetic has 8 classes but the model predicts 3; pass --data"):
        load_val("synthetic", config.preprocess, count=2, seed=0, num_classes=3, option="--data")
    with pytest.raises(InputError, match=r"^--val synthetic has 8 classes .* pass --val data"):
        load_val("synthetic", config.preprocess, count=2, seed=0, num_classes=3)


def test_bench_of_an_unloadable_onnx_file_is_bad_input(cli, tmp_path):
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"not an ONNX model")
    assert_one_line_error(cli("bench", corrupt), "model.onnx: ONNX Runtime cannot load it", "pass a valid artifact")
