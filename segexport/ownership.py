"""Which files segexport wrote: a ledger per folder, and the one output policy every command follows.

Every file segexport writes goes through :func:`segexport.fsutil.atomic_path` (or a folder
through ``atomic_dir``), which records it in its folder's ledger, ``.segexport-files.json``:
name, SHA-256, size and modification time, and where it came from (``source``). A folder may
also have an ``owner`` (the build of ``deeplabv3p``, a checkpoint of ``fcn8s``...).

Before a command writes anything it calls :func:`claim_outputs`, which refuses (exit 2, one
line, the fix named) an output folder that

- is a file, or holds a file segexport did not write (or one changed since it wrote it) where
  the command would write, or anywhere in a folder the command owns as a whole;
- holds the artifacts of another model or architecture (another ``owner`` or ``source``);

unless ``--force`` is given. Even then nothing is deleted: segexport's files are replaced
atomically (new under a temporary name, then renamed over the old) and other files stay.

A file is recognised by size and modification time first, by its SHA-256 when those differ.
Before a rename the new file's hash is added to the old entry (``pending``), so a process
killed between the rename and the ledger update still leaves a file the next run knows.
Ledger updates hold an exclusive ``flock`` on the folder, so concurrent writers do not lose
each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from segexport.errors import InputError
from segexport.hashing import file_sha256
from segexport.locks import LOCK_NAME, hold, is_held

LEDGER_NAME = ".segexport-files.json"
LEDGER_FORMAT = 1
_CHUNK = 1 << 20


file_digest = file_sha256  # the ledger's content hash is segexport's one file hash


TEMP_MARK = ".segexport-tmp."  # in every temporary name segexport makes: .NAME.segexport-tmp.<random>.part


def temporary_prefix(name: str) -> str:
    """The prefix of the temporary names made for ``name`` (``tempfile``'s ``prefix``)."""
    return f".{name}{TEMP_MARK}"


def is_temporary(name: str) -> bool:
    """A temporary name segexport made (``.NAME.segexport-tmp.<random>.part`` / ``.old``), the ledger
    or the lock; a user's ``.notes.old`` is not one."""
    return name in (LEDGER_NAME, LOCK_NAME) or (
        name.startswith(".") and TEMP_MARK in name and name.endswith((".part", ".old")))


def read_ledger(folder: Path) -> dict[str, Any]:
    """The folder's ledger (an empty one when there is none or it is unreadable)."""
    try:
        data = json.loads((folder / LEDGER_NAME).read_text())
        if isinstance(data, dict) and data.get("format") == LEDGER_FORMAT and isinstance(data.get("files"), dict):
            return data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    return {"format": LEDGER_FORMAT, "owner": None, "files": {}}


def _write_ledger(folder: Path, ledger: dict[str, Any]) -> None:
    tmp = folder / f"{temporary_prefix(LEDGER_NAME)}{os.getpid()}.part"
    tmp.write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / LEDGER_NAME)


# What this process's claims said about folders it has not written yet: owner and file sources,
# entered into a folder's ledger with the first file written there (a claim itself writes nothing).
_CLAIMS: dict[Path, dict[str, Any]] = {}


def _apply_claims(folder: Path, ledger: dict[str, Any]) -> None:
    claim = _CLAIMS.get(folder.resolve())
    if claim is None:
        return
    if claim["owner"] is not None:
        ledger["owner"] = claim["owner"]
    for name, source in claim["sources"].items():
        ledger["files"].setdefault(name, {})["source"] = source


@contextlib.contextmanager
def _locked_ledger(folder: Path) -> Iterator[dict[str, Any]]:
    """The folder's ledger, held under an exclusive lock and written back after the block."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ledger = read_ledger(folder)
        _apply_claims(folder, ledger)
        yield ledger
        _write_ledger(folder, ledger)
    finally:
        os.close(fd)  # releases the lock


def _stat_entry(path: Path, digest: str) -> dict[str, Any]:
    stat = path.stat()
    return {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def expect_file(target: Path, digest: str) -> None:
    """Note that ``target`` is about to be replaced by a file with SHA-256 ``digest``."""
    with _locked_ledger(target.parent) as ledger:
        entry = ledger["files"].setdefault(target.name, {})
        entry["pending"] = sorted({*entry.get("pending", []), digest})


def record_file(target: Path, digest: str) -> None:
    """Record ``target`` (just renamed into place, SHA-256 ``digest``) as written by segexport."""
    with _locked_ledger(target.parent) as ledger:
        old = ledger["files"].get(target.name, {})
        ledger["files"][target.name] = {**_stat_entry(target, digest), "source": old.get("source")}


def record_folder(target: Path) -> None:
    """Record the folder ``target`` as segexport's in its parent's ledger (its files have their own)."""
    with _locked_ledger(target.parent) as ledger:
        old = ledger["files"].get(target.name, {})
        ledger["files"][target.name] = {"dir": True, "source": old.get("source")}


def set_owner(folder: Path, owner: str) -> None:
    """Record who owns ``folder`` as a whole (e.g. ``the build of fcn8s``)."""
    with _locked_ledger(folder) as ledger:
        ledger["owner"] = owner


def seal_tree(root: Path, target: Path | None = None) -> None:
    """Write the ledgers of a freshly written tree (the temporary folder of ``atomic_dir``); the
    top one takes what the claims of ``target`` (the folder it will become) said."""
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        entries: dict[str, Any] = {d: {"dir": True, "source": None} for d in dirs}
        entries.update({f: {**_stat_entry(here / f, file_digest(here / f)), "source": None}
                        for f in files if f != LEDGER_NAME})
        ledger = {"format": LEDGER_FORMAT, "owner": None, "files": entries}
        if target is not None and here == root:
            _apply_claims(target, ledger)
        _write_ledger(here, ledger)


def is_known(path: Path, ledger: dict[str, Any] | None = None) -> bool:
    """Whether segexport wrote a file under this name (or this folder and everything in it).

    The file may have changed since (a damaged artifact): it is still segexport's to replace.
    """
    if is_temporary(path.name):
        return True
    entry = (ledger if ledger is not None else read_ledger(path.parent))["files"].get(path.name)
    if entry is None or path.is_symlink():
        return False
    if path.is_dir():
        return bool(entry.get("dir")) and not foreign_entries(path)
    return path.is_file() and not entry.get("dir") and ("sha256" in entry or "pending" in entry)


def is_ours(path: Path, ledger: dict[str, Any] | None = None) -> bool:
    """Whether segexport wrote the file ``path`` and it is unchanged since (size and modification
    time as recorded, else the same SHA-256)."""
    entry = (ledger if ledger is not None else read_ledger(path.parent))["files"].get(path.name)
    if entry is None or path.is_symlink() or not path.is_file() or entry.get("dir"):
        return False
    stat = path.stat()
    if stat.st_size == entry.get("size") and stat.st_mtime_ns == entry.get("mtime_ns"):
        return True
    return file_digest(path) in {entry.get("sha256"), *entry.get("pending", [])}


def foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that segexport did not write (sub-folders checked all the way down)."""
    ledger = read_ledger(folder)
    return sorted(p.name for p in folder.iterdir() if not is_known(p, ledger))


def _preview(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def path_source(kind: str, path: str | os.PathLike, folder: str | os.PathLike) -> str:
    """A ``source`` naming a file: relative to the output ``folder`` when it lies inside it (so a
    folder copied or named another way still matches), else absolute. ``model ./model.onnx``."""
    target, root = Path(path).resolve(), Path(folder).resolve()
    return f"{kind} ./{target.relative_to(root).as_posix()}" if target.is_relative_to(root) else f"{kind} {target}"


def _refuse(folder: Path, problem: str, option: str) -> InputError:
    return InputError(f"{folder}: {problem}; pass --force to write there anyway (files of the names segexport "
                      f"writes are replaced, no other is touched) or choose another {option}")


def _check_names(folder: Path, ledger: dict[str, Any], names: Iterable[str], source: str | None,
                 replace_unsourced: bool) -> list[str]:
    """Problems with writing ``names`` into ``folder`` (files not ours, or of another source)."""
    problems: list[str] = []
    for name in names:
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        recorded = ledger["files"].get(name, {}).get("source")
        if not is_known(path, ledger):
            problems.append(f"{name!r} exists and segexport did not write it")
        elif source is not None and recorded != source and (recorded is not None or not replace_unsourced):
            problems.append(f"{name!r} is {'the artifact of ' + recorded if recorded else 'another artifact'}, "
                            f"not {source}")
    return problems


def claim_outputs(folder: str | os.PathLike, names: Iterable[str] = (), *, source: str | None = None,
                  owner: str | None = None, force: bool = False, option: str = "--out",
                  replace_unsourced: bool = True, into_owned: bool = False) -> Path:
    """Check, before any work, that a command may write ``names`` into ``folder``; record their source.

    Args:
        folder: the output folder (created when missing).
        names: the file or folder names the command will write there.
        source: what the files are made from (e.g. ``model /abs/model.onnx``); an existing file of
            another source is refused.
        owner: the command owns the whole folder (a build, a checkpoint): every file in it must be
            segexport's, and an earlier owner other than ``owner`` is refused.
        force: write anyway (files of ``names`` replaced atomically, other files left alone).
        option: the option naming the folder, for the message.
        replace_unsourced: whether a segexport file with no recorded source may be replaced
            (False for outputs that a user may point anywhere, such as ``--junit``).
        into_owned: the command may add its files to a folder another command owns whole (verify's
            report in a build folder). Otherwise only the owner's own process (which holds the
            folder's lock) writes there.

    Returns:
        The folder. Nothing is written, not even the folder: the owner and sources are entered
        in its ledger with the first file the command writes there.

    Raises:
        InputError: the folder is a file, cannot be created or written, or holds what is named
            above (exit 2).
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file, not a folder; choose another {option}")
    names = list(names)
    if path.is_dir():
        ledger = read_ledger(path)
        problems = _check_names(path, ledger, names, source, replace_unsourced)
        if owner is not None:
            foreign = foreign_entries(path)
            if foreign:
                problems.append(f"holds {len(foreign)} file(s) segexport did not write ({_preview(foreign)})")
            if ledger.get("owner") not in (None, owner):
                problems.append(f"holds the artifacts of {ledger['owner']}, not {owner}")
        elif ledger.get("owner") is not None and not into_owned and not is_held(path):
            problems.append(f"belongs to {ledger['owner']}, whose artifacts only that command writes")
        if problems and not force:
            raise _refuse(path, problems[0], option)
    check_writable(path, option)
    hold(path, option)  # a folder that exists is locked while the command writes into it
    claim = _CLAIMS.setdefault(path.resolve(), {"owner": None, "sources": {}})
    claim["owner"] = owner if owner is not None else claim["owner"]
    claim["sources"].update({name: source for name in names})
    return path


def check_writable(path: Path, option: str = "--out") -> None:
    """Raises InputError when the folder ``path`` could not be created or written. Creates nothing
    that stays: a temporary file in the nearest existing folder proves it takes new files (a
    permission check alone would pass for root on a read-only mount)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{path}: cannot create the output folder ({existing} is a file); choose another {option}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise InputError(f"{path}: output folder is not writable ({exc.strerror}); choose another {option}") from exc
