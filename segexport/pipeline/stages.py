"""Running one build stage: reuse its record when its key and outputs hold, else do the work.

Each stage prints one line when it starts (or is found cached) and one when it ends, and
leaves its status (``ran``, ``cached`` or ``skipped``) in :attr:`Stages.statuses`, which the
build returns and records in ``BUILD_DIR/.stages/last_run.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segexport.fsutil import write_json
from segexport.interrupts import raise_if_pending
from segexport.pipeline.cache import StageRecord, StageStore, key_of

LAST_RUN = "last_run.json"
Work = Callable[[], "tuple[list[Path], dict[str, Any]]"]


@dataclass
class StageStatus:
    """What one stage did in this run."""

    stage: str
    status: str  # "ran" | "cached" | "skipped"
    seconds: float
    detail: str = ""


def _last_times(path: Path) -> dict[str, float]:
    """Seconds each stage took when it last ran in this folder (``last_run.json``); {} without one."""
    import json

    try:
        stages = json.loads(path.read_text()).get("stages", [])
        return {s["stage"]: float(s["seconds"]) for s in stages if s.get("status") == "ran"}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}


def _quiet(_: str) -> None:
    """The default progress sink: library callers see nothing unless they pass ``log``."""


class Stages:
    """The stages of one build: their records, progress lines and statuses."""

    def __init__(self, store: StageStore, log: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.log = log or _quiet
        self.statuses: list[StageStatus] = []
        self.estimates = _last_times(store.folder / LAST_RUN)

    def _estimate(self, name: str) -> str:
        """`` (about N s, as last time)`` when this build folder ran the stage before, else nothing."""
        seconds = self.estimates.get(name)
        return f" (about {seconds:.0f} s, as last time)" if seconds and seconds >= 5 else ""

    def run(self, name: str, inputs: Mapping[str, Any], work: Work, *, describe: str,
            accept: Callable[[StageRecord], bool] | None = None) -> StageRecord:
        """Reuse ``name``'s record when its key (the hash of ``inputs``) and outputs hold and
        ``accept`` (if given) takes it; else run ``work`` (which returns the files it wrote and
        facts to keep) and record it."""
        raise_if_pending()  # a signal whose exception a finalizer swallowed stops the build here
        key = key_of(inputs)
        record = self.store.reusable(name, key, accept)
        if record is not None:
            self.log(f"{name}: cached (key {key[:12]})")
            self.statuses.append(StageStatus(name, "cached", 0.0))
            return record
        changed = self.store.changed_inputs(name, inputs)
        self.log(f"{name}: {describe}" + (f" (changed: {', '.join(changed)})" if changed else "")
                 + self._estimate(name))
        self.store.forget(name)
        started = time.perf_counter()
        outputs, info = work()
        raise_if_pending()
        record = self.store.save(name, key, inputs, outputs, info)
        seconds = time.perf_counter() - started
        self.log(f"{name}: done in {seconds:.1f} s")
        self.statuses.append(StageStatus(name, "ran", round(seconds, 2)))
        return record

    def skip(self, name: str, reason: str) -> None:
        """Record a stage that cannot run here (e.g. TensorRT engines without a GPU)."""
        self.log(f"{name}: skipped ({reason})")
        self.statuses.append(StageStatus(name, "skipped", 0.0, reason))

    def timed(self, name: str, describe: str, work: Callable[[], Any]) -> Any:
        """Run an uncached stage (verification), logging and timing it; return its result."""
        raise_if_pending()
        self.log(f"{name}: {describe}{self._estimate(name)}")
        started = time.perf_counter()
        result = work()
        raise_if_pending()
        seconds = time.perf_counter() - started
        self.log(f"{name}: done in {seconds:.1f} s")
        self.statuses.append(StageStatus(name, "ran", round(seconds, 2)))
        return result

    def as_list(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.statuses]

    def save_last_run(self) -> Path:
        """Record this run's statuses in ``.stages/last_run.json``."""
        path = self.store.folder / LAST_RUN
        write_json(path, {"stages": self.as_list()})
        return path
