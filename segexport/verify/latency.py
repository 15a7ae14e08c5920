"""Latency, throughput and peak memory of a runner, and a description of the machine.

Latency is batch-1 wall time per ``Runner.timed_run`` (CUDA events for TensorRT) after a few
warm-up runs, summarised as p50/p90/p99. Throughput is images per second at a larger batch
(the artifact's fixed batch, else ``THROUGHPUT_BATCH``, fewer for large images) from the median batched run. Without
an explicit run count, timing stops early once a row has used ``TIME_LIMIT_S``, so paper-size
models on a CPU stay affordable; the runs actually made are reported.

Peak memory is the peak resident set size (RSS) of this process while a variant is loaded
and run, minus the RSS before it was loaded, sampled every ``RSS_INTERVAL_S`` from
``/proc/self/statm`` (Linux; None elsewhere). It counts host memory only (not GPU memory),
and memory an earlier variant freed but the allocator kept can hide part of a later one's.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from segexport.errors import ConfigError
from segexport.runners import Runner
from segexport.runners.registry import version_packages

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

DEFAULT_RUNS = 30
WARMUP_RUNS = 3
THROUGHPUT_BATCH = 8
THROUGHPUT_PIXELS = 1 << 20  # the default batch holds at most this many pixels (4 images at 512x512), at least 2 images
TIME_LIMIT_S = 10.0  # per row's batch-1 runs, only when the run count is not given explicitly
BATCHED_TIME_LIMIT_S = 5.0  # and for its batched runs (at least one after a warm-up)
MIN_RUNS = 5
RSS_INTERVAL_S = 0.005
_STATM = "/proc/self/statm"
MEMORY_METHOD = ("peak RSS while the variant is loaded and run minus RSS before loading, sampled every "
                 f"{RSS_INTERVAL_S * 1000:g} ms from {_STATM}; host memory only")
LATENCY_METHOD = (f"batch-1 wall time per run after {WARMUP_RUNS} warm-up runs (CUDA events on TensorRT); "
                  f"throughput from the median run at batch {THROUGHPUT_BATCH} (fewer for images over "
                  f"{THROUGHPUT_PIXELS // THROUGHPUT_BATCH} pixels, at least 2; or the artifact's fixed batch)")
VERSION_PACKAGES = version_packages()


def check_count(value: int | None, what: str) -> int | None:
    """``value`` unchanged, or ConfigError when it is given and not an integer >= 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def _time_runs(runner: Runner, images: np.ndarray, runs: int | None, *, default: int, minimum: int,
               limit: float = TIME_LIMIT_S) -> list[float]:
    """Seconds of each timed run: exactly ``runs``, or up to ``default`` (at least ``minimum``) within ``limit`` s."""
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < (runs or default):
        times.append(runner.timed_run(images))
        if runs is None and len(times) >= minimum and time.perf_counter() - started > limit:
            break
    return times


def throughput_batch(size: tuple[int, ...]) -> int:
    """The default throughput batch for images of ``size`` (H, W): ``THROUGHPUT_BATCH``, fewer for
    large images so a paper-size row's batched runs cost seconds, not minutes (2 at least)."""
    return max(2, min(THROUGHPUT_BATCH, THROUGHPUT_PIXELS // max(1, int(size[0]) * int(size[1]))))


def batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """The first ``batch`` images, repeated cyclically when there are fewer."""
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch])


def measure_latency(runner: Runner, images: np.ndarray, *, runs: int | None = None,
                    batch: int | None = None) -> dict[str, Any]:
    """Batch-1 latency percentiles and batched throughput of ``runner`` on ``images``.

    Args:
        runner: an open runner.
        images: normalised float32 ``[N, 3, H, W]``; the first is the batch-1 input, the first
            few (repeated if needed) the batched input.
        runs: timed batch-1 runs (default: up to ``DEFAULT_RUNS`` within ``TIME_LIMIT_S``);
            the batched figure uses a fifth as many (at least 3), or by default as many as fit
            ``BATCHED_TIME_LIMIT_S`` (at least one).
        batch: the throughput batch (default :func:`throughput_batch` of the image size; a
            fixed-batch artifact's own wins).

    Returns:
        ``latency_ms`` {p50, p90, p99, mean}, ``runs``, ``latency_batch`` (what a batch-1 run
        really ran: the fixed batch for a fixed-batch artifact), ``throughput_ips``, ``throughput_batch``.
    """
    single = np.ascontiguousarray(images[:1])
    for _ in range(WARMUP_RUNS):
        runner.forward(single)
    times = np.asarray(_time_runs(runner, single, runs, default=DEFAULT_RUNS, minimum=MIN_RUNS)) * 1000.0
    batch = runner.fixed_batch or batch or throughput_batch(images.shape[2:])
    batched = batch_of(images, batch)
    runner.forward(batched)  # warm-up: a new shape may trigger allocations or kernel selection
    batch_times = _time_runs(runner, batched, None if runs is None else max(3, runs // 5),
                             default=max(3, DEFAULT_RUNS // 5), minimum=1, limit=BATCHED_TIME_LIMIT_S)
    p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
    return {
        "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "mean": float(times.mean())},
        "runs": len(times),
        "latency_batch": runner.fixed_batch or 1,
        "throughput_ips": float(batch / np.median(batch_times)),
        "throughput_batch": batch,
    }


def current_rss() -> int | None:
    """This process's resident set size in bytes (None where ``/proc`` is not available)."""
    try:
        with open(_STATM) as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakRss:
    """Context manager sampling RSS on a thread; ``delta_mb`` = peak minus the RSS at entry."""

    def __init__(self, interval: float = RSS_INTERVAL_S) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._start: int | None = None
        self._peak: int | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._update()

    def _update(self) -> None:
        rss = current_rss()
        if rss is not None and (self._peak is None or rss > self._peak):
            self._peak = rss

    def __enter__(self) -> Self:
        self._start = self._peak = current_rss()
        if self._start is not None:
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        self._update()

    @property
    def delta_mb(self) -> float | None:
        if self._start is None or self._peak is None:
            return None
        return (self._peak - self._start) / 2**20


def host_description() -> str:
    """The CPU model and core count, e.g. ``Intel(R) Xeon(R) ... (2 cores)``."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []  # not Linux: platform's answer below
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    name = models[0] if models else (platform.processor() or platform.machine())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)"


def package_versions() -> dict[str, str | None]:
    """Python's and the installed versions of the packages that decide the figures (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
