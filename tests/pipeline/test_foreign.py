"""A user's own network (``MODULE:CALLABLE``) through export, training and the whole build.

The networks are ``tests/foreign_nets.py``: eight styles found in the wild, none registered.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli, run_cli_in_process
from foreign_nets import STYLES

from segexport.errors import ConfigError
from segexport.export.trt_check import check_tensorrt_compat
from segexport.models import build_model, get_entry
from segexport.models.foreign import ForeignModel
from segexport.pipeline import BuildOptions, build
from segexport.pipeline.export_stage import export_model

TESTS = Path(__file__).resolve().parents[1]


def spec(style: str) -> str:
    return f"foreign_nets:{style}"


def tensorrt_blockers(model: onnx.ModelProto) -> list[str]:
    """MaxUnpool nodes and MaxPools with an indices output: what TensorRT cannot parse."""
    return [n.name or n.op_type for n in model.graph.node
            if n.op_type == "MaxUnpool" or (n.op_type == "MaxPool" and len([o for o in n.output if o]) > 1)]


@pytest.mark.parametrize("form", ["tensor", "dict", "tuple"])
def test_forward_sees_logits_and_training_the_auxiliary_ones(form):
    style = {"tensor": "make_unet", "dict": "make_dict_aux", "tuple": "make_tuple"}[form]
    model = build_model(spec(style), num_classes=5).eval()
    assert isinstance(model, ForeignModel)
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 5, 64, 64)  # TupleNet's stride-4 logits come back at input size
    out, aux = model.forward_train(x)
    assert torch.equal(out, logits)
    assert (aux is None) == (form == "tensor")
    if aux is not None:
        assert aux.shape == (2, 5, 64, 64)


def test_model_kwargs_reach_the_callable_and_num_classes_fills_in():
    model = build_model(spec("make_unet"), num_classes=3, model_kwargs={"width": 4})
    assert model.net.out.out_channels == 3 and model.net.down1[0].out_channels == 4
    assert build_model(spec("make_unet"), num_classes=3, model_kwargs={"num_classes": 7}).net.out.out_channels == 7


@pytest.mark.parametrize(("name", "message"), [
    ("no_such_module:make", "no module 'no_such_module' in the current folder or on PYTHONPATH"),
    ("foreign_nets:make_nothing", "foreign_nets has no 'make_nothing'"),
    ("foreign_nets:ANSWER", "ANSWER is a int, not a callable"),
    ("foreign_nets:make_not_a_module", "returned a NotAModule, not a torch.nn.Module"),
])
def test_bad_networks_are_named_in_one_line(name, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, num_classes=8)


def test_forward_without_4d_logits_is_a_config_error():
    model = build_model(spec("make_three_d"), num_classes=8)
    with pytest.raises(ConfigError, match=r"forward returned a 3-D tensor \(1, 8, 4096\) for input \(1, 3, 64, 64\)"):
        model(torch.zeros(1, 3, 64, 64))


def test_a_size_the_network_cannot_take_names_the_nearest_that_work():
    model = build_model(spec("make_unet"), num_classes=8)
    with pytest.raises(ConfigError, match=r"cannot take input size 66x66 \(RuntimeError: .*\); use 64x64 or 72x72"):
        model.check_size(66, 66)
    model.check_size(40, 48)  # any multiple of 4 works: no divisor is imposed on a user's network


def test_mean_and_std_reach_the_onnx_metadata(tmp_path):
    from segexport.precision.onnx_model import read_model_info

    result = export_model(spec("make_tuple"), out=tmp_path, input_size=(64, 64), images=2,
                          overrides={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "model_kwargs": {"width": 4}})
    info = read_model_info(result.onnx_path)
    assert info.preprocess.mean == (0.5, 0.5, 0.5) and info.preprocess.std == (0.25, 0.25, 0.25)
    assert info.arch == spec("make_tuple")


def test_registered_names_are_untouched_by_the_module_form():
    assert get_entry("fcn8s").name == "fcn8s" and get_entry(spec("make_tuple")).summary == "a user's network"


def test_cli_rejects_bad_model_options_in_one_line(tmp_path):
    assert_one_line_error(run_cli("export", "--model", "no_such_module:make", cwd=TESTS),
                          "no module 'no_such_module' in the current folder or on PYTHONPATH")
    assert_one_line_error(run_cli("export", "fcn8s", "--model", spec("make_tuple"), cwd=TESTS),
                          "give ARCH or --model, not both")
    assert_one_line_error(run_cli("train", "--model", "fcn8s", cwd=TESTS), "--model must be MODULE:CALLABLE")
    assert_one_line_error(run_cli("build", "--model", spec("make_tuple"), "--model-kwargs", "{width: 4}", cwd=TESTS),
                          "--model-kwargs is not valid JSON")
    assert_one_line_error(run_cli("export", "fcn8s", "--model-kwargs", '{"width": 4}', cwd=TESTS),
                          "--model-kwargs applies to --model MODULE:CALLABLE")
    assert_one_line_error(run_cli("export", cwd=TESTS), "name an architecture")
    assert_one_line_error(run_cli("export", "--model", spec("make_unet"), "--input-size", "66x66", cwd=TESTS),
                          "cannot take input size 66x66", "use 64x64 or 72x72")
    assert_one_line_error(run_cli("build", "--model", spec("make_unet"), "--std", "0,1,1", cwd=TESTS),
                          "--std must be three numbers > 0")
    assert_one_line_error(run_cli("export", "--model", spec("make_not_a_module"), cwd=TESTS),
                          "returned a NotAModule, not a torch.nn.Module")
    assert_one_line_error(run_cli("train", "--model", spec("make_three_d"), cwd=TESTS),
                          "forward returned a 3-D tensor")
    bad = tmp_path / "bad.pth"
    torch.save({"encoder.body.stem.0.0.weight": torch.zeros(1)}, bad)
    assert_one_line_error(run_cli("export", "--model", spec("make_tuple"), "--checkpoint", str(bad), cwd=TESTS),
                          "checkpoint does not fit foreign_nets:make_tuple (file bad.pth): missing keys")


@pytest.mark.slow
def test_cli_trains_a_module_and_the_checkpoint_folder_exports_alone(tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text('input_size = [64, 64]\ntrain_images = 32\nval_images = 8\nepochs = 1\nbatch_size = 8\n'
                      f'[model]\nmodule = "{spec("make_tuple")}"\nwidth = 4\n')
    result = run_cli("train", "--recipe", str(recipe), "--out", str(tmp_path / "ckpt"), "--no-progress", cwd=TESTS)
    assert result.code == 0, result.stderr
    config = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert config["arch"] == spec("make_tuple") and config["build_args"]["model_kwargs"] == {"width": 4}
    result = run_cli("export", str(tmp_path / "ckpt"), "--images", "4", "--json", cwd=TESTS)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["arch"] == spec("make_tuple")


def train_briefly(capfd, style: str, folder: Path) -> Path:
    """``segexport train --model foreign_nets:STYLE`` (one quick epoch at 64x64), in this process."""
    recipe = folder / "quick.toml"
    recipe.write_text("input_size = [64, 64]\nepochs = 1\ntrain_images = 32\nval_images = 8\nbatch_size = 8\n")
    result = run_cli_in_process(capfd, "train", "--model", spec(style), "--recipe", recipe, "--out", folder / "ckpt",
                                "--no-progress")
    assert result.code == 0, result.stderr
    return folder / "ckpt"


def as_data_parallel_file(checkpoint: Path) -> Path:
    """A trained checkpoint folder's network weights as ``torch.save(DataParallel(net).state_dict())``
    writes them: ``module.`` before each of the network's own keys."""
    from segexport.checkpoint import read_state_dict

    state = read_state_dict(checkpoint / "checkpoint.safetensors")
    path = checkpoint.parent / "dp.pth"
    torch.save({"state_dict": {f"module.{k[len('net.'):]}": v for k, v in state.items()}}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("style", STYLES)
def test_each_style_trains_and_builds_with_fp16_and_both_int8_targets_within_budget(style, tmp_path, capfd):
    checkpoint = train_briefly(capfd, style, tmp_path)
    if style == "make_data_parallel":
        checkpoint = as_data_parallel_file(checkpoint)
    report = build(BuildOptions(
        spec(style), checkpoint=checkpoint, input_size=(64, 64), fp16=True, int8=True, calib_images=8,
        method="minmax", max_fallback=0, out=tmp_path / "build", overrides={"val_images": 8}))
    rows = {r["name"]: r for r in report["variants"]}
    for name in ("onnx", "onnx-fp16", "onnx-int8-tensorrt", "onnx-int8-cpu", "openvino-int8"):
        assert rows[name]["pass"] is True, (name, rows[name])
    assert report["pass"] is True and report["arch"] == spec(style)
    # the export stage: ONNX agrees with PyTorch, nothing TensorRT cannot parse, rewrites by module path
    rewrites = json.loads((tmp_path / "build" / "rewrites.json").read_text())
    assert rewrites["export"]["agreement"] >= 0.9999
    model = onnx.load(str(tmp_path / "build" / "model.onnx"))
    assert tensorrt_blockers(model) == [] and check_tensorrt_compat(model).ok
    replaced = {(r["rule"], r["target"]) for r in rewrites["rewrites"] if r["action"] == "replaced" and r["rule"] != "model"}
    if style == "make_segnet":  # functional pools and unpools, reached by wrapping the model
        assert replaced == {("functional_unpool", "net: F.max_pool2d"), ("functional_unpool", "net: F.max_unpool2d")}
    if style == "make_functional_psp":  # the functional adaptive max pool, fixed; the average ones the exporter takes
        assert replaced == {("functional_unpool", "net: F.adaptive_max_pool2d")}
    if style == "make_psp":  # bins 3 and 5 do not divide the 8x8 map: frozen as fixed pools
        assert {t for rule, t in replaced if rule == "fixed_adaptive_pool"} == {f"net.stages.{i}.0" for i in range(3)}
    if style == "make_data_parallel":  # the DataParallel file's module. prefix is gone
        assert json.loads((tmp_path / "build" / "reference" / "model.json").read_text())["training"]["source"] \
            == f"weights:{checkpoint}"
