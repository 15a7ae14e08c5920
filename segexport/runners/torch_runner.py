"""The PyTorch runner: a segexport checkpoint folder on the CPU, in float32 or true float16.

``fp16`` converts the model's weights to ``torch.float16`` and feeds it half inputs, so every
convolution computes in half precision on the CPU: the honest FP16 parity figure, unlike ONNX
Runtime's CPU provider, which upcasts FP16 graphs to FP32. Logits come back as float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segexport.checkpoint import ModelConfig, load_checkpoint
from segexport.errors import InputError
from segexport.runners.base import Runner, check_images, check_precision

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class TorchRunner(Runner):
    """A checkpoint folder's model in eval mode under ``torch.inference_mode``.

    Attributes:
        config: the checkpoint's ``ModelConfig`` (classes, preprocessing).
        threads: intra-op threads used while running (None: torch's current setting).
    """

    backend = "torch"

    def __init__(self, artifact: str | Path, *, precision: str | None = None, threads: int | None = None) -> None:
        """Load the checkpoint folder ``artifact``.

        Raises:
            InputError: an unsupported precision, a bad thread count or a missing folder.
            CheckpointError: corrupt weights or weights that do not fit the recorded architecture.
        """
        check_precision(precision, tuple(_DTYPES), self.backend)
        if threads is not None and threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        self.artifact = Path(artifact)
        self.precision = precision or "fp32"
        self.threads = threads
        model, config = load_checkpoint(self.artifact)
        self.task = getattr(model, "task", "semantic")
        self._names: tuple[str, ...] = tuple(getattr(model, "output_names", ("logits",)))
        if self.task == "instance" and self.precision != "fp32":
            raise InputError(f"{self.artifact}: instance networks run in float32 in PyTorch (their detection "
                             "ops have no half kernels on the CPU); drop the precision")
        self._dtype = _DTYPES[self.precision]
        self._model: torch.nn.Module | None = model.to(self._dtype).eval()
        self.config: ModelConfig = config
        self.input_size = config.preprocess.size
        label = "float16 (true half arithmetic)" if self.precision == "fp16" else "float32"
        self.device = f"cpu, torch {label}, {threads or torch.get_num_threads()} threads"

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        # torch's thread count is process-wide: set it for this run only, then restore it.
        previous = torch.get_num_threads()
        if self.threads is not None and self.threads != previous:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)

    def _forward(self, images: np.ndarray) -> Any:
        if self._model is None:
            raise InputError(f"{self.artifact}: the runner was closed; open a new one")
        x = torch.from_numpy(check_images(images, self)).to(self._dtype)
        with self._threads(), torch.inference_mode():
            return self._model(x)

    def run(self, images: np.ndarray) -> np.ndarray:
        if self.task == "instance":
            raise self.no_logits()
        return self._forward(images).float().numpy()

    def run_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.task != "instance":
            return super().run_outputs(images)
        return {name: value.numpy() for name, value in zip(self._names, self._forward(images))}

    def close(self) -> None:
        self._model = None
