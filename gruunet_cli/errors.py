"""User-facing errors: one line, naming the file and the problem; the CLI exits with code 2."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (files, options), reported without a traceback."""

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)
