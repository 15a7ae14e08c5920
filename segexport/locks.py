"""One writer per output folder: a build (or verify) holds ``FOLDER/.segexport.lock`` while it runs.

The lock is an exclusive ``flock`` on that file, so the kernel releases it when its process
ends, however it ends: a lock is never left behind by a killed build. The file says who holds
it (process, host, command, start time); a clean exit empties it, so a non-empty file found
unlocked is the record of a process that was killed, and the new holder says it took over.
The file stays in place: removing it would let a process that opened it just before the
removal lock a file that no longer guards the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from segexport.errors import InputError

LOCK_NAME = ".segexport.lock"


@dataclass(frozen=True)
class FolderLock:
    """A held lock; ``taken_over`` describes a killed holder whose lock was found, if any."""

    path: Path
    taken_over: str | None


def _holder(path: Path) -> str | None:
    """Who the lock file says holds it, in words (None when it is empty or unreadable)."""
    try:
        data = json.loads(path.read_text() or "null")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(data.get("started", 0))))
    return f"process {data.get('pid')} on {data.get('host')} ({data.get('command')}, since {started})"


# Folders this process holds locked (resolved path -> the lock file's descriptor), so that a
# claim inside a build does not try to lock the build folder a second time.
_HELD: dict[Path, int] = {}
_COMMAND: list[str] = []  # the running CLI command while it may hold locks (see command_locks)
_TAKEN_OVER: dict[Path, str] = {}  # a killed holder's record, found when this process took a lock


def _acquire(root: Path, command: str, option: str) -> tuple[int, str | None]:
    """Lock ``root`` (created if missing); the descriptor and a killed holder's record, if any.

    Raises:
        InputError: another live process holds it (exit 2, naming that process).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(f"{root}: cannot lock the output folder ({exc.strerror}); choose another {option}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _holder(root / LOCK_NAME) or "another process"
        raise InputError(f"{root}: in use by {holder}; wait for it to finish or choose another {option}") from None
    stale = _holder(root / LOCK_NAME)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    return fd, stale


def _release(key: Path) -> None:
    fd = _HELD.pop(key)
    os.ftruncate(fd, 0)  # any exit but a kill: nothing to take over
    os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, command: str, option: str = "--out") -> Iterator[FolderLock]:
    """Hold the folder's lock for the block (the folder is created if missing).

    Raises:
        InputError: another live process holds it (exit 2, naming that process).
    """
    root = Path(folder)
    key = root.resolve()
    if key in _HELD:  # held already by this process (an enclosing command)
        yield FolderLock(root / LOCK_NAME, _TAKEN_OVER.pop(key, None))
        return
    fd, stale = _acquire(root, command, option)
    _HELD[key] = fd
    try:
        yield FolderLock(root / LOCK_NAME, stale)
    finally:
        _release(key)


@contextlib.contextmanager
def command_locks(command: str) -> Iterator[None]:
    """While a CLI command runs, :func:`hold` locks the folders it writes into, until it ends."""
    _COMMAND.append(command)
    held = set(_HELD)
    try:
        yield
    finally:
        _COMMAND.pop()
        for key in set(_HELD) - held:
            _release(key)


def is_held(folder: Path) -> bool:
    """Whether this process holds ``folder``'s lock (a build writing into its own folder)."""
    return folder.resolve() in _HELD


def hold(folder: Path, option: str = "--out") -> None:
    """Lock an existing output folder until the running CLI command ends (see :func:`command_locks`).

    Outside a CLI command (library calls, tests) it does nothing: the caller owns its folders.

    Raises:
        InputError: another process holds the folder (a build running in it, say).
    """
    key = folder.resolve()
    if not _COMMAND or key in _HELD or not folder.is_dir():
        return
    _HELD[key], stale = _acquire(folder, _COMMAND[-1], option)
    if stale is not None:
        _TAKEN_OVER[key] = stale
