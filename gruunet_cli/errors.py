"""User-facing errors: one line, naming the file and the problem; the CLI exits with code 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer


class UserError(Exception):
    """A problem with the user's input (files, options), reported without a traceback."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


F = TypeVar("F", bound=Callable[..., object])


def user_errors(fn: F) -> F:
    """Turn a ``UserError`` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
