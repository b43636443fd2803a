"""What `segment` reads and writes: input images (CTC frames or any image files) and their masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import ctc, images


def check_image(path: Path, image: np.ndarray, dims: int) -> None:
    """One-line errors for images the model cannot take."""
    if image.dtype.kind not in "uif" or image.ndim not in (2, 3):
        raise UserError(f"expected a 2D or 3D grey image, got shape {image.shape} of {image.dtype}", path)
    if dims == 3 and image.ndim == 2:
        raise UserError("a 3D model needs (Z, H, W) stacks, this image is 2D", path)


@dataclass(frozen=True)
class Job:
    """One image to segment and the mask file it becomes."""

    path: Path
    target: Path

    @property
    def name(self) -> str:
        return self.path.name


def input_jobs(source: Path, out_dir: Path) -> list[Job]:
    """What to segment: a CTC sequence folder (``tNNN.tif`` → ``maskNNN.tif``, the input's digit
    count), one such file, or any other image file or folder of images (``NAME.ext`` →
    ``NAME_masks.tif``, as Cellpose names them; ``*_masks.*`` files are not inputs)."""
    source, out_dir = Path(source), Path(out_dir)
    if source.is_file():
        m = ctc.IMAGE_RE.match(source.name)
        if m is not None:
            return [Job(source, ctc.mask_path(out_dir, int(m.group(1)), len(m.group(1))))]
        if not images.is_image(source):
            raise UserError("not an image file (.tif, .tiff, .png, .jpg)", source)
        return [Job(source, out_dir / f"{source.stem}_masks.tif")]
    if source.is_dir() and any(ctc.IMAGE_RE.match(p.name) for p in source.iterdir()):
        return [Job(f.path, ctc.mask_path(out_dir, f.frame, f.digits)) for f in ctc.list_images(source)]
    if not source.is_dir():
        raise UserError("does not exist", source)
    found = sorted(p for p in source.iterdir() if images.is_image(p) and not p.stem.endswith("_masks"))
    if not found:
        raise UserError("no images here (tNNN.tif frames, or .tif/.png/.jpg files)", source)
    return [Job(p, out_dir / f"{p.stem}_masks.tif") for p in found]


def mask_is_done(target: Path, source: Path) -> bool:
    """An existing mask counts as done only when it can be read and has the input's plane size:
    a zero-byte or broken file from a crash, or another image's mask, is redone."""
    try:
        if target.stat().st_size == 0:
            return False
        have = images.image_shape(target)
        want = images.image_shape(source)
    except (OSError, UserError):
        return False
    return tuple(have[-2:]) == tuple(want[-2:]) or tuple(have[-2:]) == tuple(want[:2])  # (H, W, 3) RGB inputs
