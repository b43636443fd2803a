"""What `segment` writes besides the masks: per-step maps, overlays, and the scale of each image."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..config import NormConfig
from ..files import ctc, png
from ..files.atomic import write_text
from . import normalize


def write_iterations(out_dir: Path, image: np.ndarray, maps: np.ndarray) -> None:
    """The nine per-step foreground maps (Fig. 7) as ``iterations.tif`` (9, *S) and ``iteration_K.png``
    (the middle slice for 3D)."""
    ctc.write_tiff_atomic(out_dir / "iterations.tif", maps.astype(np.float32))
    mid = (lambda a: a[a.shape[0] // 2]) if image.ndim == 3 else (lambda a: a)
    for k, m in enumerate(maps, start=1):
        png.save_png(out_dir / f"iteration_{k}.png", png.to_uint8(mid(m)))


def write_overlay(path: Path, image: np.ndarray, labels: np.ndarray, norm: NormConfig) -> None:
    """Contours of ``labels`` on the normalised image (the middle slice for 3D) as PNG."""
    if image.ndim == 3:
        z = image.shape[0] // 2
        image, labels = image[z], labels[z]
    png.save_png(path, png.overlay(normalize.normalize(image, norm), labels))


SCALES_FILE = "scales.csv"


def describe_scale(name: str, info: dict) -> str:
    """One line per image: the diameter measured (or given) and the factor used."""
    d, f = info.get("diameter"), info.get("factor") or 1.0
    size = "no cells found to measure" if d is None else f"cell diameter {d:.1f} px"
    return f"{name}: {size}, " + ("segmented as it is" if f == 1.0 else f"resized {f:.2f}x")


def write_scales(path: Path, rows: list[dict[str, object]]) -> None:
    """Per image: the cell diameter measured (or given) and the resize factor used, as CSV. Rows of
    images segmented in an earlier run into the same folder are kept."""
    old: dict[str, dict[str, object]] = {}
    if path.is_file():
        try:
            old = {r["mask"]: r for r in csv.DictReader(path.read_text().splitlines())}
        except (OSError, KeyError, csv.Error):
            old = {}
    for r in rows:
        d = r["diameter"]
        old[str(r["mask"])] = {"image": r["image"], "mask": r["mask"],
                               "diameter": "" if d is None else f"{d:.2f}", "factor": f"{r['factor']:.4f}"}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["image", "mask", "diameter", "factor"])
    w.writeheader()
    w.writerows(old[k] for k in sorted(old))
    write_text(path, buf.getvalue())
