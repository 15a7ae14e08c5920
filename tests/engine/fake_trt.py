"""Small stand-ins for the ``tensorrt`` module, for testing segexport's own decisions only
(which message, which fallback) — never to pretend that an engine was built or ran."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


class Severity:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


def made(logger: Any) -> object:
    """A factory that succeeds."""
    return object()


def fake_trt(*, builder: Any = made, runtime: Any = made, version: str = "10.13.0.35") -> SimpleNamespace:
    """A module-like object with ``ILogger``, ``Builder``, ``Runtime`` and ``__version__``."""
    return SimpleNamespace(ILogger=ILogger, Builder=builder, Runtime=runtime, __version__=version,
                           TensorIOMode=SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT"))


def failing_factory(message: str, exc: type[Exception] | None = TypeError) -> Any:
    """A factory that logs ``message`` as an error, then raises ``exc`` (or returns None), as TensorRT does."""

    def make(logger: Any) -> Any:
        logger.log(Severity.ERROR, message)
        if exc is not None:
            raise exc("pybind11::init(): factory function returned nullptr")
        return None

    return make


class FakeCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> bytes:
        return self.blob or b"fresh timings"


class FakeConfig:
    """``create_timing_cache``/``set_timing_cache``/``get_timing_cache`` with TensorRT's failure modes:
    ``corrupt`` blobs raise, ``unparsable`` ones give None, ``rejected`` ones are refused by set."""

    def __init__(self, *, fresh_fails: bool = False) -> None:
        self.created: list[bytes] = []
        self.current: FakeCache | None = None
        self.fresh_fails = fresh_fails

    def create_timing_cache(self, blob: bytes) -> FakeCache | None:
        blob = bytes(blob)
        self.created.append(blob)
        if blob.startswith(b"corrupt"):
            raise RuntimeError("bad timing cache")
        if blob.startswith(b"unparsable") or (not blob and self.fresh_fails):
            return None
        return FakeCache(blob)

    def set_timing_cache(self, cache: FakeCache, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        if cache.blob.startswith(b"rejected"):
            return False
        self.current = cache
        return True

    def get_timing_cache(self) -> FakeCache | None:
        return self.current
