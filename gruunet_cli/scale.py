"""Object scale: segment cells imaged at another magnification than the training data.

A model learns cells of about the size it was trained on (the model file records their median
diameter). When a user's cells are much smaller or larger, the image is resized in-plane so its
cells match that size, segmented, and the labels are resized back (nearest neighbour).
Images: (H, W) or (Z, H, W); only H and W are resized.
"""

from __future__ import annotations

import numpy as np
from skimage.segmentation import relabel_sequential
from skimage.transform import resize

# With --diameter auto, factors this close to 1 are left alone: the training zoom already
# covers them, and resampling costs a second pass and a little boundary precision.
TOLERANCE = 1.25
# With --diameter auto, factors are kept within this (and its inverse): a first pass that finds
# only specks must not blow an image up tenfold.
MAX_AUTO = 4.0


def object_diameters(labels: np.ndarray) -> np.ndarray:
    """Equivalent diameter 2·sqrt(area/π) (px) of each object of a label image, in-plane: a 3D
    object counts with its largest slice. (n,) float64, in label order.

    >>> lab = np.zeros((20, 20), int); lab[0:4, 0:4] = 1; lab[10:20, 10:20] = 3
    >>> object_diameters(lab).round(3).tolist()
    [4.514, 11.284]
    """
    lab = labels if labels.ndim == 3 else labels[None]
    n = int(lab.max(initial=0))
    if not n:
        return np.zeros(0)
    a = np.stack([np.bincount(s.ravel(), minlength=n + 1) for s in lab]).max(axis=0)[1:]  # (n,)
    return 2 * np.sqrt(a[a > 0] / np.pi)


def object_diameter(label_images: list[np.ndarray]) -> float | None:
    """Median equivalent diameter (px) of the objects of some label images (see
    `object_diameters`). None when there are no objects.

    >>> lab = np.zeros((20, 20), int); lab[0:4, 0:4] = 1; lab[10:20, 10:20] = 2; lab[5:7, 12:14] = 3
    >>> round(object_diameter([lab]), 3)  # areas 16, 100, 4 → median 16
    4.514
    """
    d = np.concatenate([object_diameters(labels) for labels in label_images] or [np.zeros(0)])
    return float(np.median(d)) if d.size else None


def factor(model_diameter: float | None, diameter: float | None, auto: bool) -> float | None:
    """In-plane resize factor that brings cells of ``diameter`` to ``model_diameter``, or None
    when nothing should be resized (unknown sizes, or with ``auto`` a factor within TOLERANCE)."""
    if not model_diameter or not diameter:
        return None
    f = model_diameter / diameter
    if auto and 1 / TOLERANCE <= f <= TOLERANCE:
        return None
    return float(np.clip(f, 1 / MAX_AUTO, MAX_AUTO)) if auto else f


# With --diameter auto, a first pass that finds cells smaller than the model's also looks at the
# image shrunk by these factors: when large cells break into fragments at full size, the
# fragments look small, but shrunk the cells have about the size the model knows.
PROBE_SCALES = (0.5, 0.25)
MIN_PROBE_SIDE = 48  # px: smaller probe images say nothing


def best_probe(model_diameter: float, measured: dict[float, float | None]) -> tuple[float, float] | None:
    """Of the probes (image scale → median cell diameter measured at that scale, None when no
    cells), the one whose cells came out closest to the model's size (in log ratio), as
    (scale, diameter in the original image's pixels). None when no probe found cells.

    >>> best_probe(17.0, {1.0: 9.0, 0.5: 12.0, 0.25: 16.0})  # fragments at 1x: 64 px cells
    (0.25, 64.0)
    >>> best_probe(17.0, {1.0: 9.0, 0.5: 5.0, 0.25: None})  # small cells: 9 px
    (1.0, 9.0)
    """
    found = {s: d for s, d in measured.items() if d}
    if not found:
        return None
    s = min(found, key=lambda k: (abs(np.log(found[k] / model_diameter)), -k))
    return s, found[s] / s


def resize_plane(image: np.ndarray, f: float) -> np.ndarray:
    """(*Z, H, W) → (*Z, round(f·H), round(f·W)) float32, bilinear (area-smoothed when shrinking)."""
    shape = (*image.shape[:-2], *(max(1, int(round(s * f))) for s in image.shape[-2:]))
    return resize(image.astype(np.float32), shape, order=1, anti_aliasing=f < 1, preserve_range=True).astype(np.float32)


def labels_to_shape(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Labels resized to ``shape`` by nearest neighbour, renumbered 1..n (objects may vanish
    when shrinking), same dtype."""
    zoomed = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)
    return relabel_sequential(zoomed)[0]
