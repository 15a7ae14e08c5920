"""TensorRT's calibration cache, the text format ``trtexec --calib=FILE`` and
``IInt8Calibrator.read_calibration_cache`` read::

    TRT-100300-EntropyCalibration2
    images: 3c8b8b8c
    /backbone/conv1/Conv_output_0: 3d1e2b6a

The header names the TensorRT version (``major*10000 + minor*100 + patch`` from 10.0 on,
``major*1000 + ...`` before) and the calibrator; each line is a tensor name and its scale,
``amax / 127`` as the big-endian hex of an IEEE-754 float32. TensorRT ignores a cache whose
calibrator differs from the one it builds with (trtexec uses EntropyCalibration2) and may
reject another version's header, so the version is the installed TensorRT's when it imports.

onnxruntime's ``write_calibration_table`` writes a different format (for its own TensorRT
execution provider: ``name value`` lines and a flatbuffers table), so this one is written here.

Who reads it: TensorRT 10 users who build *implicitly* quantized engines from the FP32 model
(``trtexec --onnx=model.onnx --int8 --calib=calibration.cache``, no ``--stronglyTyped``).
segexport's own engines do not: they are strongly typed, built from the Q/DQ model, whose scales
are in the graph. TensorRT 11 reads no calibration cache at all (the calibrator API and implicit
INT8 are gone, and trtexec ignores ``--calib`` with ``--stronglyTyped``), so with TensorRT 11
installed the header still names TensorRT 10.0.0, the version family that can use the file.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from segexport.engine.trt_api import tensorrt_version, version_tuple
from segexport.errors import InputError
from segexport.fsutil import atomic_path

CALIBRATOR = "EntropyCalibration2"
DEFAULT_TRT_VERSION = (10, 0, 0)  # when tensorrt is not installed: the oldest version segexport targets
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{1,8})$")


@dataclass(frozen=True)
class TrtCalibrationCache:
    """A parsed cache: TensorRT version number, calibrator name, and a float32 scale per tensor."""

    version: int
    calibrator: str
    scales: dict[str, float]

    @property
    def amax(self) -> dict[str, float]:
        """The symmetric range ``scale * 127`` of each tensor."""
        return {name: scale * 127.0 for name, scale in self.scales.items()}


def version_number(version: tuple[int, int, int]) -> int:
    """TensorRT's ``NV_TENSORRT_VERSION`` for (major, minor, patch)."""
    major, minor, patch = version
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def cache_trt_version(installed: str | None) -> tuple[int, int, int]:
    """The TensorRT version a calibration cache's header names, given the installed one's ``__version__``.

    The installed TensorRT 10.x itself; ``DEFAULT_TRT_VERSION`` when TensorRT does not import
    (missing or broken) or is 11 or newer, which reads no calibration cache.
    """
    if installed is None:
        return DEFAULT_TRT_VERSION
    version = version_tuple(installed)
    return version if version[0] < 11 else DEFAULT_TRT_VERSION


def installed_trt_version() -> tuple[int, int, int]:
    """The version for the cache header here: :func:`cache_trt_version` of the installed TensorRT.

    Never raises: a broken ``tensorrt`` install counts as none (``quantize --int8`` needs no GPU).
    """
    return cache_trt_version(tensorrt_version())


def _float32_hex(value: float) -> str:
    return struct.pack(">f", value).hex()


def scale_of(amax: float) -> float:
    """The float32 scale TensorRT stores for a symmetric range ``amax``; 1.0 for an all-zero
    tensor (as onnxruntime's quantizer does, since a zero scale is invalid)."""
    scale = struct.unpack(">f", struct.pack(">f", abs(amax) / 127.0))[0]
    return scale if scale > 0.0 and math.isfinite(scale) else 1.0


def format_trt_cache(amax: Mapping[str, float], version: tuple[int, int, int] | None = None) -> str:
    """The cache text for symmetric ranges ``amax`` (tensor name -> max |value|), names sorted."""
    header = f"TRT-{version_number(version or installed_trt_version())}-{CALIBRATOR}"
    lines = [header] + [f"{name}: {_float32_hex(scale_of(amax[name]))}" for name in sorted(amax)]
    return "\n".join(lines) + "\n"


def write_trt_cache(path: str | Path, amax: Mapping[str, float], version: tuple[int, int, int] | None = None) -> None:
    """Write :func:`format_trt_cache` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(format_trt_cache(amax, version))


def parse_trt_cache(text: str, origin: str = "calibration cache") -> TrtCalibrationCache:
    """Parse TensorRT's calibration-cache text.

    Raises:
        InputError: a missing or malformed header, a malformed line or a repeated tensor.
    """
    lines = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
    header = _HEADER.match(lines[0]) if lines else None
    if header is None:
        raise InputError(f"{origin}: first line must be TRT-<version>-<calibrator>, got {lines[0][:60]!r}" if lines
                         else f"{origin}: empty calibration cache")
    scales: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        match = _LINE.match(line)
        if match is None:
            raise InputError(f"{origin}, line {number}: expected 'tensor: hexscale', got {line[:60]!r}")
        name = match[1]
        if name in scales:
            raise InputError(f"{origin}, line {number}: tensor {name!r} appears twice")
        scales[name] = struct.unpack(">f", bytes.fromhex(match[2].zfill(8)))[0]
    return TrtCalibrationCache(int(header[1]), header[2], scales)


def read_trt_cache(path: str | Path) -> TrtCalibrationCache:
    """Parse the cache file at ``path``.

    Raises:
        InputError: unreadable or malformed.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read the calibration cache ({type(exc).__name__})") from exc
    return parse_trt_cache(text, str(p))
