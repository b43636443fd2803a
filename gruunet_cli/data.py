"""Training data from CTC folders: annotated frames (GT, optionally silver truth), normalised, split.

Only frames with a reference are used. Each becomes a `Frame` of a normalised image and its
instance labels, both (H, W) for a 2D model or (Z, H, W) for a 3D one. 3D reference slices
(``man_seg_T_Z``) and full 3D references used with a 2D model become 2D frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from . import ctc, normalize
from .config import NormConfig
from .errors import UserError


@dataclass
class Frame:
    """A normalised image (*S) float32 with instance labels (*S) int32 and their bounding boxes."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    boxes: list[tuple[slice, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.boxes:
            self.boxes = [b for b in ndi.find_objects(self.labels) if b is not None]


def _frames_from(images: dict[int, ctc.FrameFile], gt_files: list[ctc.GTFile], dims: int, norm: NormConfig,
                 tag: str) -> list[Frame]:
    out: list[Frame] = []
    for g in gt_files:
        if g.frame not in images:
            raise UserError(f"reference {g.path.name} has no input frame t{g.frame:03d}.tif", g.path.parent)
        raw = ctc.read_tiff(images[g.frame].path)
        labels = ctc.read_labels(g.path).astype(np.int32)
        if g.slice is not None:
            if raw.ndim != 3 or g.slice >= raw.shape[0]:
                raise UserError(f"{g.path.name} names slice {g.slice} of an image of shape {raw.shape}", images[g.frame].path)
            if dims == 3:
                raise UserError("single-slice references need a 2D model (--dims 2)", g.path)
            raw = raw[g.slice]
        if raw.shape != labels.shape:
            raise UserError(f"shape {labels.shape} differs from its image {raw.shape}", g.path)
        image = normalize.normalize(raw, norm)
        name = f"{tag}:{g.path.name}"
        if image.ndim == 3 and dims == 2:  # a 2D model learns from the annotated slices
            out += [Frame(f"{name}[z={z}]", image[z], labels[z]) for z in range(image.shape[0]) if labels[z].any()]
        else:
            out.append(Frame(name, image, labels))
    return out


def load_frames(image_dir: Path, gt_dir: Path, dims: int, norm: NormConfig, st_dir: Path | None = None) -> list[Frame]:
    """Annotated frames of one sequence: GT first; silver truth adds frames GT does not cover."""
    images = {f.frame: f for f in ctc.list_images(Path(image_dir))}
    seg_dir, _ = ctc.resolve_gt_dir(Path(gt_dir))
    gt_files = ctc.list_gt(seg_dir)
    frames = _frames_from(images, gt_files, dims, norm, "GT")
    if st_dir is not None:
        st_seg, _ = ctc.resolve_gt_dir(Path(st_dir))
        covered = {g.frame for g in gt_files}
        frames += _frames_from(images, [g for g in ctc.list_gt(st_seg) if g.frame not in covered], dims, norm, "ST")
    return frames


def split(frames: list[Frame], val_fraction: float = 0.25) -> tuple[list[Frame], list[Frame]]:
    """Hold out every ``1/val_fraction``-th frame for validation (at least one frame each side).

    A single frame is split in space instead: its last ``val_fraction`` of rows validates.
    """
    if len(frames) >= 2:
        step = max(2, round(1 / val_fraction))
        val_idx = set(range(step - 1, len(frames), step)) or {len(frames) - 1}
        return [f for i, f in enumerate(frames) if i not in val_idx], [f for i, f in enumerate(frames) if i in val_idx]
    (f,) = frames
    cut = int(round(f.image.shape[-2] * (1 - val_fraction)))
    top = (..., slice(0, cut), slice(None))
    bottom = (..., slice(cut, None), slice(None))
    return ([Frame(f.name + "[train rows]", f.image[top], f.labels[top])],
            [Frame(f.name + "[val rows]", f.image[bottom], f.labels[bottom])])


def auto_crop(frames: list[Frame], multiple: int = 16, lo: int = 64, hi: int = 256) -> int:
    """About the size of the largest object (its longest in-plane bounding-box side), rounded up to
    ``multiple`` and kept within [lo, hi] so the network's coarsest scale still has a few pixels."""
    side = max((max(s.stop - s.start for s in b[-2:]) for f in frames for b in f.boxes), default=lo)
    return int(min(hi, max(lo, -(-side // multiple) * multiple)))
