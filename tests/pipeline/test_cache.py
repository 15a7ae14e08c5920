"""Stage keys and records: when a recorded stage may be reused, and when a budget matters."""

from __future__ import annotations

import os

import pytest

from segexport.cli.build_cmd import parse_budget
from segexport.errors import ConfigError
from segexport.pipeline.cache import (
    StageStore,
    folder_fingerprint,
    key_of,
    spec_fingerprint,
)
from segexport.pipeline.precision import budget_range


@pytest.fixture
def store(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"model")
    s = StageStore(tmp_path)
    s.save("export", key_of({"x": 1}), {"x": 1}, [tmp_path / "a.onnx"], {"budget_range": [0.5, None]})
    return s


def test_record_is_reused_only_with_the_same_key_and_intact_outputs(store, tmp_path):
    assert store.reusable("export", key_of({"x": 1})) is not None
    assert store.reusable("export", key_of({"x": 2})) is None
    assert store.changed_inputs("export", {"x": 2}) == ["x"]
    (tmp_path / "a.onnx").write_bytes(b"modeL")
    assert store.reusable("export", key_of({"x": 1})) is None
    (tmp_path / "a.onnx").unlink()
    assert store.reusable("export", key_of({"x": 1})) is None


def test_accept_can_refuse_a_matching_record(store):
    assert store.reusable("export", key_of({"x": 1}), lambda r: r.info["budget_range"][0] <= 0.4) is None
    assert store.reusable("export", key_of({"x": 1}), lambda r: r.info["budget_range"][0] <= 0.6) is not None


def test_unreadable_record_is_no_record(store, tmp_path):
    (tmp_path / ".stages" / "export.json").write_text("{not json")
    assert store.reusable("export", key_of({"x": 1})) is None
    assert store.read("missing") is None


def test_key_ignores_dict_order():
    assert key_of({"a": 1, "b": [1, 2]}) == key_of({"b": [1, 2], "a": 1})
    assert key_of({"a": 1}) != key_of({"a": 1.5})


def test_folder_fingerprint_follows_contents(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0.png").write_bytes(b"x")
    first = folder_fingerprint(tmp_path)
    assert spec_fingerprint(f"folder:{tmp_path}")["fingerprint"] == first
    assert spec_fingerprint(str(tmp_path))["fingerprint"] == first
    assert spec_fingerprint("synthetic") == {"spec": "synthetic", "fingerprint": None}
    (tmp_path / "images" / "0.png").write_bytes(b"xy")
    os.utime(tmp_path / "images" / "0.png", ns=(1, 1))
    assert folder_fingerprint(tmp_path) != first


def _summary(budget, drop, fallback=None):
    return {"budget_points": budget, "fallback": fallback, "accuracy": None if drop is None else {"drop_points": drop}}


def test_budget_range():
    # passed without the sensitivity pass: any budget at or above the drop gives the same model
    assert budget_range(_summary(1.0, 0.3), None) == [0.3, None]
    # the pass ran: its choice of layers depends on this exact budget
    assert budget_range(_summary(0.1, 0.3, fallback={"tried": True}), None) == [0.1, 0.1]
    # broken with the pass off, or nothing to judge: the budget changes nothing
    assert budget_range(_summary(0.1, 0.3), 0) == [0.0, None]
    assert budget_range(_summary(0.1, None), None) == [0.0, None]


def test_parse_budget():
    assert parse_budget("0.25", "--budget-int8") == 0.25
    assert parse_budget(None, "--budget-int8") is None
    for bad in ("half", "nan", "inf", "-1"):
        with pytest.raises(ConfigError, match="--budget-int8"):
            parse_budget(bad, "--budget-int8")
