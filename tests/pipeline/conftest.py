"""An uninterrupted quick build, shared by the tests that interrupt, race or re-run builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from build_runs import hashes, start_build


@pytest.fixture(scope="session")
def whole_build(tmp_path_factory) -> Path:
    """``CWD/build`` of an uninterrupted quick build (see ``build_runs``)."""
    cwd = tmp_path_factory.mktemp("whole")
    proc = start_build(cwd)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return cwd / "build"


@pytest.fixture(scope="session")
def whole(whole_build) -> dict[str, str]:
    """The artifacts of the uninterrupted build, by name."""
    return hashes(whole_build)
