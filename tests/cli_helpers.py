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


def run_cli_in_process(capfd, *args: str) -> CliResult:
    """Run the CLI's app in this process, exactly as ``main`` does but without exiting; stdout
    and stderr captured at the file-descriptor level (``capfd``), so what ONNX Runtime or
    another library prints is seen too. Tens of times faster than :func:`run_cli`, for tables
    of cases; the signal handlers ``main`` installs are not used."""
    from segexport import cli

    capfd.readouterr()
    argv = sys.argv
    sys.argv = ["segexport", *map(str, args)]
    try:
        code = cli._run_app()
    except SystemExit as exc:  # Typer exits with the command's code (0, or 2 for a usage error)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        cli.set_interrupt_hint(cli.DEFAULT_INTERRUPT_HINT)
    out, err = capfd.readouterr()
    return CliResult(code, out, err)
