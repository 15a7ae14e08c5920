"""Bounds on seeds, sizes, batches and counts, checked up front with the limit named.

Every value a user passes that scales work or memory is checked here, before any work, so an
absurd one is one line (``ConfigError``, exit 2) naming the limit and the fix, never a
traceback or a process the kernel kills. Memory is an estimate against what the machine has
available now (``MemAvailable``); the per-pixel figures below say what they cover.
"""

from __future__ import annotations

import os
from pathlib import Path

from segexport.errors import ConfigError

SEED_MAX = 2**32 - 1
"""Largest seed: numpy's legacy seeding and most tools take 32-bit seeds; torch's seed plus a
process rank stays far inside its 64 bits."""
SIDE_MAX = 8192  # pixels per side of an input
BATCH_MAX = 1024  # images per batch (inference or training)
IMAGES_MAX = 1_000_000  # images of a split, a calibration sample or a verification
EPOCHS_MAX = 10_000
RUNS_MAX = 100_000  # timed runs per row
THREADS_MAX = 1024  # CPU threads of a runner
INSTANCES_MAX = 256  # Triton model instances (instance_group count)

INFERENCE_BYTES_PER_PIXEL = 4096
"""Peak process memory per input pixel of one FP32 forward pass, batch 1. Measured as the growth
of peak RSS per pixel from 128x128 to 256x256 (torch, no grad, AMD EPYC): tiny models 0.15-0.85
KiB, paper DeepLabv3+ 0.9 KiB, PSPNet 1.3 KiB, U-Net 2.4 KiB (64 channels at full resolution);
rounded up to 4 KiB for the runtimes' arenas and the inputs and outputs held beside them."""
DECODED_BYTES_PER_PIXEL = 16
"""Memory per pixel of one loaded val or calibration image: 3 bytes RGB + 1 byte mask + 12 bytes
normalised float32 RGB (verify keeps all three for every image)."""
LABEL_BYTES_PER_PIXEL = 8  # one row's predicted labels (int64 at most), kept per image for the metrics


def check_seed(seed: int | None, option: str = "--seed") -> int | None:
    """``seed`` unchanged when it is an integer in ``0..SEED_MAX`` (None stays None).

    Raises:
        ConfigError: a seed outside that range or not an integer.
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise ConfigError(f"{option} {seed!r} is outside 0..{SEED_MAX} (2**32 - 1); pass a seed in that range")
    return seed


def check_count(value: int | None, option: str, maximum: int, *, minimum: int = 1) -> int | None:
    """``value`` unchanged when it is an integer in ``minimum..maximum`` (None stays None).

    Raises:
        ConfigError: outside that range or not an integer.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not minimum <= value <= maximum):
        raise ConfigError(f"{option} must be an integer from {minimum} to {maximum}, got {value!r}")
    return value


def check_input_size(size: tuple[int, int] | None, option: str = "--input-size") -> tuple[int, int] | None:
    """``size`` (height, width) unchanged when both sides are in ``1..SIDE_MAX`` (None stays None).

    Divisibility (a model's output stride) is the model's own check.

    Raises:
        ConfigError: a side outside that range.
    """
    if size is None:
        return None
    if any(isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= SIDE_MAX for side in size):
        raise ConfigError(f"{option} {'x'.join(map(str, size))}: each side must be 1 to {SIDE_MAX} pixels; "
                          f"pass a smaller size, e.g. 512x512")
    return size


def estimate_bytes(size: tuple[int, int], batch: int = 1) -> int:
    """Estimated peak memory of one forward pass of ``batch`` images of ``size`` (height, width)."""
    return size[0] * size[1] * batch * INFERENCE_BYTES_PER_PIXEL


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes the machine can give a process now: ``MemAvailable``, else free physical pages, else None."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"


MEMORY_SHARE = 0.5
"""The share of the available memory one estimate may take: the rest is for what the estimates
leave out (the model's weights, the runtimes' arenas, the process itself, other processes)."""


def check_memory(needed: int, what: str, fix: str, available: int | None = None) -> None:
    """Refuse work whose estimated memory ``needed`` exceeds :data:`MEMORY_SHARE` of what the
    machine has available.

    Args:
        needed: the estimate in bytes (e.g. from :func:`estimate_bytes`).
        what: the work, for the message (``"--input-size 4096x4096 at batch 8"``).
        fix: what to pass instead (``"a smaller --input-size or --batch"``).
        available: bytes available (default: :func:`available_memory`; unknown: no check).

    Raises:
        ConfigError: naming the estimate, the available memory and ``fix``.
    """
    available = available_memory() if available is None else available
    if available is not None and needed > available * MEMORY_SHARE:
        raise ConfigError(f"{what} needs about {_gib(needed)} of memory (estimate), more than half of the "
                          f"{_gib(available)} available; pass {fix}")


def check_inference_memory(size: tuple[int, int], batch: int, fix: str, *, where: str = "",
                           available: int | None = None) -> None:
    """:func:`check_memory` for a forward pass of ``batch`` images of ``size``.

    Raises:
        ConfigError: the estimate exceeds the available memory; the message starts with
            ``where`` (e.g. the artifact) and ends with ``fix``.
    """
    check_memory(estimate_bytes(size, batch), f"{where}a forward pass at {'x'.join(map(str, size))} "
                 f"with batch {batch}", fix, available)


def check_decoded_images(count: int, size: tuple[int, int], option: str, *, rows: int = 0,
                         available: int | None = None) -> None:
    """:func:`check_memory` for ``count`` images of ``size`` held in memory at once, with the
    predicted labels of ``rows`` runners on each.

    Raises:
        ConfigError: the estimate exceeds the available memory.
    """
    per_pixel = DECODED_BYTES_PER_PIXEL + rows * LABEL_BYTES_PER_PIXEL
    check_memory(count * size[0] * size[1] * per_pixel,
                 f"{option} {count} ({'x'.join(map(str, size))} images, held at once)", f"a smaller {option}", available)
