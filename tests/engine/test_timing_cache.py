"""Timing cache decisions (no GPU): reuse only what fits, replace the rest with a note, never fail
a build over it; and an engine with its record written so that a failure loses nothing."""

from __future__ import annotations

import json
import logging

import pytest
from engine.fake_trt import FakeConfig

from segexport.engine import build as build_module
from segexport.engine.timing_cache import (
    attach_timing_cache,
    key_path,
    mismatch,
    save_timing_cache,
    serialized_timing_cache,
    timing_cache_key,
)
from segexport.errors import CheckFailed, InputError
from segexport.runners.tensorrt_runner import engine_bytes

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
KEY = timing_cache_key("10.13.0.35", H100)


def test_no_file_gives_a_fresh_cache_without_a_note(tmp_path, caplog):
    config = FakeConfig()
    use = attach_timing_cache(config, tmp_path / "timing.cache", KEY)
    assert use.status == "new" and config.created == [b""] and config.current is use.cache
    assert not caplog.records


def test_a_fitting_cache_is_reused(tmp_path):
    path = tmp_path / "timing.cache"
    assert save_timing_cache(path, b"timings", KEY)
    config = FakeConfig()
    use = attach_timing_cache(config, path, KEY)
    assert use.status == "reused" and config.current.blob == b"timings"


@pytest.mark.parametrize("blob", [b"rejected: another device", b"corrupt\x00", b"unparsable"])
def test_a_cache_tensorrt_refuses_is_replaced_by_a_fresh_one_with_a_note(tmp_path, caplog, blob):
    path = tmp_path / "timing.cache"
    path.write_bytes(blob)  # no key file (e.g. from trtexec): TensorRT decides
    config = FakeConfig()
    with caplog.at_level(logging.WARNING, logger="segexport.engine"):
        use = attach_timing_cache(config, path, KEY)
    assert config.created == [blob, b""] and config.current is use.cache and use.cache.blob == b""
    assert use.status.startswith("replaced: TensorRT rejected it")
    assert "note: timing cache" in caplog.text and str(path) in caplog.text
    assert path.read_bytes() == blob  # nothing is written before the build succeeds


@pytest.mark.parametrize(("key", "why"), [
    (timing_cache_key("10.9.0.34", H100), "written by TensorRT 10.9.0.34"),
    (timing_cache_key("10.13.0.35", {"name": "NVIDIA L4", "compute_capability": "8.9"}), "written on NVIDIA L4"),
])
def test_a_cache_keyed_for_another_version_or_gpu_is_not_offered(tmp_path, caplog, key, why):
    path = tmp_path / "timing.cache"
    save_timing_cache(path, b"old timings", key)
    config = FakeConfig()
    with caplog.at_level(logging.WARNING, logger="segexport.engine"):
        use = attach_timing_cache(config, path, KEY)
    assert config.created == [b""] and use.status == f"replaced: {why}"
    assert why in caplog.text


def test_when_tensorrt_cannot_make_any_cache_the_build_goes_on_without(tmp_path):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"rejected")
    use = attach_timing_cache(FakeConfig(fresh_fails=True), path, KEY)
    assert use.cache is None and use.status.startswith("not used:")


def test_unreadable_key_means_a_fresh_cache(tmp_path):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"timings")
    key_path(path).write_text("{not json")
    assert "unreadable" in mismatch(path, KEY)


def test_serialized_cache_is_none_when_tensorrt_returns_none_or_raises():
    config = FakeConfig()
    assert serialized_timing_cache(config) is None  # get_timing_cache() returned None
    config.current = type("Broken", (), {"serialize": lambda self: (_ for _ in ()).throw(RuntimeError("x"))})()
    assert serialized_timing_cache(config) is None


def test_saving_nothing_keeps_the_old_cache(tmp_path, caplog):
    path = tmp_path / "timing.cache"
    save_timing_cache(path, b"good", KEY)
    with caplog.at_level(logging.WARNING, logger="segexport.engine"):
        assert save_timing_cache(path, None, KEY) is False
    assert path.read_bytes() == b"good" and json.loads(key_path(path).read_text()) == KEY
    assert "left as it was" in caplog.text


def _old_engine(tmp_path):
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"old engine")
    engine.with_suffix(".json").write_text('{"old": true}')
    return engine


def test_a_failed_write_leaves_the_old_engine_and_record(tmp_path):
    engine = _old_engine(tmp_path)
    with pytest.raises(TypeError):
        build_module._write(engine, b"new engine", {"unserializable": object()})
    assert engine.read_bytes() == b"old engine" and engine.with_suffix(".json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.plan"]  # no .part left


def test_a_failed_build_writes_nothing(tmp_path, conv_model, monkeypatch):
    engine = _old_engine(tmp_path)
    monkeypatch.setattr(build_module, "engine_unavailable_reason", lambda: None)

    def fail(*args, **kwargs):
        raise CheckFailed("TensorRT could not build an engine")

    monkeypatch.setattr(build_module, "_build", fail)
    with pytest.raises(CheckFailed):
        build_module.build_engine(conv_model(), engine, timing_cache=tmp_path / "timing.cache")
    assert engine.read_bytes() == b"old engine" and engine.with_suffix(".json").read_text() == '{"old": true}'
    assert not (tmp_path / "timing.cache").exists()


def test_the_record_names_its_engine_and_the_runner_checks_it(tmp_path):
    engine = _old_engine(tmp_path)
    import hashlib

    record = {"engine_sha256": hashlib.sha256(b"new engine").hexdigest(), "onnx": "m.onnx"}
    build_module._write(engine, b"new engine", record)
    assert engine_bytes(engine, json.loads(engine.with_suffix(".json").read_text())) == b"new engine"
    engine.write_bytes(b"an engine from an interrupted build")
    with pytest.raises(InputError, match="does not match its record model.json.*segexport engine m.onnx"):
        engine_bytes(engine, record)
    assert engine_bytes(engine, {"onnx": "m.onnx"}) == b"an engine from an interrupted build"  # older records


def test_a_file_segexport_did_not_write_is_never_rewritten(tmp_path, caplog):
    user = tmp_path / "model.onnx"  # --timing-cache pointed at the input model by mistake
    user.write_bytes(b"the user's model")
    with caplog.at_level(logging.WARNING, logger="segexport.engine"):
        assert save_timing_cache(user, b"timings", KEY) is False
    assert user.read_bytes() == b"the user's model" and not key_path(user).exists()
    assert "segexport did not write" in caplog.text
