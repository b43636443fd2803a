"""Atomic file writes: write to a temporary file in the target folder, sync it, then rename over
the target (and sync the folder).

An interrupted run, a crash or a power cut therefore never leaves a half-written or empty mask,
model or report behind. Files get the usual permissions (0666 less the umask, e.g. 0644), not the
0600 of a temporary file. OS errors (disk full, read-only folder) become one-line `UserError`s.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error(exc: OSError, path: Path | str) -> UserError:
    """An OS error while writing as a one-line user error naming the file."""
    return UserError(f"cannot write ({exc.strerror or type(exc).__name__})", path)


def writable_dir(folder: Path | str) -> Path:
    """Create ``folder`` if needed and prove that files can be written in it, before any work is
    spent: a one-line `UserError` when it is a file, lies under a file, or refuses writes."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError("exists and is not a folder", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".gruunet-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            raise UserError("cannot create this folder: a file stands in its path", folder) from None
        raise os_error(exc, folder) from None
    return folder


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success sync it and rename it to ``path``,
    else delete it.

    The temporary name keeps the target's suffix so that writers choosing a format by
    extension (TIFF, PNG) behave the same.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise os_error(exc, path) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(Path(tmp))  # data on disk before the name points at it
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise os_error(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
