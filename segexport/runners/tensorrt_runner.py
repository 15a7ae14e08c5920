"""The TensorRT runner: a serialized engine on a CUDA device, through TensorRT's name-based API.

Written against TensorRT 10 and 11 (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``). The
engine's I/O tensor names, types and shapes come from the engine itself; device memory is
torch CUDA tensors on a torch stream, on the same device as the engine. Before deserialising,
the build record beside the engine is checked: an engine built by another TensorRT version or
for another GPU, or one that is not the engine its record describes, is refused with a message
saying to rebuild it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segexport.engine import trt_api
from segexport.engine.availability import current_gpu, engine_unavailable_reason
from segexport.engine.record import engine_mismatch, read_engine_record, record_path
from segexport.errors import (
    CheckFailed,
    ConfigError,
    InputError,
    MissingDependencyError,
)
from segexport.runners.base import PRECISIONS, Runner, check_images, check_precision

# TensorRT DataType member name -> torch dtype name (looked up by name: members differ across versions).
_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                 "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def _torch_dtype(trt_dtype: Any) -> Any:
    import torch

    name = _TORCH_DTYPES.get(trt_dtype.name)
    if name is None:
        raise InputError(f"engine tensor type {trt_dtype.name} has no torch equivalent; rebuild with float32 I/O")
    return getattr(torch, name)


def _record_input_size(record: dict[str, Any]) -> tuple[int, int]:
    profile = record["settings"]["profile"]
    size = record.get("metadata", {}).get("input_size")
    if size is not None:
        h, w = json.loads(size)
        return int(h), int(w)
    return int(profile["opt"][2]), int(profile["opt"][3])


def check_device_index(artifact: Path, index: int, count: int) -> None:
    """Refuse a CUDA device index this process cannot see.

    Raises:
        ConfigError: ``index`` is not one of the ``count`` visible devices.
    """
    if not 0 <= index < count:
        raise ConfigError(f"{artifact}: CUDA device {index} does not exist here ({count} visible); "
                          f"under torchrun use --nproc-per-node {count} or fewer, else check CUDA_VISIBLE_DEVICES")


def engine_bytes(artifact: Path, record: dict[str, Any]) -> bytes:
    """The engine file, checked against the sha256 its record names (records from before it have none).

    Raises:
        InputError: the engine is not the one its record describes (e.g. a build interrupted between
            writing the two).
    """
    blob = artifact.read_bytes()
    expected = record.get("engine_sha256")
    if expected is not None and hashlib.sha256(blob).hexdigest() != expected:
        raise InputError(f"{artifact}: the engine does not match its record {record_path(artifact).name}; "
                         f"rebuild it with `segexport engine {record.get('onnx', 'MODEL.onnx')}`")
    return blob


class TensorRTRunner(Runner):
    """One deserialised engine and an execution context on CUDA device ``device_index``.

    Engine, context, buffers and stream all live on that device: TensorRT creates its objects on
    the thread's current CUDA device, so loading and every run happen inside ``torch.cuda.device``.

    Attributes:
        max_batch: the largest batch of the engine's profile (larger inputs run in chunks).
        io: ``{name: (mode, dtype)}`` of the engine's I/O tensors, as TensorRT reports them.
    """

    backend = "tensorrt"

    def __init__(self, artifact: str | Path, *, precision: str | None = None, device_index: int | None = None) -> None:
        """Check the engine's record against this machine, then load it on ``device_index``
        (default: torch's current device; ``open_runner`` passes LOCAL_RANK's under torchrun).

        Raises:
            InputError: a missing engine or record, a record of another TensorRT version or GPU,
                an engine that does not match its record, a ``precision`` other than the engine's,
                an engine without a float logits output, or no execution context (device memory).
            ConfigError: ``device_index`` is not a visible CUDA device.
            MissingDependencyError: no tensorrt package, NVIDIA driver or CUDA device (names which).
        """
        check_precision(precision, PRECISIONS, self.backend)
        self.artifact = Path(artifact)
        self._closed = False
        record = self._usable_record(precision)
        trt = trt_api.tensorrt_module()
        import torch

        index = torch.cuda.current_device() if device_index is None else device_index
        check_device_index(self.artifact, index, torch.cuda.device_count())
        gpu = current_gpu(index)
        mismatch = engine_mismatch(record, trt.__version__, gpu)
        if mismatch:
            raise InputError(f"{self.artifact}: {mismatch}")
        self.precision = record["precision"]
        self.task = record.get("metadata", {}).get("task", "semantic")
        self._device = torch.device("cuda", index)
        with torch.cuda.device(self._device):
            self._load(trt, engine_bytes(self.artifact, record))
            self._stream = torch.cuda.Stream(self._device)
        self.max_batch = int(record["settings"]["profile"]["max"][0])
        self.input_size = _record_input_size(record)
        self.device = f"{gpu['name']} (cuda:{index}), TensorRT {trt.__version__}"

    def _usable_record(self, precision: str | None) -> dict[str, Any]:
        record = read_engine_record(self.artifact)
        if precision is not None and precision != record["precision"]:
            raise InputError(f"{self.artifact}: the engine's precision is {record['precision']}, not {precision}; "
                             "drop the precision or pass the engine of that precision")
        reason = engine_unavailable_reason()
        if reason:
            raise MissingDependencyError(f"{self.artifact}: {reason}")
        return record

    def _load(self, trt: Any, blob: bytes) -> None:
        """Runtime, engine and execution context on the current CUDA device; I/O names and types."""
        self._logger = trt_api.make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if self._runtime is None:
            raise MissingDependencyError(f"{self.artifact}: TensorRT cannot create a runtime "
                                         f"({trt_api.first_error(self._logger)})")
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise InputError(f"{self.artifact}: TensorRT cannot deserialise it "
                             f"({trt_api.first_error(self._logger)}); rebuild it")
        self._context = self._engine.create_execution_context()
        if self._context is None:  # TensorRT returns None, e.g. when device memory runs out
            raise InputError(f"{self.artifact}: TensorRT could not create an execution context "
                             f"({trt_api.first_error(self._logger)}); free GPU memory (see nvidia-smi) "
                             "or rebuild the engine with a smaller --max-batch")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.io = {n: (self._engine.get_tensor_mode(n), self._engine.get_tensor_dtype(n)) for n in names}
        inputs = [n for n, (mode, _) in self.io.items() if mode == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1:
            raise InputError(f"{self.artifact}: expected one image input, the engine has {inputs}")
        self._input = inputs[0]
        self._logits = None if self.task == "instance" else self._logits_output(trt)
        batch = self._engine.get_tensor_shape(self._input)[0]
        self.fixed_batch = int(batch) if batch > 0 else None

    def _logits_output(self, trt: Any) -> str:
        floats = [n for n in self._outputs if self.io[n][1] in (trt.DataType.FLOAT, trt.DataType.HALF)
                  and len(self._engine.get_tensor_shape(n)) == 4]
        if "logits" in floats:
            return "logits"
        if not floats:
            raise InputError(f"{self.artifact}: no float [N, C, H, W] logits output (outputs: {self._outputs}); "
                             "build the engine from a model exported with --output logits or both")
        return floats[0]

    def _chunks(self, x: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """Pieces the engine accepts, and how many real images each holds (a fixed batch is padded)."""
        step = self.fixed_batch or self.max_batch
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            real = len(chunk)
            if self.fixed_batch is not None and real < self.fixed_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.fixed_batch - real, axis=0)])
            yield chunk, real

    def _execute(self, chunk: np.ndarray, wanted: tuple[str, ...]) -> tuple[dict[str, np.ndarray], float]:
        """The ``wanted`` outputs of one chunk, copied to the host, and the seconds the engine ran
        (CUDA events around execute_async_v3)."""
        import torch

        ctx = self._context
        with torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            x = torch.from_numpy(chunk).to(self._device).to(_torch_dtype(self.io[self._input][1])).contiguous()
            if not ctx.set_input_shape(self._input, tuple(x.shape)):
                raise InputError(f"{self.artifact}: input shape {tuple(x.shape)} is outside the engine's profile; "
                                 "rebuild it with matching --min/--max-batch or sizes")
            ctx.set_tensor_address(self._input, x.data_ptr())
            outputs = {}
            for name in self._outputs:
                shape = tuple(ctx.get_tensor_shape(name))
                if min(shape) < 0:
                    raise CheckFailed(f"{self.artifact}: output {name} has data-dependent shape {shape}")
                outputs[name] = torch.empty(shape, dtype=_torch_dtype(self.io[name][1]), device=self._device)
                ctx.set_tensor_address(name, outputs[name].data_ptr())
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(self._stream)
            ok = ctx.execute_async_v3(self._stream.cuda_stream)
            end.record(self._stream)
            # Copies ordered after the engine on this stream; half outputs come back as float32.
            found = {name: (outputs[name].float() if outputs[name].is_floating_point() else outputs[name]).cpu().numpy()
                     for name in wanted}
        self._stream.synchronize()
        if not ok:
            raise CheckFailed(f"{self.artifact}: TensorRT failed to run it on {chunk.shape} (see its log above)")
        return found, start.elapsed_time(end) / 1000.0

    def _check_open(self, images: np.ndarray) -> np.ndarray:
        if self._closed:
            raise InputError(f"{self.artifact}: the runner was closed; open a new one")
        return check_images(images, self)

    def _outputs_of(self, x: np.ndarray, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        parts = [(self._execute(chunk, wanted)[0], real) for chunk, real in self._chunks(x)]
        return {name: np.concatenate([found[name][:real] for found, real in parts]) for name in wanted}

    def run(self, images: np.ndarray) -> np.ndarray:
        x = self._check_open(images)
        if self._logits is None:
            raise self.no_logits()
        return self._outputs_of(x, (self._logits,))[self._logits]

    def run_outputs(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return self._outputs_of(self._check_open(images), tuple(self._outputs))

    def timed_run(self, images: np.ndarray) -> float:
        """Seconds the engine computed on ``images``, from CUDA events around each ``execute_async_v3``.

        Uploads and downloads are not counted (as trtexec's "GPU Compute Time"); with more images
        than the profile's max batch, the chunks' times are summed.
        """
        x = self._check_open(images)
        return sum(self._execute(chunk, ())[1] for chunk, _ in self._chunks(x))  # nothing copied back

    def close(self) -> None:
        # Context before engine before runtime: TensorRT's documented destruction order.
        self._closed = True
        self._context = None
        self._engine = None
        self._runtime = None


def open_engine(artifact: str | Path, *, precision: str | None = None, threads: int | None = None) -> TensorRTRunner:
    """The registry's opener: checks TensorRT can run here before reading the engine's record,
    so a CPU machine says what to install first; ``threads`` does not apply to a GPU engine.

    Under torchrun each process uses LOCAL_RANK's GPU (the one distributed.py selects), so the
    engine, its context, the buffers and the stream all sit on one device.

    Raises:
        MissingDependencyError: no tensorrt package, NVIDIA driver or CUDA device (names which).
    """
    from segexport.distributed import local_device_index
    from segexport.engine import availability

    reason = availability.engine_unavailable_reason()  # looked up when called, so tests can stand in for it
    if reason:
        raise MissingDependencyError(f"{artifact}: {reason}")
    return TensorRTRunner(artifact, precision=precision, device_index=local_device_index())
