"""TensorRT's calibration-cache text format: written, parsed back exactly, malformed files refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from segexport.errors import InputError
from segexport.precision.trt_cache import (
    format_trt_cache,
    parse_trt_cache,
    read_trt_cache,
    scale_of,
    version_number,
    write_trt_cache,
)

AMAX = {"images": 2.64, "/backbone/conv1/Conv_output_0": 11.5, "add_1": 1e-3, "zero": 0.0}


def test_known_values():
    # amax 127 -> scale 1.0 = 0x3f800000; TensorRT's own caches read like this
    text = format_trt_cache({"x": 127.0, "y": 254.0}, (10, 3, 0))
    assert text == "TRT-100300-EntropyCalibration2\nx: 3f800000\ny: 40000000\n"


def test_version_numbers():
    assert version_number((10, 3, 0)) == 100300
    assert version_number((10, 14, 1)) == 101401
    assert version_number((8, 6, 1)) == 8601


def test_round_trip_gives_the_same_scales(tmp_path):
    path = tmp_path / "calibration.cache"
    write_trt_cache(path, AMAX, (10, 0, 0))
    cache = read_trt_cache(path)
    assert cache.version == 100000 and cache.calibrator == "EntropyCalibration2"
    assert list(cache.scales) == sorted(AMAX)
    for name, amax in AMAX.items():
        assert cache.scales[name] == scale_of(amax)  # float32 bits, exactly
        if amax > 0:
            assert cache.amax[name] == pytest.approx(amax, rel=1e-6)
    assert cache.scales["zero"] == 1.0  # a zero range gets scale 1, as onnxruntime's quantizer does
    assert scale_of(11.5) == float(np.float32(11.5 / 127.0))


def test_hex_is_big_endian_float32():
    (line,) = [ln for ln in format_trt_cache({"t": 3.0}, (10, 0, 0)).splitlines() if ln.startswith("t:")]
    assert struct.unpack(">f", bytes.fromhex(line.split(": ")[1]))[0] == scale_of(3.0)


def test_short_hex_and_windows_line_ends_parse():
    cache = parse_trt_cache("TRT-8601-EntropyCalibration2\r\nin: 3c010a14\r\nsmall: 1\r\n")
    assert cache.version == 8601 and cache.scales["small"] == struct.unpack(">f", bytes.fromhex("00000001"))[0]


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("images: 3f800000\n", "first line"),
    ("TRT-100000-EntropyCalibration2\nimages 3f800000\n", "line 2"),
    ("TRT-100000-EntropyCalibration2\nimages: 3f80000g\n", "line 2"),
    ("TRT-100000-EntropyCalibration2\na: 3f800000\na: 3f800000\n", "twice"),
])
def test_malformed_caches_are_refused(text, match):
    with pytest.raises(InputError, match=match):
        parse_trt_cache(text)
