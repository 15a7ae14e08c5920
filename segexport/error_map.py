"""The one translation of library and OS errors into segexport's typed errors.

``segexport.cli.main`` runs every command inside :func:`translated_errors`, and the few
places that read a user's file (the ONNX loader, ONNX Runtime sessions, image and checkpoint
readers) wrap that read in it too, so the message names the file. An exception that is none
of the known library or OS errors is not bad input: it passes through unchanged (the CLI
reports it as an internal error).

Third-party packages are never imported here: an exception can only be of a package's type
when that package is already in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from segexport.errors import CheckpointError, InputError, SegexportError

Where = str | Path | None
_REEXPORT = "pass a valid artifact (re-export it with `segexport export`)"
_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_LOAD = re.compile(r"Load model from \S+ failed:")
_CPP_LOCATION = re.compile(r"\S+\.(?:cc|cpp|h):\d+ ")
_ORT_FIXES = (
    ("IR version", "re-export it with `segexport export`, which writes an IR version this ONNX Runtime reads"),
    ("xternal", "keep the external data file the model names beside it, complete (copy both together)"),
    ("is not a registered function/op", "replace the custom-domain operator with standard ONNX operators"),
    ("", _REEXPORT),
)
_OS_FIXES = {
    errno.ENOENT: "no such file or folder; check the path",
    errno.EISDIR: "a folder where a file is expected; pass a file path",
    errno.ENOTDIR: "a file where a folder is expected; pass a folder",
    errno.EACCES: "permission denied; fix its permissions or choose another path",
    errno.EPERM: "operation not permitted; fix its permissions or choose another path",
    errno.EROFS: "read-only file system; choose a writable --out",
    errno.ENOSPC: "no space left on the device; free some space or choose another --out",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another --out",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
    errno.ELOOP: "too many levels of symbolic links; fix the link",
}


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _name(where: Where, fallback: str = "a file") -> str:
    return str(where) if where is not None else fallback


def _loaded(module: str, attribute: str) -> type[BaseException] | None:
    """``module.attribute`` when ``module`` is already imported (else no exception can be of it)."""
    found = sys.modules.get(module)
    return getattr(found, attribute, None) if found is not None else None


def _is(exc: BaseException, module: str, *attributes: str) -> bool:
    types = tuple(t for t in (_loaded(module, a) for a in attributes) if isinstance(t, type))
    return bool(types) and isinstance(exc, types)


def _drop_cpp_function(text: str) -> str:
    """``Name(args...) rest`` or ``Name rest`` -> ``rest`` (the function after a source location)."""
    name, _, rest = text.partition(" ")
    if "(" not in name:
        return rest
    depth = 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if char == ")" and depth == 0:
            return text[i + 1 :].lstrip()
    return text


def ort_reason(exc: BaseException) -> str:
    """ONNX Runtime's message without status prefixes, C++ source locations and signatures."""
    text = _ORT_STATUS.split(str(exc).strip())[-1]
    text = _ORT_LOAD.sub("", text)
    located = _CPP_LOCATION.search(text)
    if located is not None:
        text = text[: located.start()] + _drop_cpp_function(text[located.end() :])
    return " ".join(text.split())[:300]


def _onnxruntime(exc: BaseException, where: Where) -> SegexportError | None:
    if type(exc).__module__ != "onnxruntime.capi.onnxruntime_pybind11_state":
        return None
    reason = ort_reason(exc)
    fix = next(fix for key, fix in _ORT_FIXES if key in reason)
    return InputError(f"{_name(where, 'the model')}: ONNX Runtime cannot load it ({reason}); {fix}")


def _onnx(exc: BaseException, where: Where) -> SegexportError | None:
    if _is(exc, "onnx.checker", "ValidationError"):
        reason = _first_line(exc)
        fix = _ORT_FIXES[1][1] if "should be stored in" in reason else _REEXPORT
        return InputError(f"{_name(where, 'the model')}: not a valid ONNX model ({reason}); {fix}")
    if _is(exc, "onnx.shape_inference", "InferenceError"):
        return InputError(f"{_name(where, 'the model')}: ONNX shape inference fails ({_first_line(exc)}); {_REEXPORT}")
    if _is(exc, "google.protobuf.message", "DecodeError"):
        return InputError(f"{_name(where, 'the model')}: not an ONNX model (truncated or another format); {_REEXPORT}")
    return None


def _external_data(exc: BaseException, where: Where) -> SegexportError | None:
    """onnx's Python check of external data bounds raises a plain ValueError."""
    if isinstance(exc, ValueError) and str(exc).startswith("External data"):
        return InputError(f"{_name(where, 'the model')}: {_first_line(exc)}; {_ORT_FIXES[1][1]}")
    return None


def _image(exc: BaseException, where: Where) -> SegexportError | None:
    if _is(exc, "PIL", "UnidentifiedImageError"):
        return InputError(f"{_name(where, 'an image')}: not an image Pillow can read; pass PNG or JPEG files")
    if _is(exc, "PIL.Image", "DecompressionBombError"):
        return InputError(f"{_name(where, 'an image')}: too many pixels to decode safely ({_first_line(exc)}); "
                          "pass a smaller image")
    return None


def _safetensors(exc: BaseException, where: Where) -> SegexportError | None:
    if _is(exc, "safetensors", "SafetensorError"):
        return CheckpointError(f"{_name(where, 'the checkpoint')}: not a readable safetensors file "
                               f"({_first_line(exc)}); copy or train the checkpoint again")
    return None


def _os_path(exc: OSError, where: Where) -> str:
    """The path an OSError is about: the destination of a rename of a ``.part`` temp file."""
    first, second = exc.filename, exc.filename2
    if second is not None and str(first).endswith(".part"):
        return str(second)
    return _name(first if first is not None else where)


def _os(exc: BaseException, where: Where) -> SegexportError | None:
    if not isinstance(exc, OSError):
        return None
    if exc.errno is None:  # e.g. Pillow's "image file is truncated": a file's content, when we know the file
        return InputError(f"{where}: {_first_line(exc)}; pass an intact file") if where is not None else None
    fix = _OS_FIXES.get(exc.errno, f"{exc.strerror or _first_line(exc)}; check the path")
    return InputError(f"{_os_path(exc, where)}: {fix}")


def _text(exc: BaseException, where: Where) -> SegexportError | None:
    if isinstance(exc, UnicodeDecodeError):
        return InputError(f"{_name(where)}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8")
    if isinstance(exc, json.JSONDecodeError):
        return InputError(f"{_name(where, 'a JSON file')}: not valid JSON ({exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}); fix or regenerate it")
    return None


_TRANSLATORS: tuple[Callable[[BaseException, Where], SegexportError | None], ...] = (
    _onnxruntime, _onnx, _external_data, _image, _safetensors, _os, _text,
)


def as_segexport_error(exc: BaseException, where: Where = None) -> SegexportError | None:
    """The typed error a library or OS exception means (bad input, exit 2), or None when it is
    not a known one (an internal error).

    Args:
        exc: the exception raised.
        where: the file being read or written, named in the message (when the exception does
            not name one itself).
    """
    if isinstance(exc, SegexportError):
        return exc
    for translate in _TRANSLATORS:
        mapped = translate(exc, where)
        if mapped is not None:
            return mapped
    return None


@contextlib.contextmanager
def translated_errors(where: Where = None) -> Iterator[None]:
    """Re-raise known library and OS errors of the block as typed errors naming ``where``.

    Raises:
        SegexportError: what :func:`as_segexport_error` made of the exception; anything it
            does not know passes through unchanged.
    """
    try:
        yield
    except SegexportError:
        raise
    except Exception as exc:
        mapped = as_segexport_error(exc, where)
        if mapped is None:
            raise
        raise mapped from exc
