"""Cell Tracking Challenge folder layout: find frames, read them lazily, write masks atomically.

Layout (see the CTC's naming conventions):
- input ``01/tNNN.tif`` (3 or 4 digits, 2D ``(H, W)`` or 3D ``(Z, H, W)``),
- gold truth ``01_GT/SEG/man_segNNN.tif`` or single 3D slices ``man_seg_NNN_ZZZ.tif``,
  markers ``01_GT/TRA/man_trackNNN.tif``, silver truth ``01_ST/SEG/man_segNNN.tif``,
- results ``01_RES/maskNNN.tif``: ``uint16``, 0 = background, same shape and digit count as the input.

Frame and slice numbers are parsed with regular expressions, never by string offsets or by
position in a sorted list.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ..errors import UserError
from .atomic import atomic_path
from .images import read_labels  # noqa: F401  (label images of sequences are read like any other)

IMAGE_RE = re.compile(r"^t(\d{3,4})\.tiff?$")
SEG_RE = re.compile(r"^man_seg(\d{3,4})\.tiff?$")
SEG_SLICE_RE = re.compile(r"^man_seg_(\d{3,4})_(\d{3,4})\.tiff?$")
TRA_RE = re.compile(r"^man_track(\d{3,4})\.tiff?$")
MASK_RE = re.compile(r"^mask(\d{3,4})\.tiff?$")


@dataclass(frozen=True)
class FrameFile:
    """One TIFF of a sequence: ``frame`` is the time index, ``digits`` its zero-padded width."""

    path: Path
    frame: int
    digits: int


@dataclass(frozen=True)
class GTFile:
    """One reference file. ``slice`` is set for 3D single-slice GT (``man_seg_T_Z.tif``)."""

    path: Path
    frame: int
    slice: int | None = None


def _require_dir(folder: Path) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise UserError("folder does not exist", folder)
    if not folder.is_dir():
        raise UserError("not a folder", folder)
    return folder


def _scan(folder: Path, pattern: re.Pattern[str]) -> list[FrameFile]:
    found: dict[int, FrameFile] = {}
    for entry in os.scandir(folder):
        m = pattern.match(entry.name)
        if m is None:
            continue
        frame = int(m.group(1))
        if frame in found:
            raise UserError(f"frame {frame} appears twice ({found[frame].path.name}, {entry.name})", folder)
        found[frame] = FrameFile(Path(entry.path), frame, len(m.group(1)))
    return [found[k] for k in sorted(found)]


def list_images(folder: Path) -> list[FrameFile]:
    """Input frames ``tNNN.tif`` of a sequence folder, sorted by frame number."""
    folder = _require_dir(folder)
    frames = _scan(folder, IMAGE_RE)
    if not frames:
        raise UserError("no input frames named tNNN.tif", folder)
    return frames


def list_masks(folder: Path) -> dict[int, FrameFile]:
    """Result masks ``maskNNN.tif`` keyed by frame number (may be empty)."""
    return {f.frame: f for f in _scan(_require_dir(folder), MASK_RE)}


def list_markers(folder: Path) -> dict[int, FrameFile]:
    """Tracking markers ``man_trackNNN.tif`` keyed by frame number (may be empty)."""
    return {f.frame: f for f in _scan(_require_dir(folder), TRA_RE)}


def list_gt(seg_dir: Path) -> list[GTFile]:
    """Reference segmentations in a ``SEG`` folder: full frames and 3D single slices.

    Sorted by (frame, slice); a full-frame file sorts before slices of the same frame.
    """
    seg_dir = _require_dir(seg_dir)
    files: list[GTFile] = []
    for entry in os.scandir(seg_dir):
        if m := SEG_RE.match(entry.name):
            files.append(GTFile(Path(entry.path), int(m.group(1))))
        elif m := SEG_SLICE_RE.match(entry.name):
            files.append(GTFile(Path(entry.path), int(m.group(1)), int(m.group(2))))
    files.sort(key=lambda g: (g.frame, -1 if g.slice is None else g.slice))
    return files


def resolve_gt_dir(gt_dir: Path) -> tuple[Path, Path | None]:
    """``01_GT`` or ``01_GT/SEG`` (or an ``_ST`` folder) → (SEG folder, TRA folder or None)."""
    gt_dir = _require_dir(gt_dir)
    seg = gt_dir / "SEG" if (gt_dir / "SEG").is_dir() else gt_dir
    tra = seg.parent / "TRA"
    if not list_gt(seg):
        raise UserError("no reference files named man_segNNN.tif or man_seg_NNN_ZZZ.tif", seg)
    return seg, (tra if tra.is_dir() else None)


def read_tiff(path: Path) -> np.ndarray:
    """Any TIFF as an array; an unreadable file is a one-line ``UserError``."""
    try:
        return tifffile.imread(path)
    except FileNotFoundError:
        raise UserError("file does not exist", path) from None
    except Exception as exc:  # tifffile raises many kinds for broken files
        raise UserError(f"cannot read TIFF ({type(exc).__name__}: {exc})".splitlines()[0], path) from None


def mask_path(res_dir: Path, frame: int, digits: int) -> Path:
    """``res_dir/maskNNN.tif`` with the input's digit count."""
    return Path(res_dir) / f"mask{frame:0{digits}d}.tif"


def write_tiff_atomic(path: Path, array: np.ndarray, compression: str | None = "zlib") -> None:
    """Write a TIFF to a temporary file in the same folder, then rename: never half-written."""
    with atomic_path(path) as tmp:
        # minisblack: a stack of 3 or 4 slices must not be stored as an RGB(A) picture
        tifffile.imwrite(tmp, array, compression=compression, photometric="minisblack")


def write_mask(path: Path, labels: np.ndarray) -> None:
    """Write a CTC result mask: ``uint16``, 0 = background, labels must fit in 1..65535."""
    if labels.size and int(labels.max()) > np.iinfo(np.uint16).max:
        raise UserError(f"{int(labels.max())} labels do not fit in uint16", path)
    write_tiff_atomic(path, labels.astype(np.uint16, copy=False))
