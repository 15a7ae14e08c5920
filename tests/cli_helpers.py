"""Helpers for tests that run the CLI as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None) -> CliResult:
    """Run ``python -m segexport ARGS`` in a real subprocess (exit codes and stderr as users see them)."""
    proc = subprocess.run(
        [sys.executable, "-m", "segexport", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=600,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: CliResult, *fragments: str, code: int = 2) -> None:
    """Exit ``code``, exactly one non-empty line on stderr, no traceback, naming ``fragments``."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.code == code, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, lines
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
