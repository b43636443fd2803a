"""Progress of long-running commands, on stderr: a rich bar on a terminal, plain lines in a log.

`Progress` starts drawing at its first update, so an error found while a command prepares is
still the only line it prints. When stderr is not a terminal (``nohup ... > log``), a line with
the count, rate, ETA and the extra fields is printed every ``every_s`` seconds and at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """``with Progress("training", total, loss="loss {:.4f}") as p: p.update(completed=i, loss=x)``.

    Args:
        description: what is being done.
        total: number of steps.
        fields: name → format string of extra values shown after the count.
        transient: on a terminal, remove the bar when done.
        disable: show nothing (e.g. on non-zero torchrun ranks).
        every_s: seconds between lines when stderr is not a terminal.
    """

    def __init__(self, description: str, total: int, transient: bool = False, disable: bool = False,
                 every_s: float = 30.0, **fields: str) -> None:
        self.description, self.total, self.fields = description, total, fields
        self.transient, self.disable, self.every_s = transient, disable, every_s
        self.console = Console(stderr=True)
        self.terminal = self.console.is_terminal
        self.completed = 0
        self.values: dict[str, Any] = {}
        self._bar: RichProgress | None = None
        self._printed = -1  # the count of the last plain line
        self._first: int | None = None  # the count before the first update
        self._task = None
        self._start, self._last_line = 0.0, -float("inf")  # the first update prints a line

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif not self.terminal and not self.disable and self.completed != self._printed and exc[0] is None:
            self._line()

    def _text(self) -> str:
        return "  ".join(fmt.format(self.values[k]) for k, fmt in self.fields.items() if k in self.values)

    def _line(self) -> None:
        elapsed = time.perf_counter() - self._start
        done = self.completed - (self._first or 0)  # a resumed run starts past 0
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (self.total - self.completed) / rate if rate > 0 else float("nan")
        pct = 100 * self.completed / self.total if self.total else 100.0
        eta_s = _clock(eta) if eta == eta else "?"
        print(f"{self.description} {self.completed}/{self.total} ({pct:.0f}%) {rate:.3g}/s elapsed {_clock(elapsed)} "
              f"ETA {eta_s}  {self._text()}".rstrip(), file=sys.stderr, flush=True)
        self._last_line = time.perf_counter()
        self._printed = self.completed

    def log(self, text: str) -> None:
        """A line above the bar (or in the log)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def update(self, completed: int | None = None, advance: int = 0, **values: Any) -> None:
        """Set the count (or advance it) and any extra field values."""
        if self._first is None:  # the count before this run's first step (a resumed run starts past 0)
            self._first = completed - 1 if completed is not None else self.completed
        self.completed = completed if completed is not None else self.completed + advance
        self.values.update(values)
        if self.disable:
            return
        if not self.terminal:
            if time.perf_counter() - self._last_line >= self.every_s or self.completed == self.total:
                self._line()
            return
        if self._bar is None:
            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[text]}"),
                                     console=self.console, transient=self.transient)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, text="")
        self._bar.update(self._task, completed=self.completed, text=self._text())
