"""The timing cache of an engine build: loaded only when it fits, replaced when it does not.

A timing cache holds tactic timings measured on one GPU by one TensorRT version. TensorRT
refuses another device's or version's cache (``set_timing_cache(cache, ignore_mismatch=False)``
returns False) and may not even parse a corrupt file (``create_timing_cache`` returns None or
raises). So every result is checked here, and a cache that does not fit is replaced by a fresh
one with a note, never a failed build.

The file is keyed: ``timing.cache`` has ``timing.cache.json`` beside it naming the TensorRT
version and the GPU that wrote it. A cache whose key names another version or GPU is not even
offered to TensorRT; a cache without a key (e.g. from ``trtexec``) is offered and TensorRT decides.
Saving is best effort and happens only after the engine and its record are in place; a file
segexport did not write (a ``trtexec`` cache, or any path given by mistake) is read, never rewritten.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segexport.fsutil import atomic_path, write_json
from segexport.ownership import is_known

log = logging.getLogger("segexport.engine")

REJECTED = "TensorRT rejected it (corrupt, or written by another GPU or TensorRT version)"


@dataclass(frozen=True)
class TimingCacheUse:
    """The cache set on a builder config, and what happened to the file.

    Attributes:
        cache: the ``ITimingCache`` set on the config, or None when TensorRT could not make one.
        status: ``"new"``, ``"reused"``, ``"replaced: <why>"`` or ``"not used: <why>"``.
    """

    cache: Any
    status: str


def timing_cache_key(tensorrt_version: str, gpu: dict[str, Any]) -> dict[str, Any]:
    """What a timing cache is valid for: one TensorRT version on one GPU model."""
    return {"tensorrt_version": tensorrt_version, "gpu": {"name": gpu["name"],
                                                          "compute_capability": gpu["compute_capability"]}}


def key_path(cache: Path) -> Path:
    """``timing.cache`` -> ``timing.cache.json``."""
    return cache.with_name(cache.name + ".json")


def mismatch(cache: Path, key: dict[str, Any]) -> str | None:
    """Why the keyed cache file does not fit ``key``, or None (no key file: TensorRT decides)."""
    try:
        stored = json.loads(key_path(cache).read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"its key {key_path(cache).name} is unreadable"
    if not isinstance(stored, dict) or stored.get("tensorrt_version") != key["tensorrt_version"]:
        return f"written by TensorRT {stored.get('tensorrt_version') if isinstance(stored, dict) else '?'}"
    if stored.get("gpu") != key["gpu"]:
        return f"written on {(stored.get('gpu') or {}).get('name', 'another GPU')}"
    return None


def _set(config: Any, blob: bytes) -> Any:
    """The cache made from ``blob`` and set on ``config``, or None when TensorRT refuses either step."""
    try:
        cache = config.create_timing_cache(blob)
    except Exception:  # noqa: BLE001  (a corrupt blob may raise instead of returning None)
        return None
    # ignore_mismatch=False: a cache from another device or version must not steer this build.
    if cache is None or not config.set_timing_cache(cache, False):
        return None
    return cache


def _offered(path: Path, key: dict[str, Any]) -> tuple[bytes, str | None]:
    """The bytes to offer TensorRT (empty for a fresh cache), and why the file is not offered."""
    if not path.is_file():
        return b"", None
    why = mismatch(path, key)
    if why is not None:
        return b"", why
    try:
        return path.read_bytes(), None
    except OSError as exc:
        return b"", f"unreadable ({exc.strerror})"


def attach_timing_cache(config: Any, path: Path, key: dict[str, Any]) -> TimingCacheUse:
    """Set the timing cache from ``path`` on ``config`` when it fits, else a fresh one (with a note)."""
    blob, why = _offered(path, key)
    cache = _set(config, blob)
    if cache is not None and blob:
        return TimingCacheUse(cache, "reused")
    if cache is not None:
        return _noted(TimingCacheUse(cache, "new" if why is None else f"replaced: {why}"), path)
    if blob:  # TensorRT refused the file: start afresh
        cache = _set(config, b"")
        status = f"replaced: {REJECTED}" if cache is not None else "not used: TensorRT cannot create a timing cache"
        return _noted(TimingCacheUse(cache, status), path)
    return _noted(TimingCacheUse(None, "not used: TensorRT cannot create a timing cache"), path)


def _noted(use: TimingCacheUse, path: Path) -> TimingCacheUse:
    if use.status != "new":
        log.warning("note: timing cache %s %s; this build uses a fresh one", path, use.status)
    return use


def serialized_timing_cache(config: Any) -> bytes | None:
    """The builder config's timing cache after a build, as bytes; None when TensorRT returns none."""
    try:
        cache = config.get_timing_cache()
        blob = None if cache is None else cache.serialize()
    except Exception:  # noqa: BLE001  (saving the cache is best effort; the engine is what matters)
        return None
    return None if blob is None else bytes(memoryview(blob))


def save_timing_cache(path: Path, blob: bytes | None, key: dict[str, Any]) -> bool:
    """Write the cache and its key atomically (cache first: a stale key only costs a fresh cache).

    Returns:
        False when there was nothing to save or the file could not be written (noted, not raised).
    """
    if not blob:
        log.warning("note: TensorRT returned no timing cache; %s was left as it was", path)
        return False
    foreign = [p for p in (path, key_path(path)) if (p.exists() or p.is_symlink()) and not is_known(p)]
    if foreign:  # a user's file (a trtexec cache, or a path given by mistake) is read, never rewritten
        log.warning("note: timing cache not saved: segexport did not write %s; pass a new --timing-cache path",
                    foreign[0])
        return False
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(blob)
        write_json(key_path(path), key)
    except Exception as exc:  # noqa: BLE001  (the engine and its record are already written)
        log.warning("note: timing cache %s not saved (%s)", path, exc)
        return False
    return True
