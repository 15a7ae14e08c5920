"""Bad input is exit 2 and one line everywhere (issue 14, item 4).

A table of cases: each builds its inputs under ``tmp_path``, runs one command as a real
subprocess and expects an exit code, exactly one stderr line without a traceback, a fragment
of that line, and no change to any file outside the command's output folder (``out/``).
Add a case by adding a row to ``CASES``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from bad_input_cases import CASES as SWEEP
from bad_input_setups import (
    OUT,
    Case,
    build,
    checkpoint,
    checkpoint_with,
    edit_json,
    folder_dataset,
    png,
    tiny_onnx,
)
from cli_helpers import assert_one_line_error, run_cli, run_cli_in_process


def _external_missing(tmp: Path) -> None:
    tiny_onnx(tmp / "model.onnx", external=True)
    (tmp / "model.onnx.data").unlink()


def _external_truncated(tmp: Path) -> None:
    tiny_onnx(tmp / "model.onnx", external=True)
    os.truncate(tmp / "model.onnx.data", 10)


def _with_image(setup: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(tmp: Path) -> None:
        setup(tmp)
        png(tmp / "image.png")
    return both


def _truncated_onnx(tmp: Path) -> None:
    data = tiny_onnx(tmp / "whole.onnx").read_bytes()
    (tmp / "model.onnx").write_bytes(data[: len(data) // 2])
    (tmp / "whole.onnx").unlink()


def _edit_model_json(edit: Callable[[dict], None]) -> Callable[[Path, pytest.FixtureRequest], None]:
    return checkpoint_with(edit_json("model.json", edit))


def _fewer_classes(data: dict) -> None:
    data["classes"] = data["classes"][:5]


def _classes_a_string(data: dict) -> None:
    data["classes"] = "".join(c[0] for c in data["classes"])


def _not_utf8_model_json(tmp: Path, request: pytest.FixtureRequest) -> None:
    (checkpoint(tmp, request) / "model.json").write_bytes(b"\xff\xfe{}")


def _truncated_safetensors(tmp: Path, request: pytest.FixtureRequest) -> None:
    os.truncate(checkpoint(tmp, request) / "checkpoint.safetensors", 1000)


def _build_and_folder(tmp: Path, request: pytest.FixtureRequest) -> None:
    (build(tmp, request) / "junit.xml").mkdir()
    folder_dataset(tmp / "small")


def _build_truncated_artifact(tmp: Path, request: pytest.FixtureRequest) -> None:
    os.truncate(build(tmp, request) / "model.int8.cpu.onnx", 300)


def _text_named_png(tmp: Path) -> None:
    tiny_onnx(tmp / "model.onnx")
    (tmp / "images").mkdir()
    png(tmp / "images" / "a.png")
    (tmp / "images" / "b.png").write_text("not an image\n")


def _truncated_png(tmp: Path) -> None:
    tiny_onnx(tmp / "model.onnx")
    data = png(tmp / "whole.png").read_bytes()
    (tmp / "image.png").write_bytes(data[: len(data) // 2])
    (tmp / "whole.png").unlink()


def _empty_png(tmp: Path) -> None:
    tiny_onnx(tmp / "model.onnx")
    (tmp / "image.png").write_bytes(b"")


def _folder_named_onnx(tmp: Path) -> None:
    (tmp / "model.onnx").mkdir()


_QUANTIZE = ("--no-progress", "--val-images", "4", "--out", f"{{tmp}}/{OUT}")
_INT8 = ("--int8", "--calib-images", "4", *_QUANTIZE)
_PREDICT = ("{tmp}/image.png", "--out", f"{{tmp}}/{OUT}")
CASES = [*SWEEP,
    Case("check-external-data-missing", _external_missing, ("check", "{tmp}/model.onnx"), message="external data"),
    Case("check-external-data-truncated", _external_truncated, ("check", "{tmp}/model.onnx"),
         message="external data"),
    Case("quantize-external-data-missing", _external_missing, ("quantize", "{tmp}/model.onnx", "--fp16", *_QUANTIZE),
         message="external data"),
    Case("quantize-external-data-truncated", _external_truncated,
         ("quantize", "{tmp}/model.onnx", *_INT8), message="external data"),
    Case("predict-external-data-missing", _with_image(_external_missing), ("predict", "{tmp}/model.onnx", *_PREDICT),
         message="ONNX Runtime cannot load it"),
    Case("predict-external-data-truncated", _with_image(_external_truncated),
         ("predict", "{tmp}/model.onnx", *_PREDICT), message="external data"),
    Case("quantize-custom-domain-op", lambda tmp: tiny_onnx(tmp / "model.onnx", custom_op=True),
         ("quantize", "{tmp}/model.onnx", *_INT8), message="custom-domain operator"),
    Case("predict-ir-version-too-new", _with_image(lambda tmp: tiny_onnx(tmp / "model.onnx", ir_version=99)),
         ("predict", "{tmp}/model.onnx", *_PREDICT), message="Unsupported model IR version: 99"),
    Case("quantize-ir-version-too-new", lambda tmp: tiny_onnx(tmp / "model.onnx", ir_version=99),
         ("quantize", "{tmp}/model.onnx", "--fp16", *_QUANTIZE), message="ONNX Runtime cannot load it"),
    Case("bench-truncated-onnx", _truncated_onnx, ("bench", "{tmp}/model.onnx"), message="model.onnx"),
    Case("check-a-folder", _folder_named_onnx, ("check", "{tmp}/model.onnx"), message="not a file"),
    Case("predict-text-file-named-png", _text_named_png, ("predict", "{tmp}/model.onnx", "{tmp}/images", "--out",
         f"{{tmp}}/{OUT}"), message="b.png: not a readable image"),
    Case("predict-truncated-png", _truncated_png, ("predict", "{tmp}/model.onnx", *_PREDICT),
         message="image.png: not a readable image"),
    Case("predict-empty-png", _empty_png, ("predict", "{tmp}/model.onnx", *_PREDICT), message="image.png"),
    Case("evaluate-model-json-fewer-classes-than-weights", _edit_model_json(_fewer_classes), ("evaluate", "{tmp}/ckpt"),
         message="model.json: lists 5 classes but its build_args give the model 8 outputs"),
    Case("evaluate-model-json-classes-not-a-list", _edit_model_json(_classes_a_string), ("evaluate", "{tmp}/ckpt"),
         message="classes must be a list"),
    Case("evaluate-model-json-not-utf8", _not_utf8_model_json, ("evaluate", "{tmp}/ckpt"), message="model.json"),
    Case("evaluate-truncated-safetensors", _truncated_safetensors, ("evaluate", "{tmp}/ckpt"),
         message="checkpoint.safetensors"),
    Case("verify-junit-names-a-folder", _build_and_folder,
         ("verify", "{tmp}/build", "--junit", "{tmp}/build/junit.xml", "--runs", "2", "--no-progress"),
         message="junit.xml: a folder where a file is expected"),
    Case("verify-data-folder-too-small", _build_and_folder,
         ("verify", "{tmp}/build", "--data", "folder:{tmp}/small", "--no-progress"),
         message="val split has 3 images, fewer than the 8 asked for; pass --images 3"),
    Case("build-data-folder-too-small", lambda tmp: folder_dataset(tmp / "small"),
         ("build", "fcn8s", "--data", "folder:{tmp}/small", "--train-images", "10", "--out", f"{{tmp}}/{OUT}",
          "--no-progress"), message="train split has 3 images, fewer than the 10 asked for; pass --train-images 3"),
    Case("verify-truncated-artifact", _build_truncated_artifact, ("verify", "{tmp}/build", "--no-progress"),
         message="model.int8.cpu.onnx"),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Digest of every file under ``root`` outside ``OUT``, except what verify writes into a
    build folder by design (its reports, and segexport's bookkeeping: lock and ledger)."""
    written_by_verify = {"report.json", "report.md", "parity.png", "latency.png"}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != OUT and p.name not in written_by_verify
            and not p.name.startswith(".segexport")}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_one_line(case: Case, tmp_path: Path, request: pytest.FixtureRequest,
                               capfd: pytest.CaptureFixture[str]) -> None:
    if case.setup.__code__.co_argcount == 2:
        case.setup(tmp_path, request)
    else:
        case.setup(tmp_path)
    before = _snapshot(tmp_path)
    result = run_cli_in_process(capfd, *(arg.replace("{tmp}", str(tmp_path)) for arg in case.argv))
    if case.usage:
        assert result.code == 2 and "Usage:" in result.stderr and "Traceback" not in result.stderr, result.stderr
    else:
        message = case.message.replace("{tmp}", str(tmp_path)) if case.message else None
        assert_one_line_error(result, *([message] if message else []), code=case.code)
    assert _snapshot(tmp_path) == before
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*-inferred.onnx"))


def test_the_sweep_covers_every_command() -> None:
    from segexport import cli

    cli._register_commands()
    commands = {c.name or c.callback.__name__ for c in cli.app.registered_commands} - {"list"}
    assert len(CASES) >= 150 and commands <= {case.argv[0] for case in CASES}


def test_malformed_arguments_keep_the_usage_box(tmp_path: Path) -> None:
    result = run_cli("predict", tiny_onnx(tmp_path / "model.onnx"))
    assert result.code == 2 and "Usage:" in result.stderr and "Missing argument" in result.stderr


def test_quantize_writes_nothing_beside_its_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime's quantizer writes NAME-inferred.onnx beside the model it is given: it must
    be given a private copy, so a read-only or shared input folder is never written to."""
    from segexport.precision.stage import quantize_model

    model = tiny_onnx(tmp_path / "input" / "model.onnx", external=True)
    written: list[Path] = []
    infer = onnx.shape_inference.infer_shapes_path

    def recording(src: str, dst: str = "", *args: object, **kwargs: object) -> None:
        written.append(Path(dst or src).resolve())
        infer(src, dst, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", recording)
    for target in ("tensorrt", "cpu"):
        quantize_model(model, precision="int8", target=target, calib_images=4, val_images=4, budget=100.0,
                       max_fallback=0, out=tmp_path / OUT / target, progress=False)
    assert written and not [p for p in written if p.parent == model.parent.resolve()]
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.onnx", "model.onnx.data"]


def test_an_internal_error_is_one_line_with_the_traceback_in_a_file(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from segexport import cli

    def broken() -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_register_commands", lambda: None)
    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv("SEGEXPORT_DEBUG", raising=False)
    assert cli._run_app() == cli.EX_SOFTWARE == 70
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: ZeroDivisionError: division by zero; ")
    trace = Path(lines[0].split("the traceback is in ")[1].split(" (please report it)")[0])
    assert "Traceback" in trace.read_text() and "broken" in trace.read_text()
    trace.unlink()
    monkeypatch.setenv("SEGEXPORT_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli._run_app()


def _wait_for_torch(proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Until the command runs (torch is imported inside commands, after the signal handlers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text():
            time.sleep(1.0)
            return
        time.sleep(0.2)
    raise AssertionError("the command did not start in time")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_a_command_with_one_line(signum: int, code: int, tmp_path: Path) -> None:
    out = tmp_path / OUT / "ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segexport", "train", "fcn8s", "--epochs", "100", "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})
    try:
        _wait_for_torch(proc)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == code, stderr
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.rglob("*.part"))
