"""Atomic file and folder writes: an interrupted run never leaves a half-written artifact.

Each write is also recorded in its folder's ledger (:mod:`segexport.ownership`), so later runs
know which files segexport wrote and may replace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from segexport import interrupts, ownership
from segexport.errors import InputError


def _default_mode(directory: bool = False) -> int:
    # mkstemp/mkdtemp create 0600/0700 entries; artifacts should get the usual umask-derived mode.
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _through_links(path: Path) -> Path:
    """The path a symbolic link leads to: a link the user made stays a link, and what it points
    at is written (renaming onto the link itself would replace the link)."""
    return path.resolve() if path.is_symlink() else path


def _writable_parent(path: Path) -> Path:
    parent = path.parent
    missing = [p for p in (parent, *parent.parents) if not p.exists()]
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{parent}: cannot create the output folder ({exc.strerror}); choose another --out") from exc
    if not os.access(parent, os.W_OK):
        raise InputError(f"{parent}: output folder is not writable; choose another --out")
    for folder in reversed(missing):  # a folder made inside a segexport folder is segexport's too
        if (folder.parent / ownership.LEDGER_NAME).is_file():
            ownership.record_folder(folder)
    return parent


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = _through_links(Path(path))
    parent = _writable_parent(target)
    fd, tmp = tempfile.mkstemp(prefix=ownership.temporary_prefix(target.name), suffix=".part", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        interrupts.raise_if_pending()  # a stop asked for while the file was written: keep the old one
        os.chmod(tmp_path, _default_mode())
        digest = ownership.file_digest(tmp_path)
        ownership.expect_file(target, digest)
        os.replace(tmp_path, target)
        ownership.record_file(target, digest)
    finally:
        tmp_path.unlink(missing_ok=True)


def check_output_file(path: str | os.PathLike | None, option: str, *, source: str,
                      force: bool = False) -> Path | None:
    """``path`` as a Path when a file of ``source`` may be written there (None stays None);
    checked before any work. An existing file there must be one segexport wrote as ``source``
    (an earlier JUnit report, say): never a model, a checkpoint or a file of the user's.

    Raises:
        InputError: it is a folder, its folder cannot be written, or it holds another file.
    """
    if path is None:
        return None
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{option} {target}: a folder where a file is expected; pass a file path")
    ownership.claim_outputs(target.parent, [target.name], source=source, force=force, option=option,
                            replace_unsourced=False, into_owned=True)
    return target


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds.

    Files in the old folder that segexport did not write (kept there under ``--force``) are
    hard-linked into the new one before the swap, so replacing the folder loses none of them.
    """
    target = _through_links(Path(path))
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: is a file, not a folder; choose another --out")
    parent = _writable_parent(target)
    tmp = Path(tempfile.mkdtemp(prefix=ownership.temporary_prefix(target.name), suffix=".part", dir=parent))
    try:
        yield tmp
        interrupts.raise_if_pending()
        os.chmod(tmp, _default_mode(directory=True))
        ownership.seal_tree(tmp, target)
        if target.is_dir():
            _keep_foreign(target, tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=ownership.temporary_prefix(target.name), suffix=".old", dir=parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        ownership.record_folder(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _keep_foreign(old: Path, new: Path) -> None:
    """Hard-link into ``new`` every entry of ``old`` that segexport did not write and ``new`` lacks."""
    for name in ownership.foreign_entries(old):
        src, dst = old / name, new / name
        if dst.is_dir() and src.is_dir() and not src.is_symlink():
            _keep_foreign(src, dst)
        elif dst.exists() or dst.is_symlink():
            continue
        elif src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dst, symlinks=True, copy_function=os.link)
        else:
            os.link(src, dst, follow_symlinks=False)
