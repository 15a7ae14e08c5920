"""The hostile sweep as data: bad inputs a new user tries, one row each, for every command.

Each row names a setup (files under the case's folder ``{tmp}``), the argv, and what must come
back: exit 2 with one stderr line (or Typer's usage box, ``usage=True``, for malformed
arguments), optionally a fragment of that line. ``tests/test_bad_input.py`` runs them and
checks that nothing outside ``{tmp}/out`` changed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

OUT = "out"  # every case's output folder, the only place a command may change


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[..., None]  # (tmp_path) or (tmp_path, request) for cases needing fixtures
    argv: tuple[str, ...]  # "{tmp}" is replaced by the case's folder
    code: int = 2
    message: str | None = None
    usage: bool = False  # a malformed argument: Typer's usage box, exit 2


def tiny_onnx(path: Path, *, classes: int = 8, external: bool = False, custom_op: bool = False,
              ir_version: int = 9) -> Path:
    """A 1x1-conv "segmentation" model [N, 3, 64, 64] -> logits [N, classes, 64, 64]."""
    weight = np.random.default_rng(0).standard_normal((classes, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["image", "w"], ["c" if custom_op else "logits"])]
    opsets = [helper.make_opsetid("", 17)]
    if custom_op:
        nodes.append(helper.make_node("MyOp", ["c"], ["logits"], domain="com.example"))
        opsets.append(helper.make_opsetid("com.example", 1))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, 64, 64])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path), save_as_external_data=external, location=f"{path.name}.data", size_threshold=0)
    return path


def png(path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def folder_dataset(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(2)
    for i in range(n):
        png(root / "images" / f"{i}.png")
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 8, (64, 64), dtype=np.uint8)).save(root / "masks" / f"{i}.png")
    return root


# ---- setups -------------------------------------------------------------------------------------

def nothing(tmp: Path) -> None:
    """No files: the path the case names does not exist."""


def model(tmp: Path) -> None:
    tiny_onnx(tmp / "model.onnx")


def model_and_image(tmp: Path) -> None:
    tiny_onnx(tmp / "model.onnx")
    png(tmp / "image.png")


def a_folder(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir()


def a_file(name: str, data: bytes = b"hello\n") -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(data)


def coco_files(**files: bytes) -> Callable[[Path], None]:
    """``coco/annotations/NAME.json`` for each ``NAME=content``."""
    def setup(tmp: Path) -> None:
        (tmp / "coco" / "annotations").mkdir(parents=True)
        for name, data in files.items():
            (tmp / "coco" / "annotations" / f"{name}.json").write_bytes(data)
    return setup


def with_image(setup: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(tmp: Path) -> None:
        setup(tmp)
        png(tmp / "image.png")
    return both


def _run_setup(setup: Callable[..., object], tmp: Path, request: pytest.FixtureRequest) -> None:
    setup(tmp, request) if setup.__code__.co_argcount == 2 else setup(tmp)


def with_user_files(setup: Callable[..., object], *names: str) -> Callable[[Path, pytest.FixtureRequest], None]:
    """``setup``, plus files of the user's in ``{tmp}/out`` that a command must not touch."""
    def both(tmp: Path, request: pytest.FixtureRequest) -> None:
        _run_setup(setup, tmp, request)
        for name in names:
            (tmp / OUT / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / OUT / name).write_text(f"the user's {name}\n")
    return both


def out_is_a_file(setup: Callable[..., object]) -> Callable[[Path, pytest.FixtureRequest], None]:
    def both(tmp: Path, request: pytest.FixtureRequest) -> None:
        _run_setup(setup, tmp, request)
        (tmp / OUT).write_text("the user's file named out\n")
    return both


def fixture_copy(fixture: str, name: str) -> Callable[[Path, pytest.FixtureRequest], Path]:
    """A setup copying the folder a session fixture made to ``{tmp}/NAME``."""
    def setup(tmp: Path, request: pytest.FixtureRequest) -> Path:
        shutil.copytree(request.getfixturevalue(fixture), tmp / name)
        return tmp / name
    return setup


checkpoint = fixture_copy("tiny_checkpoint", "ckpt")
build = fixture_copy("tiny_build_dir", "build")


def copy_with(copy: Callable[[Path, pytest.FixtureRequest], Path],
              edit: Callable[[Path], None]) -> Callable[[Path, pytest.FixtureRequest], None]:
    """``copy``, then ``edit`` of the copied folder."""
    def setup(tmp: Path, request: pytest.FixtureRequest) -> None:
        edit(copy(tmp, request))
    return setup


def checkpoint_with(edit: Callable[[Path], None]) -> Callable[[Path, pytest.FixtureRequest], None]:
    return copy_with(checkpoint, edit)


def build_with(edit: Callable[[Path], None]) -> Callable[[Path, pytest.FixtureRequest], None]:
    return copy_with(build, edit)


def edit_json(path: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        data = json.loads((root / path).read_text())
        change(data)
        (root / path).write_text(json.dumps(data))
    return edit


def recipe_file(text: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / "recipe.toml").write_text(text)


def images_folder(*names: str, text: tuple[str, ...] = ()) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        tiny_onnx(tmp / "model.onnx")
        (tmp / "imgs").mkdir()
        for name in names:
            png(tmp / "imgs" / name)
        for name in text:
            (tmp / "imgs" / name).write_text("notes\n")
    return setup


def _copy_over(src: str, dst: str) -> Callable[[Path], None]:
    return lambda root: shutil.copyfile(root / src, root / dst)


def _truncate(name: str, size: int = 300) -> Callable[[Path], None]:
    def cut(root: Path) -> None:
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[:size])
    return cut


def _remove(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda data: data.__setitem__(key, value)


def _del(key: str) -> Callable[[dict], None]:
    return lambda data: data.pop(key)


def _variant_backend(value: str) -> Callable[[dict], None]:
    return lambda data: data["variants"][0].__setitem__("backend", value)


# ---- the sweep ----------------------------------------------------------------------------------

O = f"{{tmp}}/{OUT}"
_Q = ("--no-progress", "--val-images", "4", "--out", O)  # quantize, small
_B = ("--input-size", "64x64", "--epochs", "1", "--train-images", "8", "--val-images", "4", "--no-progress",
      "--out", O)  # build, small
_NP = ("--no-progress",)
_MISSING = [
    Case("evaluate-missing-checkpoint", nothing, ("evaluate", "{tmp}/nope")),
    Case("export-missing-checkpoint-folder", nothing, ("export", "{tmp}/nope/", "--out", O), message="not found"),
    Case("quantize-missing-model", nothing, ("quantize", "{tmp}/nope.onnx", "--int8", *_Q)),
    Case("quantize-fp16-missing-model", nothing, ("quantize", "{tmp}/nope.onnx", "--fp16", *_Q)),
    Case("check-missing-model", nothing, ("check", "{tmp}/nope.onnx")),
    Case("build-missing-checkpoint", nothing, ("build", "deeplabv3p", "--checkpoint", "{tmp}/nope", *_B)),
    Case("verify-missing-build", nothing, ("verify", "{tmp}/nope", *_NP)),
    Case("bench-missing-model", nothing, ("bench", "{tmp}/nope.onnx")),
    Case("engine-missing-model", nothing, ("engine", "{tmp}/nope.onnx")),
    Case("triton-missing-build", nothing, ("triton", "{tmp}/nope", "--repo", O)),
    Case("predict-missing-model", with_image(nothing), ("predict", "{tmp}/nope.onnx", "{tmp}/image.png", "--out", O)),
    Case("predict-missing-image", model, ("predict", "{tmp}/model.onnx", "{tmp}/nope.png", "--out", O)),
    Case("train-missing-recipe", nothing, ("train", "deeplabv3p", "--recipe", "{tmp}/nope.toml", "--out", O)),
    Case("train-missing-backbone-checkpoint", nothing,
         ("train", "deeplabv3p", "--backbone-checkpoint", "{tmp}/nope.pth", "--out", O)),
    Case("export-missing-weights-file", nothing, ("export", "deeplabv3p", "--checkpoint", "{tmp}/nope.pth", "--out", O)),
    Case("quantize-missing-calib-folder", model, ("quantize", "{tmp}/model.onnx", "--int8", "--calib", "{tmp}/nope", *_Q)),
    Case("quantize-calib-cache-not-json", lambda tmp: (model(tmp), (tmp / "c.json").write_text("{")),
         ("quantize", "{tmp}/model.onnx", "--int8", "--calib-cache", "{tmp}/c.json", *_Q), message="c.json"),
    Case("quantize-calib-cache-a-folder", lambda tmp: (model(tmp), (tmp / "c.json").mkdir()),
         ("quantize", "{tmp}/model.onnx", "--int8", "--calib-cache", "{tmp}/c.json", *_Q), message="c.json"),
    Case("build-missing-data-folder", nothing, ("build", "deeplabv3p", "--data", "folder:{tmp}/nope", *_B)),
    Case("build-missing-calib-folder", nothing, ("build", "deeplabv3p", "--int8", "--calib", "{tmp}/nope", *_B)),
    Case("train-missing-voc", nothing, ("train", "deeplabv3p", "--data", "voc:{tmp}/nope", "--out", O)),
    Case("train-missing-cityscapes", nothing, ("train", "deeplabv3p", "--data", "cityscapes:{tmp}/nope", "--out", O)),
    Case("train-missing-coco", nothing, ("train", "deeplabv3p", "--data", "coco:{tmp}/nope", "--out", O)),
    Case("train-coco-without-the-split", coco_files(instances_test2017=b"{}"),
         ("train", "deeplabv3p", "--data", "coco:{tmp}/coco", "--out", O), message="found: instances_test2017.json"),
    Case("train-coco-not-json", coco_files(instances_train2017=b"{", instances_val2017=b"{"),
         ("train", "deeplabv3p", "--data", "coco:{tmp}/coco", "--out", O), message="not a readable COCO JSON"),
    Case("train-coco-no-categories", coco_files(instances_train=b'{"images": [], "annotations": []}'),
         ("train", "deeplabv3p", "--data", "coco:{tmp}/coco", "--out", O), message="no categories"),
    Case("evaluate-missing-data-folder", checkpoint, ("evaluate", "{tmp}/ckpt", "--data", "folder:{tmp}/nope", *_NP)),
    Case("verify-missing-data-folder", build, ("verify", "{tmp}/build", "--data", "folder:{tmp}/nope", *_NP)),
    Case("predict-empty-image-folder", images_folder(), ("predict", "{tmp}/model.onnx", "{tmp}/imgs", "--out", O),
         message="no image files"),
]
_UNKNOWN = [
    Case("train-unknown-arch", nothing, ("train", "nosuch", "--out", O)),
    Case("export-unknown-arch", nothing, ("export", "nosuch", "--out", O)),
    Case("build-unknown-arch", nothing, ("build", "nosuch", "--out", O)),
    Case("train-unknown-backbone", nothing, ("train", "deeplabv3p", "--backbone", "nosuch", "--out", O)),
    Case("train-unknown-size", nothing, ("train", "deeplabv3p", "--size", "huge", "--out", O)),
    Case("train-unknown-data-kind", nothing, ("train", "deeplabv3p", "--data", "nosuch:x", "--out", O)),
    Case("build-unknown-target", nothing, ("build", "deeplabv3p", "--int8", "--target", "nosuch", *_B)),
    Case("build-unknown-method", nothing, ("build", "deeplabv3p", "--int8", "--method", "nosuch", *_B)),
    Case("quantize-unknown-target", model, ("quantize", "{tmp}/model.onnx", "--int8", "--target", "nosuch", *_Q)),
    Case("quantize-unknown-method", model, ("quantize", "{tmp}/model.onnx", "--int8", "--method", "nosuch", *_Q)),
    Case("quantize-neither-precision", model, ("quantize", "{tmp}/model.onnx", *_Q), message="--int8 and --fp16"),
    Case("quantize-both-precisions", model, ("quantize", "{tmp}/model.onnx", "--int8", "--fp16", *_Q)),
    Case("quantize-fp16-with-int8-options", model, ("quantize", "{tmp}/model.onnx", "--fp16", "--method", "minmax", *_Q),
         message="apply to --int8 only"),
    Case("export-unknown-output", nothing, ("export", "deeplabv3p", "--output", "nosuch", "--out", O), usage=True),
    Case("export-unknown-crf", nothing, ("export", "deeplabv3p", "--crf", "nosuch", "--out", O)),
    Case("export-opset-too-old", nothing, ("export", "deeplabv3p", "--opset", "5", "--out", O)),
    Case("export-opset-too-new", nothing, ("export", "deeplabv3p", "--opset", "99", "--out", O)),
    Case("build-data-spec-empty-path", nothing, ("build", "deeplabv3p", "--data", "folder:", *_B)),
    Case("evaluate-unknown-data-kind", checkpoint, ("evaluate", "{tmp}/ckpt", "--data", "nosuch:x", *_NP)),
    Case("verify-unknown-data-kind", build, ("verify", "{tmp}/build", "--data", "nosuch:x", *_NP)),
    Case("build-checkpoint-of-another-arch", checkpoint, ("build", "fcn8s", "--checkpoint", "{tmp}/ckpt", *_B),
         message="a checkpoint of deeplabv3p, not fcn8s"),
    Case("unknown-command", nothing, ("nosuch",), usage=True),
    Case("unknown-option", nothing, ("list", "--nosuch"), usage=True),
]
_KINDS = [
    Case("evaluate-a-file", a_file("ckpt"), ("evaluate", "{tmp}/ckpt")),
    Case("evaluate-an-empty-folder", a_folder("ckpt"), ("evaluate", "{tmp}/ckpt")),
    Case("verify-a-file", a_file("build"), ("verify", "{tmp}/build", *_NP)),
    Case("verify-a-folder-without-build-json", a_folder("build"), ("verify", "{tmp}/build", *_NP)),
    Case("triton-a-file", a_file("build"), ("triton", "{tmp}/build", "--repo", O)),
    Case("triton-a-folder-without-build-json", a_folder("build"), ("triton", "{tmp}/build", "--repo", O)),
    Case("build-checkpoint-folder-without-model-json", a_folder("ckpt"),
         ("build", "deeplabv3p", "--checkpoint", "{tmp}/ckpt", *_B), message="not a checkpoint folder"),
    Case("export-folder-without-model-json", a_folder("ckpt"), ("export", "{tmp}/ckpt", "--out", O)),
    Case("quantize-a-folder", a_folder("model.onnx"), ("quantize", "{tmp}/model.onnx", "--fp16", *_Q)),
    Case("bench-a-folder-named-onnx", a_folder("model.onnx"), ("bench", "{tmp}/model.onnx")),
    Case("engine-a-folder", a_folder("model.onnx"), ("engine", "{tmp}/model.onnx")),
    Case("predict-a-folder-named-onnx", with_image(a_folder("model.onnx")),
         ("predict", "{tmp}/model.onnx", "{tmp}/image.png", "--out", O)),
    Case("train-recipe-is-a-folder", a_folder("recipe.toml"),
         ("train", "deeplabv3p", "--recipe", "{tmp}/recipe.toml", "--out", O)),
    Case("bench-an-image", with_image(nothing), ("bench", "{tmp}/image.png")),
    Case("predict-an-image-as-model", with_image(nothing), ("predict", "{tmp}/image.png", "{tmp}/image.png",
                                                            "--out", O)),
    Case("check-an-image", with_image(nothing), ("check", "{tmp}/image.png")),
    Case("quantize-an-image", with_image(nothing), ("quantize", "{tmp}/image.png", "--fp16", *_Q)),
    Case("build-data-folder-is-a-file", a_file("data"), ("build", "deeplabv3p", "--data", "folder:{tmp}/data", *_B)),
    Case("train-data-folder-without-masks", lambda tmp: png(tmp / "data" / "images" / "a.png"),
         ("train", "deeplabv3p", "--data", "folder:{tmp}/data", "--out", O)),
]
_CORRUPT = [
    Case("check-empty-onnx", a_file("model.onnx", b""), ("check", "{tmp}/model.onnx")),
    Case("quantize-empty-onnx", a_file("model.onnx", b""), ("quantize", "{tmp}/model.onnx", "--fp16", *_Q)),
    Case("bench-empty-onnx", a_file("model.onnx", b""), ("bench", "{tmp}/model.onnx")),
    Case("predict-empty-onnx", with_image(a_file("model.onnx", b"")),
         ("predict", "{tmp}/model.onnx", "{tmp}/image.png", "--out", O)),
    Case("check-text-onnx", a_file("model.onnx"), ("check", "{tmp}/model.onnx")),
    Case("quantize-text-onnx", a_file("model.onnx"), ("quantize", "{tmp}/model.onnx", "--int8", *_Q)),
    Case("engine-text-onnx", a_file("model.onnx"), ("engine", "{tmp}/model.onnx")),
    Case("export-garbage-pth", a_file("w.pth", b"\x80\x02garbage"),
         ("export", "deeplabv3p", "--checkpoint", "{tmp}/w.pth", "--out", O)),
    Case("export-garbage-safetensors", a_file("w.safetensors", b"garbage"),
         ("export", "deeplabv3p", "--checkpoint", "{tmp}/w.safetensors", "--out", O)),
    Case("train-garbage-backbone-checkpoint", a_file("w.pth", b"garbage"),
         ("train", "deeplabv3p", "--backbone-checkpoint", "{tmp}/w.pth", "--out", O)),
    Case("train-recipe-not-toml", recipe_file("epochs = [unclosed\n"),
         ("train", "deeplabv3p", "--recipe", "{tmp}/recipe.toml", "--out", O)),
    Case("train-recipe-unknown-key", recipe_file('arch = "deeplabv3p"\nno_such_key = 1\n'),
         ("train", "deeplabv3p", "--recipe", "{tmp}/recipe.toml", "--out", O)),
    Case("train-recipe-wrong-type", recipe_file('arch = "deeplabv3p"\nepochs = "many"\n'),
         ("train", "deeplabv3p", "--recipe", "{tmp}/recipe.toml", "--out", O)),
    Case("evaluate-weights-missing", checkpoint_with(_remove("checkpoint.safetensors")), ("evaluate", "{tmp}/ckpt")),
    Case("evaluate-unknown-arch-in-model-json", checkpoint_with(edit_json("model.json", _set("arch", "nosuch"))),
         ("evaluate", "{tmp}/ckpt")),
    Case("evaluate-model-json-not-json", checkpoint_with(_write("model.json", "{not json")), ("evaluate", "{tmp}/ckpt")),
    Case("evaluate-model-json-a-list", checkpoint_with(_write("model.json", "[]")), ("evaluate", "{tmp}/ckpt")),
    Case("predict-missing-checkpoint-folder", with_image(nothing), ("predict", "{tmp}/nope", "{tmp}/image.png",
                                                                        "--out", O)),
    Case("export-checkpoint-truncated-weights", checkpoint_with(_truncate("checkpoint.safetensors", 500)),
         ("export", "{tmp}/ckpt", "--out", O)),
    Case("build-checkpoint-truncated-weights", checkpoint_with(_truncate("checkpoint.safetensors", 500)),
         ("build", "deeplabv3p", "--checkpoint", "{tmp}/ckpt", *_B)),
    Case("verify-build-json-not-json", build_with(_write("build.json", "{")), ("verify", "{tmp}/build", *_NP)),
    Case("verify-build-json-missing-key", build_with(edit_json("build.json", _del("variants"))),
         ("verify", "{tmp}/build", *_NP)),
    Case("verify-build-json-unknown-backend", build_with(edit_json("build.json", _variant_backend("nosuch"))),
         ("verify", "{tmp}/build", *_NP)),
    Case("verify-artifact-missing", build_with(_remove("model.int8.cpu.onnx")), ("verify", "{tmp}/build", *_NP),
         message="listed in build.json (onnx-int8-cpu) but missing"),
    Case("triton-artifact-missing", build_with(_remove("model.onnx")), ("triton", "{tmp}/build", "--repo", O)),
    Case("triton-build-json-not-json", build_with(_write("build.json", "nope")), ("triton", "{tmp}/build", "--repo", O)),
    Case("verify-fp32-in-place-of-int8", build_with(_copy_over("model.onnx", "model.int8.cpu.onnx")),
         ("verify", "{tmp}/build", *_NP), message="model.int8.cpu.onnx: not written by segexport"),
    Case("verify-reference-weights-changed", build_with(_truncate("reference/checkpoint.safetensors", 2000)),
         ("verify", "{tmp}/build", *_NP), message="checkpoint.safetensors: not written by segexport"),
    Case("verify-onnx-swapped-with-int8", build_with(_copy_over("model.int8.cpu.onnx", "model.onnx")),
         ("verify", "{tmp}/build", *_NP), message="model.onnx: not written by segexport"),
    Case("predict-duplicate-stems", images_folder("a.png") , ("predict", "{tmp}/model.onnx", "{tmp}/imgs/a.png",
                                                              "{tmp}/imgs", "--out", O), message="several images"),
]
_BIG = str(2**70)
_MALFORMED_SIZES = ("zero", "word", "one-side", "negative")  # not HEIGHTxWIDTH of positive integers: usage box
_BOUNDS = [
    *[Case(f"{cmd}-seed-{name}", setup, (cmd, *args, "--seed", value, *rest))
      for name, value in (("negative", "-1"), ("beyond-64-bits", _BIG))
      for cmd, setup, args, rest in (
          ("train", nothing, ("deeplabv3p",), ("--out", O)),
          ("build", nothing, ("deeplabv3p",), _B),
          ("export", nothing, ("deeplabv3p",), ("--out", O)),
          ("quantize", model, ("{tmp}/model.onnx", "--int8"), _Q))],
    *[Case(f"{cmd}-input-size-{name}", nothing, (cmd, "deeplabv3p", "--input-size", value, *rest),
           usage=name in _MALFORMED_SIZES)
      for name, value in (("huge", "100000x100000"), ("zero", "0x0"), ("word", "big"), ("one-side", "64"),
                          ("negative", "-64x64"), ("too-big-for-memory", "8192x8192"))
      for cmd, rest in (("export", ("--out", O)), ("build", ("--epochs", "1", "--no-progress", "--out", O)))],
    *[Case(f"bench-input-size-{name}", model, ("bench", "{tmp}/model.onnx", "--input-size", value),
           usage=name in _MALFORMED_SIZES)
      for name, value in (("huge", "100000x100000"), ("zero", "0x0"), ("word", "big"))],
    Case("bench-batch-huge", model, ("bench", "{tmp}/model.onnx", "--batch", "100000")),
    Case("bench-batch-zero", model, ("bench", "{tmp}/model.onnx", "--batch", "0")),
    Case("bench-runs-zero", model, ("bench", "{tmp}/model.onnx", "--runs", "0")),
    Case("bench-runs-huge", model, ("bench", "{tmp}/model.onnx", "--runs", _BIG)),
    Case("bench-threads-zero", model, ("bench", "{tmp}/model.onnx", "--threads", "0")),
    Case("verify-images-huge", build, ("verify", "{tmp}/build", "--images", "100000", *_NP)),
    Case("verify-images-zero", build, ("verify", "{tmp}/build", "--images", "0", *_NP)),
    Case("verify-runs-zero", build, ("verify", "{tmp}/build", "--runs", "0", *_NP)),
    Case("evaluate-images-zero", checkpoint, ("evaluate", "{tmp}/ckpt", "--images", "0", *_NP), usage=True),
    Case("train-epochs-zero", nothing, ("train", "deeplabv3p", "--epochs", "0", "--out", O), usage=True),
    Case("train-epochs-huge", nothing, ("train", "deeplabv3p", "--epochs", _BIG, "--out", O)),
    Case("train-batch-size-one", nothing, ("train", "deeplabv3p", "--batch-size", "1", "--out", O), usage=True),
    Case("train-batch-size-huge", nothing, ("train", "deeplabv3p", "--batch-size", "100000", "--out", O)),
    Case("train-lr-negative", nothing, ("train", "deeplabv3p", "--lr", "-1", "--out", O), usage=True),
    Case("build-train-images-huge", nothing, ("build", "deeplabv3p", "--train-images", "10000000", "--out", O)),
    Case("build-val-images-huge", nothing, ("build", "deeplabv3p", "--val-images", "10000000", "--out", O)),
    Case("build-calib-images-zero", nothing, ("build", "deeplabv3p", "--int8", "--calib-images", "0", *_B)),
    Case("build-calib-images-huge", nothing, ("build", "deeplabv3p", "--int8", "--calib-images", _BIG, *_B)),
    Case("build-max-fallback-negative", nothing, ("build", "deeplabv3p", "--int8", "--max-fallback", "-1", *_B)),
    *[Case(f"build-budget-{option[2:]}-{name}", nothing, ("build", "deeplabv3p", "--int8", option, value, *_B),
           message=option)
      for option in ("--budget-int8", "--budget-fp16")
      for name, value in (("negative", "-1"), ("nan", "nan"), ("inf", "inf"), ("word", "tight"))],
    Case("quantize-budget-negative", model, ("quantize", "{tmp}/model.onnx", "--int8", "--budget", "-1", *_Q)),
    Case("quantize-calib-images-zero", model, ("quantize", "{tmp}/model.onnx", "--int8", "--calib-images", "0", *_Q)),
    Case("quantize-calib-images-huge", model, ("quantize", "{tmp}/model.onnx", "--int8", "--calib-images", _BIG, *_Q)),
    Case("quantize-val-images-zero", model, ("quantize", "{tmp}/model.onnx", "--int8", "--val-images", "0",
                                             "--out", O)),
    Case("quantize-percentile-out-of-range", model,
         ("quantize", "{tmp}/model.onnx", "--int8", "--method", "percentile", "--percentile", "200", *_Q)),
    Case("quantize-max-fallback-negative", model,
         ("quantize", "{tmp}/model.onnx", "--int8", "--max-fallback", "-1", *_Q)),
    Case("export-images-zero", nothing, ("export", "deeplabv3p", "--images", "0", "--out", O), usage=True),
    Case("export-images-huge", nothing, ("export", "deeplabv3p", "--images", "100000000", "--out", O)),
    Case("export-crf-iterations-zero", nothing, ("export", "deeplabv3p", "--crf", "conv", "--crf-iterations", "0",
                                                 "--out", O), usage=True),
    Case("triton-max-batch-zero", build, ("triton", "{tmp}/build", "--repo", O, "--max-batch", "0")),
    Case("triton-instances-zero", build, ("triton", "{tmp}/build", "--repo", O, "--instances", "0")),
    Case("triton-instances-huge", build, ("triton", "{tmp}/build", "--repo", O, "--instances", "100000")),
    Case("triton-bad-name", build, ("triton", "{tmp}/build", "--repo", O, "--name", "a/b"), message="--name"),
    Case("engine-max-batch-zero", model, ("engine", "{tmp}/model.onnx", "--max-batch", "0")),
    Case("engine-workspace-negative", model, ("engine", "{tmp}/model.onnx", "--workspace", "-1")),
    Case("engine-max-size-word", model, ("engine", "{tmp}/model.onnx", "--max-size", "big"), usage=True),
]
_OUTPUTS = [
    Case("train-out-is-a-file", out_is_a_file(nothing), ("train", "deeplabv3p", "--epochs", "1", "--out", O),
         message="is a file"),
    Case("train-out-holds-user-files", with_user_files(nothing, "notes.txt", "sub/data.csv"),
         ("train", "deeplabv3p", "--epochs", "1", "--out", O), message="segexport did not write"),
    Case("export-out-is-a-file", out_is_a_file(checkpoint), ("export", "{tmp}/ckpt", "--out", O), message="is a file"),
    Case("export-out-holds-a-user-model", with_user_files(checkpoint, "model.onnx"),
         ("export", "{tmp}/ckpt", "--out", O), message="'model.onnx' exists and segexport did not write it"),
    Case("quantize-out-is-a-file", out_is_a_file(model), ("quantize", "{tmp}/model.onnx", "--fp16", *_Q),
         message="is a file"),
    Case("quantize-out-holds-a-user-model", with_user_files(model, "model.fp16.onnx"),
         ("quantize", "{tmp}/model.onnx", "--fp16", *_Q), message="'model.fp16.onnx' exists"),
    Case("quantize-out-holds-a-user-calibration", with_user_files(model, "calibration.json"),
         ("quantize", "{tmp}/model.onnx", "--int8", "--target", "cpu", *_Q), message="'calibration.json' exists"),
    Case("quantize-out-holds-a-user-summary", with_user_files(model, "quantize.json"),
         ("quantize", "{tmp}/model.onnx", "--int8", *_Q), message="'quantize.json' exists"),
    Case("build-junit-names-a-folder", a_folder("j.xml"), ("build", "deeplabv3p", "--junit", "{tmp}/j.xml", *_B),
         message="--junit {tmp}/j.xml: a folder where a file is expected"),
    Case("build-out-is-a-file", out_is_a_file(nothing), ("build", "deeplabv3p", *_B), message="is a file"),
    Case("build-triton-repo-inside-the-build", nothing,
         ("build", "deeplabv3p", "--triton-repo", "{tmp}/out/models", *_B),
         message="--triton-repo {tmp}/out/models: inside the build folder {tmp}/out; pass a folder outside it"),
    Case("build-triton-repo-is-a-file", a_file("models"), ("build", "deeplabv3p", "--triton-repo", "{tmp}/models", *_B),
         message="is a file"),
    Case("build-empty-target-list", nothing, ("build", "deeplabv3p", "--int8", "--target", ",", *_B),
         message="--target must be tensorrt, cpu, openvino (or several, comma-separated) or all, got ','"),
    Case("predict-backend-that-cannot-run-onnx", with_image(model),
         ("predict", "{tmp}/model.onnx", "{tmp}/image.png", "--backend", "torch", "--out", O),
         message="the torch backend cannot run it (.onnx artifacts run on onnxruntime, openvino)"),
    Case("bench-unknown-backend", model, ("bench", "{tmp}/model.onnx", "--backend", "cuda"),
         message="unknown backend 'cuda'; use one of torch, onnxruntime, openvino, tensorrt"),
    Case("build-out-holds-user-files", with_user_files(nothing, "notes.txt"), ("build", "deeplabv3p", *_B),
         message="holds 1 file(s) segexport did not write ('notes.txt')"),
    Case("verify-over-a-user-report", build_with(_write("report.md", "my notes\n")), ("verify", "{tmp}/build", *_NP),
         message="'report.md' exists and segexport did not write it"),
    Case("triton-repo-is-a-file", out_is_a_file(build), ("triton", "{tmp}/build", "--repo", O), message="is a file"),
    Case("triton-repo-holds-a-user-model-of-that-name", with_user_files(build, "deeplabv3p_onnx/config.pbtxt"),
         ("triton", "{tmp}/build", "--repo", O), message="'deeplabv3p_onnx' exists and segexport did not write it"),
    Case("predict-out-is-a-file", out_is_a_file(model_and_image),
         ("predict", "{tmp}/model.onnx", "{tmp}/image.png", "--out", O), message="is a file"),
    Case("predict-out-is-the-input-folder", images_folder("a.png", "b.png"),
         ("predict", "{tmp}/model.onnx", "{tmp}/imgs", "--out", "{tmp}/imgs"), message="would replace an input image"),
    Case("predict-out-is-the-input-folder-even-forced", images_folder("a.png"),
         ("predict", "{tmp}/model.onnx", "{tmp}/imgs", "--out", "{tmp}/imgs", "--force"),
         message="would replace an input image"),
    Case("predict-out-holds-a-user-mask", with_user_files(model_and_image, "image.png"),
         ("predict", "{tmp}/model.onnx", "{tmp}/image.png", "--out", O), message="'image.png' exists"),
    Case("predict-overlay-over-a-user-file", with_user_files(model_and_image, "image.overlay.png"),
         ("predict", "{tmp}/model.onnx", "{tmp}/image.png", "--out", O, "--overlay"), message="'image.overlay.png'"),
    Case("engine-out-is-a-user-file", with_user_files(model, "model.plan"),
         ("engine", "{tmp}/model.onnx", "--out", f"{O}/model.plan"), message="'model.plan' exists"),
    Case("engine-record-is-a-user-file", with_user_files(model, "model.json"),
         ("engine", "{tmp}/model.onnx", "--out", f"{O}/model.plan"), message="'model.json' exists"),
]
def _owned_by_a_build(root: Path) -> None:
    from segexport.ownership import set_owner

    set_owner(root, "the build of deeplabv3p")  # as `segexport build` leaves its folder


def _big_image(tmp: Path) -> None:
    tiny_onnx(tmp / "model.onnx")
    Image.new("1", (9500, 9500)).save(tmp / "image.png")  # past Pillow's pixel limit, small on disk


_FOUND = [  # from a hostile sweep after the first matrix
    Case("train-out-holds-a-users-dot-old-file", with_user_files(nothing, ".notes.old", ".model.onnx.old"),
         ("train", "deeplabv3p", "--epochs", "1", "--out", O), message="('.model.onnx.old', '.notes.old')"),
    Case("verify-junit-is-a-model", build, ("verify", "{tmp}/build", "--junit", "{tmp}/build/model.onnx", *_NP),
         message="'model.onnx' is the artifact of deeplabv3p from checkpoint"),
    Case("verify-junit-is-the-reference-weights", build,
         ("verify", "{tmp}/build", "--junit", "{tmp}/build/reference/checkpoint.safetensors", *_NP),
         message="'checkpoint.safetensors' is another artifact"),
    Case("verify-junit-is-a-user-file", with_user_files(build, "notes.xml"),
         ("verify", "{tmp}/build", "--junit", f"{O}/notes.xml", *_NP), message="'notes.xml' exists and segexport"),
    Case("build-junit-is-the-checkpoint-weights", checkpoint,
         ("build", "deeplabv3p", "--checkpoint", "{tmp}/ckpt", "--junit", "{tmp}/ckpt/checkpoint.safetensors", *_B),
         message="'checkpoint.safetensors' is another artifact"),
    Case("predict-overlay-name-of-another-input", images_folder("a.png", "a.overlay.png"),
         ("predict", "{tmp}/model.onnx", "{tmp}/imgs", "--out", O, "--overlay"),
         message="a mask and an overlay would both be named 'a.overlay.png'"),
    Case("predict-an-image-past-the-pixel-limit", _big_image, ("predict", "{tmp}/model.onnx", "{tmp}/image.png",
                                                               "--out", O), message="pass a smaller image"),
    Case("triton-repo-is-the-build-folder", build_with(_owned_by_a_build), ("triton", "{tmp}/build", "--repo",
                                                                           "{tmp}/build"),
         message="belongs to the build of deeplabv3p"),
    Case("quantize-into-a-build-folder", build_with(_owned_by_a_build),
         ("quantize", "{tmp}/build/model.onnx", "--int8", "--target", "cpu", "--no-progress"),
         message="belongs to the build of deeplabv3p"),
    Case("export-into-a-checkpoint-folder", checkpoint, ("export", "{tmp}/ckpt", "--out", "{tmp}/ckpt"),
         message="belongs to a checkpoint of deeplabv3p"),
    Case("predict-into-a-build-folder", lambda tmp, request: (build_with(_owned_by_a_build)(tmp, request),
                                                              png(tmp / "image.png")),
         ("predict", "{tmp}/build/model.onnx", "{tmp}/image.png", "--out", "{tmp}/build"),
         message="belongs to the build of deeplabv3p"),
    *[Case(f"train-recipe-{key}-{name}", recipe_file(f'arch = "deeplabv3p"\n{key} = {value}\n'),
           ("train", "deeplabv3p", "--recipe", "{tmp}/recipe.toml", "--out", O), message=key)
      for key, name, value in (("lr", "nan", "nan"), ("lr", "negative", "-1.0"), ("lr", "inf", "inf"),
                               ("weight_decay", "negative", "-5.0"), ("scale_min", "negative", "-1.0"),
                               ("scale_min", "above-scale-max", "9.0"), ("aux_weight", "nan", "nan"),
                               ("crf", "unknown", '"bogus"'), ("crf_iterations", "negative", "-1"),
                               ("budget_int8", "negative", "-1.0"))],
]
_NORM = ("--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25")
_NETWORKS = [  # a user's own network or ONNX file (issue 16)
    Case("build-onnx-without-mean-std", model, ("build", "{tmp}/model.onnx", "--out", O), message="pass --mean and --std"),
    Case("build-onnx-classes-unknown", lambda tmp: tiny_onnx(tmp / "model.onnx", classes=5),
         ("build", "{tmp}/model.onnx", *_NORM, "--out", O), message="pass --classes FILE"),
    Case("build-onnx-classes-file-missing", model,
         ("build", "{tmp}/model.onnx", *_NORM, "--classes", "{tmp}/nope.txt", "--out", O), message="--classes"),
    Case("build-onnx-with-checkpoint", model, ("build", "{tmp}/model.onnx", *_NORM, "--checkpoint", "{tmp}",
                                               "--out", O), message="do not apply to an ONNX file source"),
    Case("build-classes-without-onnx", nothing, ("build", "fcn8s", "--classes", "{tmp}/c.txt", "--out", O),
         message="--classes applies to an ONNX file source"),
    Case("train-model-does-not-import", nothing, ("train", "--model", "no_such_module_xyz:build", "--out", O),
         message="no module 'no_such_module_xyz'"),
    Case("export-model-not-module-callable", nothing, ("export", "--model", "a:b:c", "--out", O),
         message="--model must be MODULE:CALLABLE"),
    Case("build-model-kwargs-not-an-object", nothing, ("build", "--model", "os:getcwd", "--model-kwargs", "[1]",
                                                       "--out", O), message="--model-kwargs must be a JSON object"),
    Case("export-model-returns-no-module", nothing, ("export", "--model", "os:getcwd", "--out", O),
         message="not a torch.nn.Module"),
    Case("train-mean-not-three-numbers", nothing, ("train", "fcn8s", "--mean", "0.5,0.5", "--out", O),
         message="--mean must be three numbers"),
]
CASES = [*_MISSING, *_UNKNOWN, *_KINDS, *_CORRUPT, *_BOUNDS, *_OUTPUTS, *_FOUND, *_NETWORKS]
