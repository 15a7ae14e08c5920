"""A build interrupted anywhere, by any signal, resumes to bitwise the artifacts of one that was
not; two builds into one folder never run at once.

The six interruptions run two at a time (each build on one torch thread), in one fixture; each
case is then its own test of what that run left and what its re-run made.
"""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from build_runs import COMPARED, hashes, start_build, wait_for

from segexport.hashing import file_sha256
from segexport.locks import LOCK_NAME

# Where a build is interrupted: the stage record that must exist first (the next stage is then running).
POINTS = {"during-export": ".stages/reference.json", "during-int8": ".stages/export.json"}
SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143), "SIGKILL": (signal.SIGKILL, -9)}
CASES = [(sig, point) for sig in SIGNALS for point in POINTS]


@dataclass
class Interrupted:
    """What one interrupted build and its re-run did."""

    code: int
    stderr: str
    temporary_left: list[Path]
    report_written: bool
    left: dict[str, str]  # the artifacts that stood when it stopped, by name
    rerun_code: int
    rerun_stderr: str
    rerun: dict[str, str]
    rerun_temporary_left: list[Path]
    statuses: dict[str, str]


def _interrupt(cwd: Path, signum: int, marker: str) -> Interrupted:
    cwd.mkdir()
    build = cwd / "build"
    proc = start_build(cwd)
    wait_for(build / marker, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    temporary = list(build.rglob(".*.part"))
    left = {name: file_sha256(build / name) for name in COMPARED if (build / name).exists()}
    report = (build / "report.json").exists()
    rerun = start_build(cwd)
    _, rerun_stderr = rerun.communicate(timeout=600)
    statuses = json.loads((build / ".stages" / "last_run.json").read_text())["stages"] if rerun.returncode == 0 else []
    return Interrupted(proc.returncode, stderr, temporary, report, left, rerun.returncode, rerun_stderr,
                       hashes(build) if rerun.returncode == 0 else {}, list(build.rglob(".*.part")),
                       {s["stage"]: s["status"] for s in statuses})


@pytest.fixture(scope="module")
def interrupted(whole, tmp_path_factory) -> dict[tuple[str, str], Interrupted]:
    root = tmp_path_factory.mktemp("interrupted")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {case: pool.submit(_interrupt, root / "-".join(case), SIGNALS[case[0]][0], POINTS[case[1]])
                for case in CASES}
        return {case: run.result() for case, run in runs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_interrupted_build_resumes_to_identical_artifacts(interrupted, whole, case):
    run = interrupted[case]
    assert run.code == SIGNALS[case[0]][1], run.stderr
    if case[0] != "SIGKILL":
        lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
        assert "Traceback" not in run.stderr and lines[-1].startswith("interrupted:"), run.stderr
        assert "run the same command again" in lines[-1]
        assert not run.temporary_left, "temporary files left behind"
    assert not run.report_written
    assert run.left == {name: whole[name] for name in run.left}  # whatever stood under a name was complete
    assert run.rerun_code == 0, run.rerun_stderr
    assert run.rerun == whole and not run.rerun_temporary_left
    assert run.statuses["reference"] == "cached"


@pytest.mark.slow
def test_a_second_build_into_the_same_folder_is_refused_while_the_first_runs(whole, tmp_path):
    first = start_build(tmp_path)
    lock = tmp_path / "build" / LOCK_NAME
    wait_for(tmp_path / "build" / ".stages" / "reference.json", first)
    second = start_build(tmp_path)
    _, stderr = second.communicate(timeout=120)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert second.returncode == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"in use by process {first.pid}" in lines[0] and "segexport build deeplabv3p" in lines[0]
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert hashes(tmp_path / "build") == whole  # the first build's own artifacts, untouched by the second
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    assert report["pass"] is True and not lock.read_text()  # released cleanly
