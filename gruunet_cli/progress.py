"""One rich progress-bar style for every long-running command (drawn on stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(*extra_columns, transient: bool = False, disable: bool = False) -> Progress:
    """A progress bar with description, bar, count, elapsed and remaining time, plus ``extra_columns``."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra_columns,
        console=Console(stderr=True),
        transient=transient,
        disable=disable,
    )
