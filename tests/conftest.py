"""Shared fixtures: tiny trained checkpoints (trained once per session) and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_cli

from segexport.recipe import load_recipe, resolve_recipe


@pytest.fixture
def cli():
    return run_cli


def _train_tiny(arch: str, out: Path, **overrides) -> Path:
    from segexport.train_run import train_checkpoint

    quick = dict(epochs=1, train_images=32, val_images=8, batch_size=8, input_size=(64, 64))
    recipe = resolve_recipe(load_recipe(arch), **{**quick, **overrides})
    path, _ = train_checkpoint(recipe, out, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A briefly trained tiny deeplabv3p checkpoint folder (64x64 inputs)."""
    return _train_tiny("deeplabv3p", tmp_path_factory.mktemp("ckpt") / "deeplabv3p")


@pytest.fixture(scope="session")
def tiny_fcn8s_checkpoint(tmp_path_factory) -> Path:
    """A briefly trained tiny fcn8s checkpoint folder (64x64 inputs)."""
    return _train_tiny("fcn8s", tmp_path_factory.mktemp("ckpt") / "fcn8s")


@pytest.fixture(scope="session")
def tiny_build_dir(tiny_checkpoint, tmp_path_factory) -> Path:
    """A small build folder of the tiny deeplabv3p (64x64, 8 val images); copy it before changing it."""
    from build_helpers import assemble_build

    return assemble_build(tiny_checkpoint, tmp_path_factory.mktemp("build") / "deeplabv3p")
