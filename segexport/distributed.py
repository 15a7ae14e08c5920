"""Running under ``torchrun``: process-group setup, rank-0 helpers, sharding and exact reductions.

Everything here is PyTorch's own engine (``torch.distributed``); segexport adds no coordination
of its own. A process started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) joins a process group: ``nccl`` with one GPU per process
when CUDA is available, else ``gloo`` on CPUs. Without those variables every helper here
degrades to the single-process answer (the whole range, the matrix itself, rank 0), so library
code calls them unconditionally.

Evaluation is exact under any number of processes: the validation indices are cut into
contiguous shards aligned to the evaluation batch (every batch holds the same images as in a
single process), and the per-shard confusion matrices (int64 counts) are summed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from segexport.data.source import Sample, SegmentationSource, check_index
from segexport.errors import ConfigError, MissingDependencyError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
RENDEZVOUS_VARS = ("MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class TorchrunEnv:
    """This process's place in the job, as ``torchrun`` describes it in the environment."""

    rank: int
    world_size: int
    local_rank: int


@dataclass(frozen=True)
class DistContext:
    """The initialised process group as seen by this process.

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes in the job (all nodes).
        local_rank: rank on this node; selects the GPU with ``nccl``.
        backend: ``"nccl"`` or ``"gloo"``.
        device: where this process computes (``cuda:LOCAL_RANK`` with nccl, else ``cpu``).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"environment variable {name}={env[name]!r} is not an integer; launch with torchrun") from None


def torchrun_env(env: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; None when the process was not started by torchrun.

    Raises:
        ConfigError: only some of the variables are set, or their values do not make sense.
    """
    env = os.environ if env is None else env
    present = [name for name in TORCHRUN_VARS if name in env]
    if not present:
        return None
    missing = [name for name in TORCHRUN_VARS + RENDEZVOUS_VARS if name not in env]
    if missing:
        raise ConfigError(
            f"{', '.join(present)} set but {', '.join(missing)} not; launch with torchrun, which sets "
            f"{', '.join(TORCHRUN_VARS + RENDEZVOUS_VARS)}, or unset {', '.join(present)}"
        )
    rank, world, local = (_env_int(env, name) for name in TORCHRUN_VARS)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} is not a valid process layout")
    return TorchrunEnv(rank=rank, world_size=world, local_rank=local)


def local_device_index(env: Mapping[str, str] | None = None) -> int:
    """The CUDA device index this process computes on: ``LOCAL_RANK`` under torchrun (the GPU
    :func:`init_distributed` selects), else torch's current device (0 unless changed).

    Raises:
        ConfigError: an incomplete or invalid torchrun environment.
    """
    launched = torchrun_env(env)
    if launched is not None:
        return launched.local_rank
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def current_context() -> DistContext | None:
    """The process group this process belongs to; None when none is initialised (a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    backend = str(dist.get_backend())
    rank = dist.get_rank()
    local = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return DistContext(rank=rank, world_size=dist.get_world_size(), local_rank=local, backend=backend, device=device)


def init_distributed() -> DistContext | None:
    """Join the torchrun job this process belongs to (nccl on GPUs, gloo on CPUs); None outside torchrun.

    An already initialised process group is reused as it is.

    Raises:
        ConfigError: an incomplete torchrun environment, or more processes on a node than it has GPUs.
        MissingDependencyError: a torch build without torch.distributed.
    """
    env = torchrun_env()
    if env is None:
        return None
    if not dist.is_available():
        raise MissingDependencyError(
            "this torch build has no torch.distributed; install the standard torch wheel to run under torchrun"
        )
    if dist.is_initialized():
        return current_context()
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if env.local_rank >= count:
            raise ConfigError(
                f"LOCAL_RANK {env.local_rank} has no GPU: this node has {count}; "
                f"use --nproc-per-node {count} or fewer"
            )
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=env.rank, world_size=env.world_size, device_id=device)
    else:
        dist.init_process_group("gloo", rank=env.rank, world_size=env.world_size)
    return current_context()


def destroy_distributed() -> None:
    """Leave the process group (no-op when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session() -> Iterator[DistContext | None]:
    """Join the torchrun job for the duration of a command, and leave it afterwards.

    Yields the context (None outside torchrun). A process group that existed before is left alone.
    """
    owned = torchrun_env() is not None and not (dist.is_available() and dist.is_initialized())
    ctx = init_distributed()
    try:
        yield ctx
    finally:
        if owned:
            destroy_distributed()


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the one that logs, shows progress and writes files."""
    ctx = current_context()
    return ctx is None or ctx.is_main


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    ctx = current_context()
    if ctx is None:
        return
    if ctx.backend == "nccl":
        dist.barrier(device_ids=[ctx.device.index])  # names the GPU so NCCL does not guess one
    else:
        dist.barrier()


def shard_bounds(count: int, rank: int, world_size: int, *, block: int = 1) -> range:
    """Indices of ``range(count)`` that process ``rank`` of ``world_size`` handles.

    The indices are cut into blocks of ``block`` consecutive items and every process gets a
    contiguous run of whole blocks, as even as possible (a process may get none). Shards are
    disjoint, cover ``range(count)`` in order, and start at multiples of ``block``, so batches
    of ``block`` items are the same as in one process.

    Raises:
        ValueError: a negative count, a rank outside the world, or a block below 1.
    """
    if count < 0 or block < 1 or not 0 <= rank < world_size:
        raise ValueError(f"cannot shard {count} items in blocks of {block} for rank {rank} of {world_size}")
    blocks = -(-count // block)
    first, last = rank * blocks // world_size, (rank + 1) * blocks // world_size
    return range(min(first * block, count), min(last * block, count))


def shard_range(count: int, *, block: int = 1) -> range:
    """This process's shard of ``range(count)`` (:func:`shard_bounds`); all of it in a single process."""
    ctx = current_context()
    if ctx is None:
        return range(count)
    return shard_bounds(count, ctx.rank, ctx.world_size, block=block)


class ShardedSource:
    """A view of the items ``indices`` of a source (nothing is read up front)."""

    def __init__(self, source: SegmentationSource, indices: range) -> None:
        self._source = source
        self._indices = indices
        self.classes = source.classes
        self.name = source.name

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Sample:
        return self._source[self._indices[check_index(index, len(self._indices))]]


def shard_source(source: SegmentationSource, *, block: int = 1) -> SegmentationSource:
    """This process's shard of ``source`` (:func:`shard_range`); the source itself in a single process."""
    if current_context() is None:
        return source
    return ShardedSource(source, shard_range(len(source), block=block))


def all_reduce_confusion(cm: np.ndarray) -> np.ndarray:
    """Sum integer counts (a confusion matrix, any shape) over all processes; exact (int64).

    Every process gets the total. In a single process the input comes back as int64.

    Raises:
        ValueError: ``cm`` holds non-integer values.
    """
    counts = np.asarray(cm)
    if counts.dtype.kind not in "iub":
        raise ValueError(f"confusion counts must be integers, not {counts.dtype}")
    ctx = current_context()
    if ctx is None:
        return counts.astype(np.int64)
    total = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64)).to(ctx.device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.cpu().numpy()


def all_reduce_mean(value: float) -> float:
    """Mean of a float over all processes (float64); the value itself in a single process."""
    ctx = current_context()
    if ctx is None:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total.item()) / ctx.world_size
