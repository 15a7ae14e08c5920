"""The one runner interface: normalised images in, logits (or detections) out, whatever the backend.

A runner owns one loaded artifact (a checkpoint folder, an ONNX file or a TensorRT engine) and
nothing else: no data loading, no comparison. Verification and benchmarks feed every runner
the same cached arrays and compare the results themselves.
"""

from __future__ import annotations

import abc
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from segexport.errors import InputError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

PRECISIONS = ("fp32", "fp16", "int8")


class Runner(abc.ABC):
    """A loaded model of one backend.

    Attributes:
        backend: the registry name (``runners.registry``).
        artifact: the checkpoint folder, ``.onnx`` or ``.plan`` it runs.
        precision: ``fp32``, ``fp16`` or ``int8``.
        fixed_batch: the only batch size the artifact accepts, or None for any.
        device: human-readable, e.g. ``cpu (2 threads)``.
        input_size: ``(height, width)`` the artifact was made for (benchmarks make inputs of
            this size), or None when unknown.
        inference_precision: the arithmetic the backend chose when it is not simply the graph's
            (OpenVINO's CPU plugin may compute an FP32 graph in bf16), else None.
        task: ``semantic`` (``run`` gives logits) or ``instance`` (``run_outputs`` gives the
            padded detections ``boxes``, ``scores``, ``classes``, ``masks``, ``count``).
    """

    backend: ClassVar[str]
    artifact: Path
    precision: str
    fixed_batch: int | None = None
    device: str = "cpu"
    input_size: tuple[int, int] | None = None
    inference_precision: str | None = None
    task: str = "semantic"

    @abc.abstractmethod
    def run(self, images: np.ndarray) -> np.ndarray:
        """float32 NCHW normalised images -> float32 NCHW logits (N, classes, H, W), at input size.

        Raises:
            InputError: an instance network (see :meth:`run_outputs`).
        """

    def run_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name: ``{"logits": ...}`` for a semantic network; an instance
        network's padded detections (``boxes [N, D, 4]``, ``scores [N, D]``, ``classes [N, D]``,
        ``masks [N, D, M, M]``, ``count [N]``)."""
        return {"logits": self.run(images)}

    def forward(self, images: np.ndarray) -> None:
        """One inference on ``images``, whatever the task (what latency measures)."""
        if self.task == "instance":
            self.run_outputs(images)
        else:
            self.run(images)

    def timed_run(self, images: np.ndarray) -> float:
        """Seconds for one :meth:`forward` (wall clock; GPU runners override with device events)."""
        start = time.perf_counter()
        self.forward(images)
        return time.perf_counter() - start

    def no_logits(self) -> InputError:
        """The error ``run`` raises for an instance network, whose outputs are detections."""
        return InputError(f"{self.artifact}: an instance network's outputs are detections, not logits; "
                          "use run_outputs (segexport predict draws them)")

    def close(self) -> None:
        """Release the loaded model (the runner is unusable afterwards)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.artifact)!r}, precision={self.precision!r}, device={self.device!r})"


def check_images(images: np.ndarray, runner: Runner) -> np.ndarray:
    """``images`` as a C-contiguous float32 ``[N, 3, H, W]`` array, or InputError naming the runner.

    Raises:
        InputError: not a 4-D array with 3 channels.
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1] != 3:
        shape = getattr(images, "shape", type(images).__name__)
        raise InputError(f"{runner.artifact}: images must be float32 [N, 3, H, W], got {shape}")
    return np.ascontiguousarray(images, dtype=np.float32)


def check_precision(precision: str | None, allowed: tuple[str, ...], backend: str) -> None:
    """Raises InputError when ``precision`` is given and not one ``backend`` runs."""
    if precision is not None and precision not in allowed:
        raise InputError(f"the {backend} runner runs precision {' or '.join(allowed)}, not {precision!r}; "
                         "pass one of those")
