"""INT8 calibration with ``onnxruntime.quantization``'s calibrators, and its reusable ranges.

The calibrator (``create_calibrator``: MinMax, Entropy or Percentile) is fed one batch at a
time so that a progress bar can follow it and histograms never hold more than one batch of
activations. Two library defaults are overridden, for reasons measured here:

- Entropy gets 2048 histogram bins (``num_bins``), as TensorRT's entropy calibrator uses. The
  library's default of 128 bins equals its 128 quantized bins, and then the KL search has a
  single candidate: the full range, i.e. min-max, whatever the method says. ``quantize_static``
  cannot pass ``num_bins``, which is one reason this module drives the calibrator itself.
- Ranges are collected per tensor as (min, max); each target makes them symmetric or not
  when it quantizes, so one calibration serves the ``tensorrt`` and ``cpu`` targets alike.

The ranges are written in the library's own cache format (``save_tensors_data``'s JSON, read
back by ``quantize_static(calibration_cache_path=...)``) plus a ``segexport`` block recording
the model's SHA-256, the method and the images, so a cache is never applied to another model.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segexport.errors import ConfigError, InputError
from segexport.fsutil import atomic_path
from segexport.precision.calibration_data import CalibrationImages
from segexport.progress import progress_bar

METHODS = ("entropy", "minmax", "percentile")
# MinMax by default: on the tiny FCN-32s (cpu target, logits tail in FP32) it lost 1.26 mIoU
# points before the sensitivity pass against 2.83 for entropy and 2.77 for percentile, and it
# calibrated 12x faster than entropy (17 s vs 211 s); BENCHMARKS.md has the zoo-wide figures.
# Entropy stays available for activations with rare outliers (it clips them; minmax keeps them).
DEFAULT_METHOD = "minmax"
DEFAULT_PERCENTILE = 99.99
HISTOGRAM_BINS = 2048
ENTROPY_QUANTIZED_BINS = 128
CACHE_FORMAT = "segexport-calibration/1"
PIXELS_PER_BATCH = 1 << 20  # about 1M pixels per calibration batch: 16 at 256x256, 4 at 512x512
MAX_BATCH = 16
# Advice the library logs on every call; ``quant_pre_process`` fails on these graphs (symbolic
# shape inference stops at the dynamic batch's Shape ops) and, with that step skipped, changes no node.
_NOISE = ("consider to run pre-processing", "consider pre-processing")


@dataclass(frozen=True)
class CalibrationSettings:
    """How ranges are computed: ``method`` and, for ``percentile``, the percentile kept."""

    method: str = DEFAULT_METHOD
    percentile: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "percentile":
            value = DEFAULT_PERCENTILE if self.percentile is None else float(self.percentile)
            if not (math.isfinite(value) and 50.0 < value <= 100.0):
                raise ConfigError(f"--percentile must be in (50, 100], got {self.percentile}")
            object.__setattr__(self, "percentile", value)
        elif self.percentile is not None:
            raise ConfigError(f"--percentile applies to --method percentile, not {self.method}")

    @property
    def ort_method(self) -> Any:
        from onnxruntime.quantization import CalibrationMethod

        return {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile}[self.method]

    def calibrator_options(self) -> dict[str, Any]:
        """``create_calibrator``'s ``extra_options`` (see the module docstring)."""
        if self.method == "entropy":
            return {"num_bins": HISTOGRAM_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS}
        if self.method == "percentile":
            # symmetric=False: a two-sided cut on signed values, so ReLU outputs keep min 0.
            return {"num_bins": HISTOGRAM_BINS, "percentile": self.percentile, "symmetric": False}
        return {"symmetric": False}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.calibrator_options()}


@contextlib.contextmanager
def quiet_quantization(notes: list[str] | None = None) -> Iterator[None]:
    """Silence onnxruntime.quantization's prints (stdout) and collect its log warnings.

    Warnings other than the pre-processing advice are appended to ``notes``.
    """
    import onnxruntime as ort

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    ort.set_default_logger_severity(3)  # C++ warnings (e.g. unused initializers) off
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeHandler(handler)
        ort.set_default_logger_severity(2)
        if notes is not None:
            messages = (r.getMessage().strip() for r in records)
            notes.extend(f"onnxruntime.quantization: {m}" for m in messages if not any(n in m for n in _NOISE))


def calibration_batch(input_size: tuple[int, int], static_batch: int | None) -> int:
    """The batch to calibrate with: the model's fixed batch, else about 1M pixels (1 to 16)."""
    if static_batch is not None:
        return static_batch
    return max(1, min(MAX_BATCH, PIXELS_PER_BATCH // (input_size[0] * input_size[1])))


class _OneBatch:
    """A ``CalibrationDataReader`` that yields one batch, then ends."""

    def __init__(self, name: str, batch: np.ndarray) -> None:
        self._item: dict[str, np.ndarray] | None = {name: batch}

    def get_next(self) -> dict[str, np.ndarray] | None:
        item, self._item = self._item, None
        return item

    def __iter__(self) -> _OneBatch:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _padded(x: np.ndarray, batch: int, static: bool) -> np.ndarray:
    """A last, short batch padded with copies of its last image when the batch is fixed."""
    if not static or len(x) == batch:
        return x
    return np.concatenate([x, np.repeat(x[-1:], batch - len(x), axis=0)])


def _external_locations(model_path: Path) -> set[str]:
    """The files external tensors of the main graph (initializers, Constant values) live in."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    tensors = [*graph.initializer, *(a.t for node in graph.node for a in node.attribute if a.HasField("t"))]
    return {entry.value for tensor in tensors for entry in tensor.external_data if entry.key == "location"}


def private_copy(model_path: str | Path, folder: str | Path) -> Path:
    """``model_path`` and its external data files, copied byte for byte into ``folder``.

    ONNX Runtime's quantization tools write a shape-inferred ``NAME-inferred.onnx`` beside the
    model they are given; handing them this copy keeps that file out of the user's folder
    (which may be read-only or shared). A missing external data file is left missing: loading
    the copy then fails the way loading the original would.
    """
    source, target = Path(model_path), Path(folder)
    for name in [source.name, *sorted(_external_locations(source))]:
        src, dst = source.parent / name, target / name
        if not src.is_file() or not dst.resolve().is_relative_to(target.resolve()):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)  # not a hard link: onnx refuses external data with several links
    return target / source.name


def calibrate(model_path: str | Path, images: CalibrationImages, settings: CalibrationSettings, *,
              input_name: str, static_batch: int | None = None, progress: bool = True,
              notes: list[str] | None = None) -> Any:
    """Collect activation ranges of every quantizable tensor of ``model_path``.

    Returns:
        The library's ``TensorsData`` (per tensor: lowest, highest and, for histogram
        methods, the histogram), tensors in name order.
    """
    from onnxruntime.quantization import TensorsData, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    batch = calibration_batch(images.preprocess.size, static_batch)
    total = math.ceil(len(images) / batch)
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # quantize_static's default set
    with tempfile.TemporaryDirectory(prefix="segexport-calib-") as tmp, quiet_quantization(notes):
        calibrator = create_calibrator(
            private_copy(model_path, tmp), op_types, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=settings.ort_method, extra_options=settings.calibrator_options(),
        )
        with progress_bar(progress) as bar:
            task = bar.add_task("calibrate", total=total, info=f"{settings.method}, {len(images)} images")
            for x in images.batches(batch):
                calibrator.collect_data(_OneBatch(input_name, _padded(x, batch, static_batch is not None)))
                bar.advance(task)
            # entropy's threshold search is pure Python in the library: about 0.5 s per tensor here
            bar.update(task, info=f"{settings.method}: computing ranges of the tensors")
            ranges = calibrator.compute_data()
    return TensorsData(ranges.calibration_method, dict(sorted(ranges.data.items())))


def save_ranges(path: str | Path, ranges: Any, provenance: dict[str, Any]) -> None:
    """Write ``ranges`` in the library's cache format, plus a ``segexport`` provenance block."""
    from onnxruntime.quantization.calibrate import CalibrationCacheEncoder

    payload = {**ranges.to_dict(), "smooth_quant": False, "segexport": {"format": CACHE_FORMAT, **provenance}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, cls=CalibrationCacheEncoder, sort_keys=True) + "\n")


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The ``segexport`` block of a calibration cache.

    Raises:
        InputError: unreadable, not JSON, or not a segexport calibration cache.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--calib-cache {p}: not a readable calibration cache ({type(exc).__name__})") from exc
    block = data.get("segexport") if isinstance(data, dict) else None
    if not isinstance(block, dict) or block.get("format") != CACHE_FORMAT or "data" not in data:
        raise InputError(f"--calib-cache {p}: not a calibration.json written by segexport quantize; "
                         "pass one, or a path that does not exist yet to write one")
    return block


def check_cache(path: str | Path, model_sha256: str, settings: CalibrationSettings) -> dict[str, Any]:
    """The provenance of a cache that fits this model and method.

    Raises:
        InputError: not a segexport cache (see :func:`read_provenance`).
        ConfigError: computed for another model, method or percentile.
    """
    block = read_provenance(path)
    if block.get("model_sha256") != model_sha256:
        raise ConfigError(f"--calib-cache {path} holds ranges of another model (sha256 {str(block.get('model_sha256'))[:12]}); "
                          "delete it or pass a new path")
    if block.get("settings") != settings.to_dict():
        raise ConfigError(f"--calib-cache {path} was computed with {block.get('settings')}, not {settings.to_dict()}; "
                          "match --method/--percentile or pass a new path")
    return block
