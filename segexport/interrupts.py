"""SIGINT/SIGTERM as an exception that cannot be lost.

The CLI's signal handler raises :class:`Interrupted` wherever Python happens to be. When that is
a finalizer (``__del__``, e.g. a ``ZipFile`` being collected), Python prints "Exception ignored"
and carries on: the build would finish and exit 0 after the user asked it to stop. So the
handler also records the signal here, and the places a long command passes often (every build
stage's start and end, the command's return) call :func:`raise_if_pending`, as does every atomic
write just before its rename (``fsutil``), so that a stop keeps the previous artifact.
"""

from __future__ import annotations

import signal


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` swallows it; a type of its own so that Typer does not turn it into a
    silent exit 130 before ``main`` can say what was kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_pending: int | None = None


def note(signum: int) -> None:
    """Record that ``signum`` arrived (the handler calls this before raising)."""
    global _pending
    _pending = signum


def clear() -> None:
    global _pending
    _pending = None


def pending() -> int | None:
    """The signal that arrived and has not been acted on, or None."""
    return _pending


def raise_if_pending() -> None:
    """Raise :class:`Interrupted` when a signal arrived whose exception was swallowed."""
    if _pending is not None:
        raise Interrupted(_pending)
