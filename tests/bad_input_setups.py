"""Setups of the hostile sweep (``bad_input_cases``): the files a case starts from, made in its folder.

Each setup takes the case's folder (and, for fixture copies, pytest's request) and writes what the
command under test will find there; ``tests/test_bad_input.py`` imports the ones it also uses.
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


def copy_over(src: str, dst: str) -> Callable[[Path], None]:
    return lambda root: shutil.copyfile(root / src, root / dst)


def truncate(name: str, size: int = 300) -> Callable[[Path], None]:
    def cut(root: Path) -> None:
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[:size])
    return cut


def remove_file(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


def write_file(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def set_key(key: str, value: object) -> Callable[[dict], None]:
    return lambda data: data.__setitem__(key, value)


def delete_key(key: str) -> Callable[[dict], None]:
    return lambda data: data.pop(key)


def variant_backend(value: str) -> Callable[[dict], None]:
    return lambda data: data["variants"][0].__setitem__("backend", value)
