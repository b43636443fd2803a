"""Before training: the frames of every source, split into training and validation, and what
the model file records about them (crop size, cell size, what partial GT leaves out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..inference.runtime import release_freed_memory
from . import data
from .options import TrainConfig, TrainData


@dataclass
class Prepared:
    """The frames a run trains and validates on, and what the model file says about them."""

    train: list[list[data.FrameRef]]  # per source, loaded lazily by the workers
    val: list[data.FrameRef]  # loaded one at a time at each validation, so memory does not grow with them
    crop: int
    object_diameter: float | None
    ignored: dict[str, int]  # unannotated cells (partial GT), specks (--ignore-spots), pixels left out of the loss
    native_diameter: float | None = None  # median cell diameter in the frames' own pixels (before --scale-to)


def prepare(cfg: TrainConfig, src: TrainData) -> Prepared:
    """Scan every source, split each into training and validation frames (or use ``src.val``),
    load the validation frames, measure crop size and cell size, count what partial GT ignores."""
    dims = cfg.model.dims
    scanned = [data.scan(s, dims, cfg.scale_to, cfg.ignore_unannotated, cfg.ignore_spots) for s in src.sources]
    if src.val:
        train = [sf.refs for sf in scanned]
        val_refs = [r for s in src.val for r in data.scan(s, dims, cfg.scale_to, cfg.ignore_unannotated, cfg.ignore_spots).refs]
    else:
        parts = [data.split(sf.refs, cfg.val_fraction) for sf in scanned]
        train, val_refs = [p[0] for p in parts], [r for p in parts for r in p[1]]
    kept = {r for refs in train for r in refs}
    # A single frame split in space trains on its rows: its measurements are the whole frame's.
    kept_files = {(r.image, r.labels, r.z) for r in kept}
    pairs = [(r, st) for sf in scanned for r, st in zip(sf.refs, sf.stats) if (r.image, r.labels, r.z) in kept_files]
    stats = [st for _, st in pairs]
    diameters = np.concatenate([st.diameters for st in stats] or [np.zeros(0)])
    native = np.concatenate([st.diameters / r.factor for r, st in pairs] or [np.zeros(0)])
    ignored = {"cells": 0, "pixels": 0, "frames": 0} | ({"spots": 0} if cfg.ignore_spots else {})
    for ref in (r for r in kept if r.markers is not None or r.ignore_spots):
        frame = ref.load(cfg.norm)
        if frame.ignore is not None:
            ignored["cells"] += frame.ignored_cells
            if cfg.ignore_spots:
                ignored["spots"] += frame.ignored_spots
            ignored["pixels"] += int(frame.ignore.sum())
            ignored["frames"] += 1
    release_freed_memory()  # before the augmentation workers fork: they would inherit the scan's heap
    return Prepared(train, val_refs, cfg.crop or data.auto_crop(stats),
                    float(np.median(diameters)) if diameters.size else None, ignored,
                    float(np.median(native)) if native.size else None)
