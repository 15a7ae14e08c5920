"""A SIGTERM whose exception lands in a finalizer (and is ignored by Python) still stops the build."""

from __future__ import annotations

import os
import signal

import pytest

from segexport import fsutil, interrupts
from segexport.cli import _signals_raise_interrupted
from segexport.interrupts import Interrupted
from segexport.pipeline.cache import StageStore
from segexport.pipeline.stages import Stages


class _Dying:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # handled while __del__ runs: Python ignores what it raises


def test_a_signal_swallowed_by_a_finalizer_stops_the_next_stage(tmp_path, capfd):
    interrupts.clear()
    ran = []
    try:
        with _signals_raise_interrupted():
            obj = _Dying()
            del obj
            assert interrupts.pending() == signal.SIGTERM  # the exception was lost, the signal was not
            with pytest.raises(Interrupted):
                Stages(StageStore(tmp_path)).run("next", {}, lambda: (ran.append(1), ([], {}))[1], describe="work")
    finally:
        interrupts.clear()
    assert ran == []  # the next stage never started
    assert "Exception ignored" not in capfd.readouterr().err  # and no traceback reached the user


def test_a_pending_signal_keeps_the_old_artifact(tmp_path):
    """The signal arrived while the new file was written and its exception was lost: the old file
    stays, the temporary one goes, and the build stops there."""
    target = tmp_path / "model.onnx"
    fsutil.write_json(target, {"old": True})
    before = target.read_bytes()
    interrupts.note(signal.SIGINT)
    try:
        with pytest.raises(Interrupted), fsutil.atomic_path(target) as part:
            part.write_text("new")
        with pytest.raises(Interrupted), fsutil.atomic_dir(tmp_path / "engines") as part:
            (part / "a.plan").write_text("new")
    finally:
        interrupts.clear()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".segexport")) == ["model.onnx"]
