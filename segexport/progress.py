"""One progress-bar style for long work (training, data loading, calibration, evaluation).

Bars go to stderr, so ``--json`` output on stdout stays clean, and only to a terminal: logs and
CI output get no redraw noise.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def progress_bar(enabled: bool = True) -> Progress:
    """A rich ``Progress`` with a free-text ``info`` field; disabled off-terminal or on request.

    Tasks must be added with ``info=...`` (``bar.add_task("train", total=n, info="")``).
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not (enabled and console.is_terminal),
    )
