"""Instance networks' pieces of build, predict and serve that need no trained model: how rows are
judged and shown, which nodes stay FP32, how Triton declares the count, and where detections land
in an image."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from segexport.deploy.predict_instances import check_min_score, image_detections
from segexport.deploy.triton import TensorSpec, _tensor_block
from segexport.errors import ConfigError
from segexport.precision.instance_graph import (
    feature_nodes,
    geometry_nodes,
    head_outputs,
)
from segexport.verify.instance_rows import ap_drop
from segexport.verify.parity import judge
from segexport.verify.render import columns_of, render_markdown

AP = {"mask_ap": 0.60, "mask_ap50": 0.9, "box_ap": 0.70, "box_ap50": 0.95}


def test_the_ap_drop_is_the_larger_of_mask_and_box_and_judges_the_row():
    row = {**AP, "mask_ap": 0.595, "box_ap": 0.690, "budget_pts": 1.0, "miou_drop_pts": 50.0}
    row["ap_drop_pts"] = ap_drop(row, AP)
    assert row["ap_drop_pts"] == pytest.approx(1.0)
    assert judge(row) is True  # equal to the budget passes; the mIoU drop does not judge an instance row
    row["box_ap"] = 0.689
    row["ap_drop_pts"] = ap_drop(row, AP)
    assert judge(row) is False
    assert ap_drop({"mask_ap": None}, AP) is None and judge({"ap_drop_pts": None, "budget_pts": 1.0}) is None


def test_instance_reports_show_ap_columns():
    reference = {"name": "pytorch", "backend": "torch", "precision": "fp32", "target": None, **AP, "miou": 0.5}
    variant = {**reference, "name": "onnx", "backend": "onnxruntime", "ap_drop_pts": 0.0, "budget_pts": 0.2,
               "pass": True}
    report = {"arch": "maskrcnn", "task": "instance", "pass": True, "accuracy_measured": True, "data": "synthetic",
              "images": 8, "input_size": [64, 64], "build_dir": "b", "device": "cpu", "threads": 2,
              "reference": reference, "variants": [variant], "notes": [], "settings": {"logit_images": 16},
              "methods": {"latency": "l", "memory": "m"}, "versions": {}, "files": {}}
    text = render_markdown(report)
    assert "mask AP" in columns_of(report) and "| mask AP |" in text and "0.6000" in text and "AP drop" in text
    assert "mask AP" not in columns_of({**report, "task": "semantic"})


def _graph() -> onnx.ModelProto:
    """image -> conv a -> relu -> conv b (head) -> reshape -> sigmoid (geometry); relu -> conv c -> output."""
    weight = lambda name, c: helper.make_tensor(name, TensorProto.FLOAT, [c, c, 1, 1], np.ones(c * c).tolist())  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="a"),
        helper.make_node("Relu", ["a"], ["r"], name="r"),
        helper.make_node("Conv", ["r", "wb"], ["b"], name="b"),
        helper.make_node("Reshape", ["b", "shape"], ["s"], name="s"),
        helper.make_node("Sigmoid", ["s"], ["g"], name="g"),
        helper.make_node("Conv", ["r", "wc"], ["c"], name="c"),
        helper.make_node("RoiAlign", ["c", "rois", "index"], ["p"], name="roi"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, None)],
        [weight("wa", 2), weight("wb", 2), weight("wc", 2), helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1]),
         helper.make_tensor("rois", TensorProto.FLOAT, [1, 4], [0, 0, 2, 2]),
         helper.make_tensor("index", TensorProto.INT64, [1], [0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_heads_last_layer_stays_fp32_but_features_read_by_roialign_do_not():
    model = _graph()
    features = feature_nodes(model)
    assert features == {"a", "r", "b", "s", "c"}
    assert head_outputs(model, features) == {"b", "s"}  # conv c also feeds RoIAlign, but as its features
    assert set(geometry_nodes(model)) == {"b", "s", "g", "roi"}


def test_a_per_image_count_is_served_as_triton_documents():
    block = "\n".join(_tensor_block("output", [TensorSpec("count", "int32", ()), TensorSpec("scores", "float32", (16,))]))
    assert "dims: [ 1 ]\n    reshape: { shape: [ ] }" in block and "dims: [ 16 ]\n  }" in block


def _outputs(box: list[float]) -> dict[str, np.ndarray]:
    masks = np.zeros((1, 2, 4, 4), dtype=np.float32)
    masks[0, 0] = 1.0
    return {"boxes": np.asarray([[box, [0, 0, 1, 1]]], dtype=np.float32), "scores": np.asarray([[0.9, 0.2]]),
            "classes": np.asarray([[3, 1]], dtype=np.int32), "masks": masks, "count": np.asarray([2])}


def test_detections_come_back_to_the_image_size():
    stretched = image_detections(_outputs([8, 4, 24, 12]), 0, (64, 96), (32, 32), "resize", 0.5)
    assert len(stretched) == 1 and stretched.classes.tolist() == [3]  # the 0.2 detection is left out
    np.testing.assert_allclose(stretched.boxes[0], [24, 8, 72, 24])
    assert stretched.masks.shape == (1, 64, 96) and stretched.masks[0].sum() == 48 * 16
    padded = image_detections(_outputs([8, 4, 40, 12]), 0, (20, 30), (32, 32), "pad", 0.0)
    np.testing.assert_allclose(padded.boxes[0], [8, 4, 30, 12])  # kept, clipped to the image
    assert len(padded) == 2


def test_min_score_applies_to_instance_networks_only():
    assert check_min_score(None, instance=False) == check_min_score(None, instance=True) == 0.5
    with pytest.raises(ConfigError, match="instance networks"):
        check_min_score(0.3, instance=False)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        check_min_score(-0.1, instance=True)
