"""torch.distributed: sharding, exact reductions, DDP training, and the CLI under torchrun.

Multi-process tests run 2 CPU processes with gloo; the nccl/SyncBatchNorm test needs CUDA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from dist_helpers import (
    evaluate_job,
    evaluate_on_device_job,
    free_port,
    freeze_norm_and_dropout,
    initial_fcn8s,
    launch,
    train_frozen,
)

from segexport.distributed import (
    DistContext,
    all_reduce_confusion,
    shard_bounds,
    shard_range,
    torchrun_env,
)
from segexport.errors import ConfigError
from segexport.train import TrainConfig, check_sync_bn, steps_per_epoch
from segexport.verify.evaluate import evaluate_checkpoint, evaluate_confusion

VAL_IMAGES = 40  # blocks of 16: rank 0 gets images 0-15, rank 1 gets 16-39


@pytest.mark.parametrize("block", [1, 3, 16])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_partition_the_indices_in_whole_blocks(world, block):
    for count in range(60):
        shards = [shard_bounds(count, r, world, block=block) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(count))
        assert all(s.start % block == 0 for s in shards if len(s))
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= block  # as even as whole blocks allow


def test_single_process_helpers_are_identities():
    assert shard_range(7, block=16) == range(7)
    cm = np.arange(9, dtype=np.int32).reshape(3, 3)
    out = all_reduce_confusion(cm)
    assert out.dtype == np.int64 and np.array_equal(out, cm)
    with pytest.raises(ValueError, match="integers"):
        all_reduce_confusion(cm.astype(np.float32))


def test_torchrun_environment_is_read_and_checked():
    full = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    assert torchrun_env({}) is None
    env = torchrun_env(full)
    assert (env.rank, env.world_size, env.local_rank) == (1, 4, 1)
    with pytest.raises(ConfigError, match="MASTER_PORT"):
        torchrun_env({k: v for k, v in full.items() if k != "MASTER_PORT"})
    with pytest.raises(ConfigError, match="not an integer"):
        torchrun_env({**full, "RANK": "one"})
    with pytest.raises(ConfigError, match="not a valid process layout"):
        torchrun_env({**full, "RANK": "4"})


def test_sync_bn_on_cpus_and_short_epochs_are_config_errors():
    cpu = DistContext(rank=0, world_size=2, local_rank=0, backend="gloo", device=torch.device("cpu"))
    cfg = TrainConfig(epochs=1, batch_size=2, lr=1e-3, sync_bn=True)
    with pytest.raises(ConfigError, match="sync_bn = true needs CUDA"):
        check_sync_bn(cfg, cpu)
    check_sync_bn(cfg, None)  # one process: nothing to synchronise
    assert steps_per_epoch(3, 4) == 1  # a single process keeps its one short step
    assert steps_per_epoch(17, 4, 2) == 2
    with pytest.raises(ConfigError, match="cannot fill one global batch"):
        steps_per_epoch(7, 4, 2)


def test_distributed_confusion_matrix_equals_single_process(tiny_checkpoint, tmp_path):
    single = evaluate_confusion(tiny_checkpoint, images=VAL_IMAGES, progress=False).confusion
    ranks = launch(evaluate_job, tmp_path, tiny_checkpoint, VAL_IMAGES)
    assert single.sum() == VAL_IMAGES * 64 * 64  # no ignored pixels in the synthetic val split
    for cm in ranks:
        assert cm.dtype == np.int64
        np.testing.assert_array_equal(cm, single)


def test_ddp_steps_match_one_process_with_the_combined_batch(tmp_path):
    ranks = launch(train_frozen, tmp_path, 2)
    single = train_frozen(None, 4)["state"]
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key  # all-reduced gradients: identical weights
        torch.testing.assert_close(value, single[key], rtol=0, atol=1e-5, msg=key)
    before = freeze_norm_and_dropout(initial_fcn8s()).state_dict()
    moved = [k for k, v in before.items() if (v - single[k]).abs().max() > 1e-4]
    assert len(moved) > len(before) // 2  # the two steps did train: the comparison is not of initial weights


def _torchrun(*args: str, port: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "segexport", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_COLOR": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180, env=env)


def test_cli_train_and_evaluate_under_torchrun(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("epochs = 1\ntrain_images = 16\nval_images = 20\nbatch_size = 4\ninput_size = [64, 64]\n")
    out = tmp_path / "ckpt"
    run = _torchrun("train", "fcn8s", "--recipe", str(recipe), "--out", str(out), "--json", port=free_port())
    assert run.returncode == 0, run.stderr
    reported = json.loads(run.stdout)  # rank 0 alone prints: one JSON document
    training = json.loads((out / "model.json").read_text())["training"]
    assert training["distributed"] == {"world_size": 2, "backend": "gloo", "device": "cpu",
                                       "global_batch": 8, "sync_bn": False}
    assert training["val_images"] == 20 and len(training["history"]) == 1

    run = _torchrun("evaluate", str(out), "--json", port=free_port())
    assert run.returncode == 0, run.stderr
    evaluated = json.loads(run.stdout)
    single = evaluate_checkpoint(out, progress=False)
    assert evaluated == single
    assert evaluated["miou"] == reported["miou"]  # training's last evaluation, sharded the same way


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: nccl and SyncBatchNorm run on GPUs only")
def test_nccl_sync_bn_training_and_exact_evaluation(tiny_checkpoint, tmp_path):
    world = min(2, torch.cuda.device_count())
    ranks = launch(train_frozen, tmp_path, 4 // world, world=world, cpu=False, sync_bn=True, freeze=False)
    assert all(r["sync_bn"] for r in ranks)
    for key, value in ranks[0]["state"].items():
        assert all(torch.equal(value, r["state"][key]) for r in ranks[1:]), key
    for reduced, alone in launch(evaluate_on_device_job, tmp_path, tiny_checkpoint, VAL_IMAGES, world=world, cpu=False):
        np.testing.assert_array_equal(reduced, alone)
