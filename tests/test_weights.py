"""Loading torchvision weight files: whole segmentation models and ImageNet backbones.

The files are synthetic: random tensors with the shapes torchvision 0.29.1 writes (from
tests/fixtures/torchvision_keys), saved with ``torch.save`` as torchvision's files are.
Paper-size models are big, so each file and model is made once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error
from safetensors.torch import save_file

from segexport.checkpoint import load_checkpoint
from segexport.errors import CheckpointError, InputError
from segexport.hashing import file_sha256
from segexport.models import build_model
from segexport.recipe import load_recipe, resolve_recipe
from segexport.train_run import train_checkpoint
from segexport.weights import (
    load_backbone_weights,
    model_from_weights_file,
)

KEYS_DIR = Path(__file__).parent / "fixtures" / "torchvision_keys"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shapes(name: str) -> dict[str, list[int]]:
    return json.loads((KEYS_DIR / f"{name}.json").read_text())["state_dict"]


def _random_state(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}
    for key in state:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):  # a variance, or BN turns it into NaN
            state[key] = state[key].abs() + 0.5
    return state


def _assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    own = model.state_dict()
    assert all(torch.equal(own[prefix + k], v) for k, v in state.items())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """torchvision-shaped files: deeplabv3_resnet50 with and without aux (.pth), and a 5-class
    fcn_resnet50 (.safetensors)."""
    root = tmp_path_factory.mktemp("torchvision")
    out = {}
    for seed, name in enumerate(("deeplabv3_resnet50", "deeplabv3_resnet50_noaux")):
        state = _random_state(_shapes(name), seed)
        torch.save(state, root / f"{name}.pth")
        out[name] = (root / f"{name}.pth", state)
    heads = (".4.weight", ".4.bias")  # the last conv of classifier and aux_classifier
    five = {k: [5, *s[1:]] if k.endswith(heads) else s for k, s in _shapes("fcn_resnet50").items()}
    state = _random_state(five, 2)
    save_file(state, str(root / "fcn5.safetensors"))
    out["fcn5"] = (root / "fcn5.safetensors", state)
    return out


def test_deeplab_with_aux_loads_and_runs(files) -> None:
    path, state = files["deeplabv3_resnet50"]
    model = model_from_weights_file("deeplabv3_resnet50", path)
    assert model.aux_classifier is not None and not model.training
    _assert_loaded(model, state)
    with torch.no_grad():  # random unit-variance weights overflow: only the shape means something
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 21, 64, 64)


def test_deeplab_without_aux_builds_no_aux_head(files) -> None:
    path, state = files["deeplabv3_resnet50_noaux"]
    model = model_from_weights_file("deeplabv3_resnet50", path, num_classes=21)
    assert model.aux_classifier is None
    _assert_loaded(model, state)


def test_num_classes_inferred_from_safetensors(files) -> None:
    path, state = files["fcn5"]
    model = model_from_weights_file("fcn_resnet50", path)
    assert model.classifier[4].out_channels == 5 and model.aux_classifier[4].out_channels == 5
    _assert_loaded(model, state)


def test_segexport_safetensors_of_another_arch(tmp_path) -> None:
    source = build_model("deeplabv3p", size="tiny", num_classes=6)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = model_from_weights_file("deeplabv3p", tmp_path / "w.safetensors", size="tiny")
    assert model.classifier.cls.out_channels == 6
    _assert_loaded(model, source.state_dict())


def test_wrong_file_summarises_keys(files) -> None:
    path, _ = files["deeplabv3_resnet50"]
    with pytest.raises(CheckpointError, match=r"does not fit fcn_resnet50 .*missing keys 5 .*unexpected keys 41 "):
        model_from_weights_file("fcn_resnet50", path)
    with pytest.raises(CheckpointError, match=r"shape mismatches 4 \(classifier.4.weight \(21, 256, 1, 1\) vs"):
        model_from_weights_file("deeplabv3_resnet50", path, num_classes=3)
    with pytest.raises(InputError, match="not found"):
        model_from_weights_file("deeplabv3_resnet50", path.with_name("nope.pth"))


@pytest.fixture(scope="module")
def deeplab_paper():
    return build_model("deeplabv3_resnet50", size="paper", num_classes=21)


def test_resnet50_imagenet_file_into_backbone(deeplab_paper, tmp_path) -> None:
    # torchvision's oldest ImageNet files predate BN's num_batches_tracked: leave it out
    state = {k: v for k, v in _random_state(_shapes("resnet50"), 3).items() if "num_batches" not in k}
    torch.save(state, tmp_path / "resnet50.pth")
    head_before = deeplab_paper.classifier[4].weight.clone()
    loaded = load_backbone_weights(deeplab_paper, tmp_path / "resnet50.pth")
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert loaded == [f"backbone.{k}" for k in body]
    _assert_loaded(deeplab_paper, body, "backbone.")
    assert torch.equal(deeplab_paper.classifier[4].weight, head_before)


def test_backbone_mismatch_names_keys(deeplab_paper, tmp_path) -> None:
    conv1 = deeplab_paper.backbone.conv1.weight.clone()
    bad = {"conv1.weight": torch.zeros(64, 3, 7, 7), "layer9.0.conv1.weight": torch.zeros(1)}
    torch.save(bad, tmp_path / "bad.pth")
    pattern = r"ResNet backbone.*\(file bad.pth\): missing keys \d+ .*unexpected keys 1 \(layer9.0.conv1.weight\)"
    with pytest.raises(CheckpointError, match=pattern):
        load_backbone_weights(deeplab_paper, tmp_path / "bad.pth")
    assert torch.equal(deeplab_paper.backbone.conv1.weight, conv1)  # nothing half-loaded


def test_vgg16_file_into_fcn8s_converts_fc6_fc7(tmp_path) -> None:
    state = _random_state({k: s for k, s in _shapes("vgg16").items() if k.startswith("features.")}, 4)
    # fc6/fc7 hold 120M numbers: store broadcast tensors (a row, a column) so the file stays
    # small; torch.load gives them back as such, and loading copies them like any other.
    state["classifier.0.weight"] = torch.randn(25088).expand(4096, 25088)
    state["classifier.3.weight"] = torch.randn(4096, 1).expand(4096, 4096)
    for key, shape in _shapes("vgg16").items():
        if key.startswith("classifier.") and key not in state:
            state[key] = torch.randn(shape)
    torch.save(state, tmp_path / "vgg16.pth")
    model = build_model("fcn8s", size="paper", num_classes=21)
    loaded = load_backbone_weights(model, tmp_path / "vgg16.pth")
    fc = ["classifier.fc6.weight", "classifier.fc6.bias", "classifier.fc7.weight", "classifier.fc7.bias"]
    assert loaded[-4:] == fc and len(loaded) == 26 + 4
    head = model.classifier
    assert torch.equal(head.fc6.weight, state["classifier.0.weight"].reshape(4096, 512, 7, 7))
    assert torch.equal(head.fc6.bias, state["classifier.0.bias"])
    assert torch.equal(head.fc7.weight[:, :, 0, 0], state["classifier.3.weight"])
    assert torch.equal(head.fc7.bias, state["classifier.3.bias"])
    _assert_loaded(model, {k: v for k, v in state.items() if k.startswith("features.")}, "backbone.")


def test_train_records_backbone_checkpoint(tmp_path) -> None:
    # a tiny fcn8s backbone's keys with values no initialisation gives, as an "ImageNet" file
    # with a classifier to drop
    own = build_model("fcn8s", size="tiny").backbone.state_dict()
    body = {k: torch.rand_like(v) + 0.5 if v.is_floating_point() else v for k, v in own.items()}
    file = tmp_path / "vgg_tiny.pth"
    torch.save({**body, "classifier.6.weight": torch.zeros(10, 4)}, file)
    quick = dict(epochs=1, train_images=8, val_images=4, batch_size=4, input_size=(64, 64), lr=0.0)
    recipe = resolve_recipe(load_recipe("fcn8s"), **quick)
    path, _ = train_checkpoint(recipe, tmp_path / "ckpt", progress=False, backbone_checkpoint=file)
    record = json.loads((path / "model.json").read_text())["training"]["backbone_checkpoint"]
    assert record == {"file": "vgg_tiny.pth", "sha256": file_sha256(file)}
    model, _ = load_checkpoint(path)  # lr 0: the loaded convs are still the file's
    assert torch.equal(model.backbone.features[0].weight, body["features.0.weight"])


def test_cli_bad_backbone_checkpoint(cli, tmp_path) -> None:
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(2, 2)}, tmp_path / "resnet.pth")
    r = cli("train", "fcn8s", "--backbone-checkpoint", tmp_path / "resnet.pth", "--out", tmp_path / "o")
    assert_one_line_error(r, "VGG backbone of this model (file resnet.pth)", "unexpected keys 1 (conv1.weight)")
    assert not (tmp_path / "o").exists()
    r = cli("train", "fcn8s", "--backbone-checkpoint", tmp_path / "nope.pth", "--out", tmp_path / "o")
    assert_one_line_error(r, "nope.pth", "not found")


def test_torchvision_maskrcnn_file_loads_with_its_class_count(tmp_path):
    """A torchvision-keyed Mask R-CNN file as its COCO weights are saved (FrozenBatchNorm: no
    ``num_batches_tracked``), fine-tuned to 3 classes: it loads without torchvision."""
    shapes = {k: v for k, v in _shapes("maskrcnn_resnet50_fpn").items() if not k.endswith("num_batches_tracked")}
    heads = {"roi_heads.box_predictor.cls_score.weight": [3, 1024], "roi_heads.box_predictor.cls_score.bias": [3],
             "roi_heads.box_predictor.bbox_pred.weight": [12, 1024], "roi_heads.box_predictor.bbox_pred.bias": [12],
             "roi_heads.mask_predictor.mask_fcn_logits.weight": [3, 256, 1, 1],
             "roi_heads.mask_predictor.mask_fcn_logits.bias": [3]}
    state = _random_state({**shapes, **heads}, seed=3)
    torch.save(state, tmp_path / "maskrcnn.pth")
    model = model_from_weights_file("maskrcnn", tmp_path / "maskrcnn.pth")
    assert model.num_classes == 3 and not model.training
    _assert_loaded(model, state)
