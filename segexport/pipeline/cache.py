"""Stage records: what each build stage was computed from, so a re-run redoes only what changed.

Every stage has a key: the SHA-256 of its inputs, written as one JSON document (the files it
reads, by content hash; the options and recipe values it uses; the versions of the packages
that compute it). When a stage finishes, ``BUILD_DIR/.stages/<stage>.json`` records the key,
the inputs themselves (so a re-run can say what changed) and the SHA-256 of every file it
wrote. A stage is skipped when its key is unchanged and its files are still exactly those it
wrote; a changed input changes the key of its stage, that stage's new outputs change the keys
of the stages that read them, and so on downstream, and nowhere else.

Records are written after the stage's outputs, atomically: a build killed mid-stage leaves
the old record (whose key or hashes no longer match) or none, and the stage runs again.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from segexport.fsutil import write_json
from segexport.hashing import file_sha256

STAGES_DIR = ".stages"
RECORD_FORMAT = 1
# The packages whose code computes the artifacts: a new version of any may change the bytes.
VERSIONED_PACKAGES = (
    "segexport", "torch", "numpy", "onnx", "onnxruntime", "onnxsim", "onnxconverter-common", "onnxscript",
)


def package_versions(names: Iterable[str] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"absent"`` for one that is not installed) and Python's."""
    found = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def folder_fingerprint(folder: str | Path) -> str:
    """SHA-256 over the relative path, size and modification time of every file under ``folder``.

    Data folders hold thousands of images: hashing each one on every build would cost more
    than the stages the key guards, so they are identified the way ``make`` does, by stat.
    """
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def spec_fingerprint(spec: str | None) -> dict[str, str | None]:
    """A data spec and, when it names a folder (``folder:PATH``, ``voc:PATH``, a plain folder), its fingerprint."""
    if spec is None or spec == "synthetic":
        return {"spec": spec, "fingerprint": None}
    _, sep, rest = spec.partition(":")
    path = Path(spec) if Path(spec).is_dir() or not sep else Path(rest)
    return {"spec": spec, "fingerprint": folder_fingerprint(path) if path.is_dir() else None}


def key_of(inputs: Mapping[str, Any]) -> str:
    """The SHA-256 of ``inputs`` as canonical JSON."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def hash_files(build_dir: Path, paths: Iterable[Path]) -> dict[str, str | None]:
    """``{path relative to build_dir: sha256}``; None for a file that does not exist."""
    return {
        p.relative_to(build_dir).as_posix(): (file_sha256(p) if p.is_file() else None)
        for p in sorted(paths)
    }


@dataclass
class StageRecord:
    """A finished stage: its key, the inputs it was computed from, its outputs and facts about it."""

    stage: str
    key: str
    inputs: dict[str, Any]
    outputs: dict[str, str | None]
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "stage": self.stage, "key": self.key, "inputs": self.inputs,
                "outputs": self.outputs, "info": self.info}


class StageStore:
    """The stage records of one build folder (``BUILD_DIR/.stages``)."""

    def __init__(self, build_dir: str | Path) -> None:
        self.build_dir = Path(build_dir)
        self.folder = self.build_dir / STAGES_DIR

    def _path(self, stage: str) -> Path:
        return self.folder / f"{stage}.json"

    def read(self, stage: str) -> StageRecord | None:
        """The record of ``stage``, or None when there is none or it is unreadable."""
        try:
            data = json.loads(self._path(stage).read_text())
            if data.get("format") != RECORD_FORMAT or data.get("stage") != stage:
                return None
            return StageRecord(stage, data["key"], data["inputs"], data["outputs"], data.get("info", {}))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None

    def reusable(
        self, stage: str, key: str, accept: Callable[[StageRecord], bool] | None = None
    ) -> StageRecord | None:
        """The record of ``stage`` when its key is ``key``, ``accept`` (if given) takes it, and
        every output it recorded is still there, byte for byte; else None."""
        record = self.read(stage)
        if record is None or record.key != key or (accept is not None and not accept(record)):
            return None
        paths = [self.build_dir / name for name in record.outputs]
        if hash_files(self.build_dir, paths) != record.outputs or None in record.outputs.values():
            return None
        return record

    def changed_inputs(self, stage: str, inputs: Mapping[str, Any]) -> list[str]:
        """Top-level input names that differ from the last record of ``stage`` (all when none)."""
        record = self.read(stage)
        if record is None:
            return []
        names = set(record.inputs) | set(inputs)
        canonical = json.loads(json.dumps(dict(inputs), default=str))
        return sorted(n for n in names if record.inputs.get(n) != canonical.get(n))

    def save(self, stage: str, key: str, inputs: Mapping[str, Any], outputs: Iterable[Path],
             info: Mapping[str, Any] | None = None) -> StageRecord:
        """Hash ``outputs`` and record the finished stage (atomically)."""
        record = StageRecord(
            stage, key, json.loads(json.dumps(dict(inputs), default=str)),
            hash_files(self.build_dir, outputs), dict(info or {}),
        )
        write_json(self._path(stage), record.to_dict())
        return record

    def forget(self, stage: str) -> None:
        """Drop the record of ``stage`` (its outputs are about to be replaced)."""
        self._path(stage).unlink(missing_ok=True)

