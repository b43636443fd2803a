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


# Overlays of small images are enlarged (nearest neighbour) to at least this many pixels a side,
# so that contours of small cells can be seen.
MIN_OVERLAY_SIDE = 768


def overlay(image: np.ndarray, labels: np.ndarray, min_side: int = MIN_OVERLAY_SIDE) -> np.ndarray:
    """Grey image (H, W) in [0, 1] with each label's contour drawn in its colour: (k·H, k·W, 3)
    uint8, enlarged by the whole factor k that brings the shorter side to ``min_side`` (k ≥ 1)."""
    k = max(1, -(-min_side // max(1, min(image.shape))))
    if k > 1:
        image = np.kron(image, np.ones((k, k), image.dtype))
        labels = np.kron(labels, np.ones((k, k), labels.dtype))
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
