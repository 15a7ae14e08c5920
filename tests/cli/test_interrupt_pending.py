"""A SIGTERM whose exception lands in a finalizer (and is ignored by Python) still stops the build."""

from __future__ import annotations

import os
import signal

import pytest

from segexport import interrupts
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
