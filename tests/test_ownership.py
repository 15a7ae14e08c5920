"""The output policy: which files segexport wrote, what a command may write over, the folder lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from segexport.errors import InputError
from segexport.fsutil import atomic_dir, atomic_path, write_json
from segexport.locks import LOCK_NAME, folder_lock
from segexport.ownership import (
    LEDGER_NAME,
    claim_outputs,
    expect_file,
    file_digest,
    foreign_entries,
    is_known,
    is_ours,
)


def test_atomic_writes_are_recorded_and_recognised(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "b.json").write_text("{}")
    assert is_ours(tmp_path / "a.json") and foreign_entries(tmp_path) == ["b.json"]
    (tmp_path / "a.json").write_text('{"x": 2}\n')  # damaged: no longer what segexport wrote ...
    assert not is_ours(tmp_path / "a.json")
    assert is_known(tmp_path / "a.json") and foreign_entries(tmp_path) == ["b.json"]  # ... but its to replace


def test_a_kill_between_rename_and_record_still_leaves_a_known_file(tmp_path):
    write_json(tmp_path / "m.json", {"v": 1})
    new = tmp_path / "staged"
    new.write_text('{"v": 2}\n')
    expect_file(tmp_path / "m.json", file_digest(new))  # what atomic_path notes before its rename
    os.replace(new, tmp_path / "m.json")  # ... and the process dies before recording it
    assert is_ours(tmp_path / "m.json")


def test_folders_written_atomically_are_segexport_s_recursively(tmp_path):
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"123")
        (tmp / "model.json").write_text("{}")
    assert is_known(tmp_path / "ckpt") and is_ours(tmp_path / "ckpt" / "sub" / "w.bin")
    (tmp_path / "ckpt" / "sub" / "notes.txt").write_text("mine")
    assert not is_known(tmp_path / "ckpt") and foreign_entries(tmp_path) == ["ckpt"]


def test_replacing_a_folder_keeps_files_segexport_did_not_write(tmp_path):
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "model.json").write_text("old")
    (tmp_path / "ckpt" / "notes.txt").write_text("mine")
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "model.json").write_text("new")
    assert (tmp_path / "ckpt" / "model.json").read_text() == "new"
    assert (tmp_path / "ckpt" / "notes.txt").read_text() == "mine"
    assert not is_known(tmp_path / "ckpt" / "notes.txt")


def test_atomic_dir_refuses_to_replace_a_file(tmp_path):
    (tmp_path / "x").write_text("user data")
    with pytest.raises(InputError, match="is a file"), atomic_dir(tmp_path / "x"):
        pass
    assert (tmp_path / "x").read_text() == "user data"


def test_claim_refuses_foreign_files_where_the_command_writes(tmp_path):
    (tmp_path / "model.onnx").write_text("user's")
    with pytest.raises(InputError, match=r"'model.onnx' exists and segexport did not write it.*--force"):
        claim_outputs(tmp_path, ["model.onnx"])
    claim_outputs(tmp_path, ["other.onnx"])  # other names are fine in a shared folder
    claim_outputs(tmp_path, ["model.onnx"], force=True)
    assert (tmp_path / "model.onnx").read_text() == "user's"  # force writes later; it deletes nothing


def test_claim_of_a_whole_folder_refuses_any_foreign_file_and_another_owner(tmp_path):
    out = tmp_path / "b"
    claim_outputs(out, owner="the build of fcn8s")
    write_json(out / "build.json", {})
    claim_outputs(out, owner="the build of fcn8s")
    with pytest.raises(InputError, match="holds the artifacts of the build of fcn8s, not the build of unet"):
        claim_outputs(out, owner="the build of unet")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"holds 1 file\(s\) segexport did not write \('notes.txt'\)"):
        claim_outputs(out, owner="the build of fcn8s")
    claim_outputs(out, owner="the build of unet", force=True)
    assert json.loads((out / LEDGER_NAME).read_text())["owner"] == "the build of fcn8s"  # a claim writes nothing
    write_json(out / "build.json", {"arch": "unet"})
    assert json.loads((out / LEDGER_NAME).read_text())["owner"] == "the build of unet"
    assert (out / "notes.txt").read_text() == "mine"


def test_a_claim_creates_nothing(tmp_path):
    claim_outputs(tmp_path / "a" / "b", ["x.onnx"], source="model m", owner="the build of fcn8s")
    assert list(tmp_path.iterdir()) == []


def test_claim_refuses_another_source_s_artifact(tmp_path):
    claim_outputs(tmp_path, ["m.int8.onnx"], source="model /a.onnx")
    with atomic_path(tmp_path / "m.int8.onnx") as tmp:
        tmp.write_text("int8 of a")
    claim_outputs(tmp_path, ["m.int8.onnx"], source="model /a.onnx")
    with pytest.raises(InputError, match="is the artifact of model /a.onnx, not model /b.onnx"):
        claim_outputs(tmp_path, ["m.int8.onnx"], source="model /b.onnx")


def test_claim_refuses_a_file_as_the_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder; choose another --out"):
        claim_outputs(tmp_path / "f", ["a"], force=True)


def test_lock_refuses_a_second_holder_naming_it(tmp_path):
    with folder_lock(tmp_path, "segexport build fcn8s"):
        code = ("from segexport.locks import folder_lock\n"
                f"with folder_lock({str(tmp_path)!r}, 'second'): pass")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode != 0
        assert f"process {os.getpid()}" in r.stderr and "segexport build fcn8s" in r.stderr
    with folder_lock(tmp_path, "third") as lock:  # released: free again, and it was released cleanly
        assert lock.taken_over is None


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    code = ("import os\nfrom segexport.locks import folder_lock\n"
            f"with folder_lock({str(tmp_path)!r}, 'segexport build x'): os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert (tmp_path / LOCK_NAME).read_text()  # the record of the holder that never finished
    with folder_lock(tmp_path, "segexport build x") as lock:
        assert lock.taken_over is not None and "segexport build x" in lock.taken_over
