"""The ``segexport`` command line: a thin Typer app over library functions.

Errors become exit codes here and only here (``main``):

- 2: bad input: a :class:`SegexportError`, or a library or OS error that
  :func:`segexport.error_map.as_segexport_error` knows (a corrupt file, a missing path, ...);
  one line on stderr naming the problem and the fix. Typer's usage box stays for malformed
  arguments (also exit 2).
- 1: a check ran and failed (:class:`CheckFailed`).
- 130 / 143: interrupted by SIGINT (Ctrl-C) / SIGTERM; one line saying what was kept and how
  to resume (a command may say it with :func:`set_interrupt_hint`). Temporary files are
  removed on the way out by the context managers that made them.
- 70 (EX_SOFTWARE): an internal error, i.e. any other exception: one line naming it and a
  file holding the traceback. With ``SEGEXPORT_DEBUG=1`` the exception propagates instead
  (Python prints the traceback and exits 1).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from segexport import interrupts
from segexport.error_map import as_segexport_error
from segexport.interrupts import Interrupted
from segexport.locks import command_locks

EX_SOFTWARE = 70
DEFAULT_INTERRUPT_HINT = "no half-written file was left behind; run the same command again"

app = typer.Typer(
    name="segexport",
    help="Take segmentation networks from PyTorch to verified deployment artifacts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

err = Console(stderr=True, highlight=False, soft_wrap=True)
_interrupt_hint = DEFAULT_INTERRUPT_HINT


def set_interrupt_hint(text: str) -> None:
    """What the line printed on Ctrl-C or SIGTERM says after ``interrupted:`` (what was kept,
    how to resume), e.g. ``"finished stages are kept in builds/x; run the same command again"``."""
    global _interrupt_hint
    _interrupt_hint = text


@contextmanager
def _signals_raise_interrupted() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in this process while the block runs.

    Forked children (data loader workers) keep Python's usual behaviour, so they stop quietly.
    """
    main_pid = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main_pid:
            raise KeyboardInterrupt
        interrupts.note(signum)  # kept in case the exception lands in a finalizer and is ignored
        raise Interrupted(signum)

    def unraisable(info: Any) -> None:
        if not isinstance(info.exc_value, Interrupted):  # ours is pending and raised at the next check
            previous_hook(info)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_line(text: str) -> None:
    err.print(" ".join(text.split()), markup=False, highlight=False)  # one line, whatever the message holds


def _internal_error(exc: Exception) -> int:
    """Report an exception that is not bad input: one line, the traceback in a file."""
    with tempfile.NamedTemporaryFile("w", prefix="segexport-traceback-", suffix=".txt", delete=False) as f:
        traceback.print_exception(exc, file=f)
    _print_line(f"internal error: {type(exc).__name__}: {str(exc)[:300]}; the traceback is in {f.name} "
                "(please report it)")
    return EX_SOFTWARE


def _run_app() -> int:
    """Run the app; the exit code of what it raised (SystemExit from Typer passes through)."""
    interrupts.clear()
    try:
        _register_commands()
        with command_locks(" ".join(["segexport", *sys.argv[1:3]])):
            try:
                app()
            except SystemExit as done:
                if done.code in (0, None):
                    interrupts.raise_if_pending()
                raise
            interrupts.raise_if_pending()
    except Interrupted as exc:
        _print_line(f"interrupted: {_interrupt_hint}")
        return 128 + exc.signum
    except KeyboardInterrupt:  # raised by hand somewhere, not by the signal handler
        _print_line(f"interrupted: {_interrupt_hint}")
        return 130
    except Exception as exc:
        mapped = as_segexport_error(exc)
        if mapped is None:
            if os.environ.get("SEGEXPORT_DEBUG") == "1":
                raise
            return _internal_error(exc)
        err.print(f"[bold red]error:[/] {escape(' '.join(str(mapped).split()))}", markup=True, highlight=False)
        return mapped.exit_code
    return 0


def _register_commands() -> None:
    if app.registered_commands:  # once per process (tests run the app in-process many times)
        return
    from segexport.cli import (
        check_cmd,
        evaluate_cmd,
        export_cmd,
        list_cmd,
        quantize_cmd,
        train_cmd,
    )

    for module in (list_cmd, train_cmd, evaluate_cmd, export_cmd, quantize_cmd, check_cmd):
        module.register(app)
    from segexport.cli import engine_cmd, predict_cmd, triton_cmd

    for module in (engine_cmd, triton_cmd, predict_cmd):
        module.register(app)
    from segexport.cli import build_cmd

    build_cmd.register(app)
    from segexport.cli import bench_cmd, verify_cmd

    verify_cmd.register(app)
    bench_cmd.register(app)


def main() -> None:
    """Console-script entry point."""
    with _signals_raise_interrupted():
        code = _run_app()
    for sig in (signal.SIGINT, signal.SIGTERM):  # the work is done and said: a late signal changes nothing
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)
