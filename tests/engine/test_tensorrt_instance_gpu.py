"""An instance network's engine on a real GPU: RoiAlign and NonMaxSuppression parsed natively (no
plugin), padded outputs through the runner, detections matching ONNX Runtime's on the same graph.

Skipped, with the reason, where tensorrt or a CUDA device is missing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segexport.engine import build_engine, engine_unavailable_reason

REASON = engine_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.trt, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
OUTPUTS = ("boxes", "scores", "classes", "masks", "count")


@pytest.fixture(scope="module")
def instance_onnx(tmp_path_factory):
    from segexport.export.onnx_export import export_onnx
    from segexport.models import build_model

    torch.manual_seed(0)
    model = build_model("maskrcnn", size="tiny", num_classes=8).eval()
    with torch.no_grad():  # an untrained network scores every class near 1/8: raise a few so it detects
        model.roi_heads.box_predictor.cls_score.bias[1:4] += 4.0
    path = tmp_path_factory.mktemp("instance") / "model.onnx"
    export_onnx(model, path, input_size=(64, 64), metadata={"task": "instance", "arch": "maskrcnn"})
    return path


def test_instance_engine_matches_onnxruntime(instance_onnx, tmp_path):
    from segexport.export.verify_instances import match_detections
    from segexport.runners import open_runner

    engine = build_engine(instance_onnx, tmp_path / "model.plan", max_batch=4, workspace_gb=1)
    images = np.random.default_rng(0).standard_normal((6, 3, 64, 64)).astype(np.float32)  # two chunks of 4
    with open_runner(engine) as trt_runner, open_runner(instance_onnx) as ort_runner:
        assert trt_runner.task == ort_runner.task == "instance"
        got, want = trt_runner.run_outputs(images), ort_runner.run_outputs(images)
    assert list(got) == list(OUTPUTS) and got["count"].shape == (6,)
    found = match_detections([want[k] for k in OUTPUTS], [got[k] for k in OUTPUTS])
    assert found["reference"] > 0 and found["matched"] >= 0.95 * found["reference"], found
