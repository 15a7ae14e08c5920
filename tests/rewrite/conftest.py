"""Fixtures for the rewrite tests: ONNX export of a toy module, purity snapshots."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn


def _export(tmp_path: Path) -> Callable[..., onnx.ModelProto]:  # noqa: F821
    import onnx

    def export(module: nn.Module, x: torch.Tensor, name: str = "model") -> onnx.ModelProto:
        path = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (x,), str(path), dynamo=True, verbose=False)
        return onnx.load(str(path))

    return export


@pytest.fixture
def export_onnx(tmp_path: Path):
    """``export_onnx(module, x, name)`` -> the ``onnx.ModelProto`` written by the dynamo exporter."""
    return _export(tmp_path)


def run_onnx(model: onnx.ModelProto, x: torch.Tensor) -> torch.Tensor:  # noqa: F821
    """The first output of ``model`` on ``x`` with ONNX Runtime (CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


@pytest.fixture
def onnx_runner():
    """``onnx_runner(model_proto, x)`` -> first output as a tensor (ONNX Runtime CPU)."""
    return run_onnx


def snapshot(model: nn.Module) -> tuple:
    """Everything a rewrite must not change: parameters/buffers, structure and train flags."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, repr(model), [m.training for m in model.modules()]


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    state, structure, flags = before
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], v) for k, v in state.items())
    assert repr(model) == structure
    assert [m.training for m in model.modules()] == flags


@pytest.fixture
def purity():
    """``(snapshot, assert_unchanged)`` for checking that a rewrite left its input alone."""
    return snapshot, assert_unchanged
