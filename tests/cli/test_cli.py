"""The CLI as users run it: real subprocesses, exit codes, one-line errors."""

import json
import shutil

import numpy as np
from cli_helpers import assert_one_line_error
from PIL import Image


def _folder_dataset(root, n=4, size=64, mask_max=2):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, mask_max + 1, (size, size), dtype=np.uint8)).save(root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("bg\na\nb\n")
    return root


def test_list_json(cli):
    r = cli("list", "--json")
    assert r.code == 0
    names = [e["name"] for e in json.loads(r.stdout)]
    assert {"fcn8s", "deeplabv3p"} <= set(names)


def test_help_shows_examples(cli):
    r = cli("train", "--help")
    assert r.code == 0 and "segexport train deeplabv3p" in r.stdout


def test_unknown_architecture(cli):
    assert_one_line_error(cli("train", "deeplab3p"), "unknown architecture", "deeplabv3p")


def test_missing_data_path(cli, tmp_path):
    assert_one_line_error(cli("train", "fcn8s", "--data", f"folder:{tmp_path / 'nope'}", "--out", tmp_path / "o"), "nope")
    assert not (tmp_path / "o").exists()


def test_mask_values_outside_classes(cli, tmp_path):
    root = _folder_dataset(tmp_path / "ds", mask_max=5)
    r = cli("train", "fcn8s", "--data", f"folder:{root}", "--out", tmp_path / "o")
    assert_one_line_error(r, "0.png", "outside")
    assert not (tmp_path / "o").exists()


def test_non_image_among_images(cli, tmp_path):
    root = _folder_dataset(tmp_path / "ds")
    (root / "images" / "3.png").write_text("this is not an image")
    r = cli("train", "fcn8s", "--data", f"folder:{root}", "--out", tmp_path / "o")
    assert_one_line_error(r, "3.png", "not a readable image")
    assert not (tmp_path / "o").exists()


def test_malformed_argument_is_usage_error(cli):
    r = cli("train", "fcn8s", "--epochs", "many")
    assert r.code == 2 and "Usage" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_reproduces_training_metrics(cli, tiny_checkpoint):
    r = cli("evaluate", tiny_checkpoint, "--json")
    assert r.code == 0, r.stderr
    got = json.loads(r.stdout)
    want = json.loads((tiny_checkpoint / "metrics.json").read_text())
    assert abs(got["miou"] - want["miou"]) <= 1e-6
    assert abs(got["pixel_acc"] - want["pixel_acc"]) <= 1e-6


def test_checkpoint_of_other_architecture(cli, tiny_checkpoint, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other)
    meta = json.loads((other / "model.json").read_text())
    meta["arch"], meta["build_args"] = "fcn8s", {"size": "tiny", "num_classes": len(meta["classes"])}
    (other / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(cli("evaluate", other), "does not fit fcn8s", "missing keys")


def test_corrupt_checkpoint(cli, tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "checkpoint.safetensors").write_bytes(b"\x00garbage")
    assert_one_line_error(cli("evaluate", broken), "corrupt or truncated")
