"""The instance networks (Mask R-CNN, PANet), parametrised over every registered instance
architecture: padded outputs, training losses, export to standard ONNX with the same detections
as PyTorch at batch 1 and 4, and the paper size's torchvision keys."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from segexport.export.onnx_export import export_onnx
from segexport.export.trt_check import check_tensorrt_compat
from segexport.instance_outputs import OUTPUTS as OUTPUT_NAMES
from segexport.models import build_model, list_models
from segexport.nn.rcnn_targets import ImageTargets

INSTANCE = [e.name for e in list_models() if e.task == "instance"]
KEYS = Path(__file__).parents[1] / "fixtures" / "torchvision_keys" / "maskrcnn_resnet50_fpn.json"
SIZE = 64


def _targets(n: int) -> list[ImageTargets]:
    """One square object per image, at a different place in each."""
    out = []
    for i in range(n):
        x0 = 6 + 8 * i
        mask = torch.zeros(1, SIZE, SIZE)
        mask[0, 10:40, x0 : x0 + 24] = 1.0
        out.append(ImageTargets(torch.tensor([[x0, 10.0, x0 + 24, 40]]), torch.tensor([2 + i]), mask))
    return out


def _assert_padded(outputs: tuple[torch.Tensor, ...], n: int, d: int) -> None:
    boxes, scores, classes, masks, count = outputs
    assert boxes.shape == (n, d, 4) and scores.shape == (n, d) and classes.shape == (n, d)
    assert masks.shape == (n, d, 28, 28) and count.shape == (n,)
    assert classes.dtype == torch.int32 and count.dtype == torch.int32
    filled = scores > 0
    assert torch.equal(count, filled.sum(1).int())
    for i in range(n):  # the filled slots come first, best first; empty ones are all zero
        k = int(count[i])
        assert filled[i, :k].all() and not filled[i, k:].any()
        assert torch.all(scores[i, :k][:-1] >= scores[i, :k][1:])
        assert (classes[i, :k] > 0).all() and not classes[i, k:].any()
        assert not boxes[i, k:].any() and not masks[i, k:].any()


@pytest.fixture(scope="module", params=INSTANCE)
def exported(request, tmp_path_factory):
    """A tiny seeded network of each instance architecture and its ONNX export."""
    torch.manual_seed(0)
    model = build_model(request.param, size="tiny", num_classes=5).eval()
    with torch.no_grad():  # a larger objectness bias: more proposals survive, more detections to compare
        model.rpn.head.cls_logits.bias.fill_(2.0)
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    export_onnx(model, path, input_size=(SIZE, SIZE))
    return request.param, model, path


@pytest.mark.parametrize("name", INSTANCE)
def test_training_losses_reach_every_part(name):
    torch.manual_seed(0)
    model = build_model(name, size="tiny", num_classes=5).train()
    losses = model.forward_train(torch.randn(2, 3, SIZE, SIZE), _targets(2), torch.Generator().manual_seed(0))
    assert set(losses) == {"rpn_objectness", "rpn_box", "box_class", "box_regression", "mask"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    parts = ["backbone.body", "backbone.fpn", "rpn.head", "roi_heads.box_head", "roi_heads.box_predictor",
             "roi_heads.mask_head", "roi_heads.mask_predictor"]
    if name == "panet":
        parts += ["backbone.bottom_up", "roi_heads.mask_fc"]
    for part in parts:
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), part


def test_outputs_are_padded_and_deterministic(exported):
    _, model, _ = exported
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x), model(x)
    _assert_padded(a, 3, model.cfg.detections)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert int(a[4].sum()) > 0  # something is detected, so the comparisons below mean something


def test_graph_is_standard_onnx_that_tensorrt_parses(exported):
    _, _, path = exported
    proto = onnx.load(str(path))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    ops = {n.op_type for n in proto.graph.node}
    assert {"NonMaxSuppression", "RoiAlign", "TopK"} <= ops
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    report = check_tensorrt_compat(path)
    assert report.ok, report


@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_gives_the_same_detections(exported, batch):
    _, model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    got = session.run(None, {"images": x.numpy()})
    assert np.array_equal(ref[4], got[4]) and np.array_equal(ref[2], got[2])
    np.testing.assert_allclose(got[1], ref[1], atol=1e-5)
    np.testing.assert_allclose(got[0], ref[0], atol=1e-3)
    np.testing.assert_allclose(got[3], ref[3], atol=1e-4)


def test_paper_maskrcnn_has_torchvisions_keys():
    expected = json.loads(KEYS.read_text())
    with torch.device("meta"):
        model = build_model("maskrcnn", size="paper", num_classes=91)
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert own == expected["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == expected["num_params"]


def test_paper_size_takes_multiples_of_32_as_torchvision_does():
    from segexport.models import check_input_size

    with torch.device("meta"):
        model = build_model("maskrcnn", size="paper", num_classes=91)
    assert model.input_divisor == 32
    check_input_size(model, 800, 800)
