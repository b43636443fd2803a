"""PNG pictures a person would rather look at: overlays of mask contours and probability maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

from .atomic import atomic_path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale [0, 1] floats to uint8 (clipped)."""
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def label_colours(labels: np.ndarray) -> np.ndarray:
    """A distinct, deterministic RGB colour per label value: (*S, 3) uint8."""
    golden = (labels.astype(np.float64) * 0.618033988749895) % 1.0
    from skimage.color import hsv2rgb

    hsv = np.stack([golden, np.full_like(golden, 0.9), np.full_like(golden, 1.0)], axis=-1)
    return to_uint8(hsv2rgb(hsv))


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Grey image (H, W) in [0, 1] with each label's contour drawn in its colour: (H, W, 3) uint8."""
    grey = to_uint8(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    edge = find_boundaries(labels, mode="inner")
    rgb[edge] = label_colours(labels)[edge]
    return rgb


def save_png(path: Path | str, picture: np.ndarray) -> None:
    """Write (H, W) or (H, W, 3) uint8 as PNG, atomically."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, picture, extension=".png")
