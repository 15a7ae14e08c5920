"""``segexport build MODEL.onnx``: an ONNX file written by plain ``torch.onnx.export`` as the source."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from foreign_nets import make_segnet

from segexport.data import SYNTHETIC_CLASSES
from segexport.pipeline import BuildOptions, build

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
QUICK = {"val_images": 8}


class _Logits(torch.nn.Module):
    """What a user's export script wraps around a network: its logits at input size."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return torch.nn.functional.interpolate(out[0] if isinstance(out, tuple) else out, size=x.shape[-2:],
                                               mode="bilinear")


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory) -> Path:
    """``make_segnet`` (8 classes, as the built-in data) exported by torch alone: no segexport metadata,
    and its ``F.max_unpool2d`` as torch writes it (ConstantOfShape zeros and ScatterND), unrewritten."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("plain") / "theirs.onnx"
    torch.onnx.export(_Logits(make_segnet(num_classes=len(SYNTHETIC_CLASSES))).eval(), (torch.randn(1, 3, 64, 64),),
                      str(path), input_names=["image"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
    assert not {p.key for p in onnx.load(str(path), load_external_data=False).metadata_props} & {"arch", "mean"}
    return path


@pytest.mark.slow
def test_plain_onnx_builds_with_flags_for_what_it_does_not_say(plain_onnx, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(SYNTHETIC_CLASSES) + "\n")
    before = plain_onnx.read_bytes()
    report = build(BuildOptions(str(plain_onnx), network=IMAGENET, classes=classes, fp16=True, int8=True,
                                calib_images=8, method="minmax", max_fallback=0, out=tmp_path / "b", overrides=QUICK))
    assert report["pass"] is True
    assert report["reference"]["name"] == "onnx" and report["reference"]["backend"] == "onnxruntime"
    names = [row["name"] for row in report["variants"]]
    assert "onnx" not in names and "pytorch-fp16" not in names  # the reference, and no PyTorch model
    assert {"onnx-fp16", "onnx-int8-tensorrt", "onnx-int8-cpu", "openvino-int8"} <= set(names)
    assert any("no PyTorch reference exists" in note for note in report["notes"])
    rows = {row["name"]: row for row in report["variants"]}
    assert rows["onnx-int8-cpu"]["speedup_vs_fp32"] > 0  # against the ONNX Runtime FP32 reference
    assert plain_onnx.read_bytes() == before  # the user's file is never written
    metadata = {p.key: p.value for p in onnx.load(str(tmp_path / "b" / "model.onnx")).metadata_props}
    assert json.loads(metadata["mean"]) == list(IMAGENET["mean"]) and metadata["arch"] == "theirs"
    assert json.loads(metadata["classes"]) == list(SYNTHETIC_CLASSES)
    manifest = json.loads((tmp_path / "b" / "build.json").read_text())
    assert manifest["reference"] == "model.onnx" and manifest["reference_backend"] == "onnxruntime"


def test_classes_come_from_the_data_set_when_their_count_matches(plain_onnx):
    from segexport.pipeline.onnx_source import check_onnx_source

    src = check_onnx_source(plain_onnx, classes_file=None, mean=IMAGENET["mean"], std=IMAGENET["std"],
                            input_size=None, data_classes=SYNTHETIC_CLASSES)
    assert src.classes == SYNTHETIC_CLASSES and src.input_size == (64, 64) and src.arch == "theirs"


def _one_channel_onnx(path: Path) -> Path:
    torch.onnx.export(torch.nn.Conv2d(1, 8, 1).eval(), (torch.randn(1, 1, 16, 16),), str(path))
    return path


def test_bad_onnx_sources_are_one_line_each(plain_onnx, tmp_path):
    base = ("build", str(plain_onnx), "--out", str(tmp_path / "b"))
    assert_one_line_error(run_cli(*base), "carries no segexport metadata", "pass --mean and --std")
    assert_one_line_error(run_cli(*base, "--mean", "0.5,0.5,0.5"), "pass --std")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("cat\ndog\n")
    assert_one_line_error(run_cli(*base, "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2", "--classes", str(wrong)),
                          "outputs 8 channels but 2 class names were given")
    assert_one_line_error(run_cli(*base, "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2",
                                  "--data", "cityscapes:" + str(tmp_path)), "leftImg8bit/val: does not exist")
    odd = _one_channel_onnx(tmp_path / "gray.onnx")
    assert_one_line_error(run_cli("build", str(odd), "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"),
                          "expected float32 [N, 3, H, W]")
    assert_one_line_error(run_cli("build", str(tmp_path / "missing.onnx")), "ONNX file not found")
    assert_one_line_error(run_cli(*base, "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2", "--random-init"),
                          "--random-init do not apply to an ONNX file source")
    not_onnx = tmp_path / "junk.onnx"
    not_onnx.write_bytes(b"not a protobuf at all")
    assert_one_line_error(run_cli("build", str(not_onnx), "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"),
                          "junk.onnx")
    inside = tmp_path / "b2"
    inside.mkdir()
    (inside / "model.onnx").write_bytes(plain_onnx.read_bytes())
    assert_one_line_error(run_cli("build", str(inside / "model.onnx"), "--mean", "0.5,0.5,0.5", "--std",
                                  "0.2,0.2,0.2", "--out", str(inside)), "lies in the build folder")
    assert not (tmp_path / "b").exists()  # nothing written on bad input
