import json
import shutil

import pytest
import torch

from segexport.checkpoint import (
    METRICS_JSON,
    MODEL_JSON,
    WEIGHTS,
    fit_state_dict,
    load_checkpoint,
    read_state_dict,
)
from segexport.errors import CheckpointError, InputError
from segexport.models import build_model


def test_round_trip_gives_identical_logits(tiny_checkpoint):
    model_a, config = load_checkpoint(tiny_checkpoint)
    model_b, _ = load_checkpoint(tiny_checkpoint)
    x = torch.randn(2, 3, *config.preprocess.size)
    with torch.no_grad():
        assert torch.equal(model_a(x), model_b(x))
    assert config.arch == "deeplabv3p"
    assert len(config.classes) >= 8 and config.classes[0] == "background"
    meta = json.loads((tiny_checkpoint / MODEL_JSON).read_text())
    assert meta["input_size"] == [64, 64] and "preprocess" in meta and "training" in meta
    metrics = json.loads((tiny_checkpoint / METRICS_JSON).read_text())
    assert set(metrics) >= {"miou", "pixel_acc", "per_class_iou"}


def test_pt_file_is_read_without_unpickling_code(tmp_path):
    model = build_model("fcn8s", num_classes=3)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    state = read_state_dict(path)
    fresh = build_model("fcn8s", num_classes=3)
    fit_state_dict(fresh, state, "fcn8s")
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k])


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": object()}, path)  # not loadable with weights_only=True
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_state_dict(path)


def test_truncated_checkpoint(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    data = (broken / WEIGHTS).read_bytes()
    (broken / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(broken)


def test_mismatched_architecture_summarises_keys(tiny_checkpoint, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other)
    meta = json.loads((other / MODEL_JSON).read_text())
    meta["arch"], meta["build_args"] = "fcn8s", {"size": "tiny", "num_classes": len(meta["classes"])}
    (other / MODEL_JSON).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"does not fit fcn8s.*missing keys \d+ .*unexpected keys \d+"):
        load_checkpoint(other)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(InputError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(InputError, match="model.json: missing"):
        load_checkpoint(tmp_path)
