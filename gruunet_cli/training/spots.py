"""Unlabelled bright specks: unknown, not background.

Annotators of generalist nuclei sets disagree about point-like bright specks (micronuclei,
debris): in DSB2018's fluorescence images of small nuclei about one speck in five carries a
label (a small disc), the rest are left as background, and some test sets label every one.
Calling the unlabelled ones background teaches the network to miss the labelled kind; with
``--ignore-spots`` the loss does not look at them, as it does not look at partial CTC GT's
unannotated cells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max

# A speck: its 3x3 mean rises this many robust noise units above the 11x11 median around it.
SPOT_SIGMAS = 6.0
SPOT_RADIUS = 4.0  # px ignored around a speck's peak (labelled specks are discs of ~2.6 px radius)
CLEARANCE = 3.0  # px: peaks this close to a labelled object belong to its edge, not to a speck


def unlabelled_spots(image: np.ndarray, labels: np.ndarray, sigmas: float = SPOT_SIGMAS) -> np.ndarray | None:
    """Pixels around bright specks that no label covers.

    Args:
        image: (H, W) or (Z, H, W) raw or normalised grey image (stacks are searched per plane).
        labels: instance labels of the same shape, 0 = background.
    Returns:
        bool mask of the same shape (True: unknown), or None when there is no such speck.

    >>> img = np.zeros((32, 32)); img[8, 8] = img[24, 24] = 50.0
    >>> lab = np.zeros((32, 32), int); lab[22:27, 22:27] = 1
    >>> m = unlabelled_spots(img + np.random.default_rng(0).normal(0, 1, img.shape), lab)
    >>> bool(m[8, 8]), bool(m[24, 24]), int(m.sum())
    (True, False, 49)
    """
    if image.ndim == 3:
        planes = [unlabelled_spots(i, l, sigmas) for i, l in zip(image, labels)]
        if all(p is None for p in planes):
            return None
        return np.stack([np.zeros(labels.shape[1:], bool) if p is None else p for p in planes])
    img = image.astype(np.float32, copy=False)
    response = ndi.uniform_filter(img, 3) - ndi.median_filter(img, 11)
    noise = 1.4826 * float(np.median(np.abs(response - np.median(response))))
    if noise <= 0:
        noise = float(response.std()) or 1.0
    far = ndi.distance_transform_edt(labels == 0) > CLEARANCE
    peaks = peak_local_max(response, min_distance=3, threshold_abs=sigmas * noise, labels=far.astype(np.uint8))
    if peaks.size == 0:
        return None
    seeds = np.zeros(labels.shape, bool)
    seeds[tuple(peaks.T)] = True
    return (ndi.distance_transform_edt(~seeds) <= SPOT_RADIUS) & (labels == 0)
