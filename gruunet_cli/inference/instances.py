"""Instance labels ↔ foreground: the training target that keeps touching cells apart, and the
post-processing that turns a foreground probability back into one label per cell.

Label images: (H, W) or (Z, H, W) integers, 0 = background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import expand_labels, relabel_sequential, watershed

from ..config import PostConfig


def _window(ndim: int, radius: int, in_plane: bool) -> list[int]:
    size = [2 * radius + 1] * ndim
    if in_plane and ndim == 3:
        size[0] = 1
    return size


def _label_range(labels: np.ndarray, size: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: (its label, the largest label, the smallest non-zero label) within the window;
    the smallest is ``labels.max() + 1`` where the window holds background only."""
    lab = labels.astype(np.int32, copy=False)  # int32: half the memory of int64 on huge images
    big = int(lab.max(initial=0)) + 1  # stands for background in the minimum
    hi = ndi.maximum_filter(lab, size=size, mode="nearest")
    lo = ndi.minimum_filter(np.where(lab == 0, big, lab), size=size, mode="nearest")
    return lab, hi, np.where(lo == big, 0, lo)


def touching(labels: np.ndarray, in_plane: bool = False) -> np.ndarray:
    """Object pixels that have a neighbour (8/26-connected) belonging to another object.

    ``in_plane`` restricts the neighbourhood to the last two axes (anisotropic stacks).
    """
    lab, hi, lo = _label_range(labels, _window(labels.ndim, 1, in_plane))
    return (lab > 0) & ((hi != lab) | (lo != lab))


def separated_foreground(labels: np.ndarray, in_plane: bool = False) -> np.ndarray:
    """Foreground target in which touching objects are at least one background pixel apart
    (each loses its contact pixels), so connected components recover them.

    >>> separated_foreground(np.array([[1, 1, 2, 2, 0, 3]])).astype(int).tolist()
    [[1, 0, 0, 1, 0, 1]]
    """
    return (labels > 0) & ~touching(labels, in_plane)


def between_labels(labels: np.ndarray, radius: int, in_plane: bool = False) -> np.ndarray:
    """Background pixels with two different labels within ``radius`` (the separating ring).

    >>> between_labels(np.array([[1, 0, 0, 2, 0, 0]]), 1).astype(int).tolist()
    [[0, 0, 0, 0, 0, 0]]
    >>> between_labels(np.array([[1, 0, 0, 2, 0, 0]]), 2).astype(int).tolist()
    [[0, 1, 1, 0, 0, 0]]
    """
    lab, hi, lo = _label_range(labels, _window(labels.ndim, radius, in_plane))
    return (lab == 0) & (lo > 0) & (hi != lo)


def _footprint(ndim: int, in_plane: bool) -> np.ndarray:
    fp = ndi.generate_binary_structure(ndim, 1)
    if in_plane and ndim == 3:
        fp[0] = fp[2] = False
    return fp


def _connectivity(ndim: int, in_plane: bool) -> np.ndarray:
    """Full connectivity: the training target keeps different objects apart even diagonally,
    so it only keeps thin parts of one object together. Slice-wise predictions link through
    the voxel straight above/below only."""
    full = ndi.generate_binary_structure(ndim, ndim)
    if in_plane and ndim == 3:
        full[0] = full[2] = False
        full[0, 1, 1] = full[2, 1, 1] = True
    return full


def _split_one(own: np.ndarray, h: float, sigma: float, in_plane: bool, conn: np.ndarray) -> np.ndarray:
    """One blob (a padded box around it): labels 1..k of its parts, 0 outside it."""
    if in_plane and own.ndim == 3:  # distances within each slice
        dist = np.stack([ndi.distance_transform_edt(s) for s in own]).astype(np.float32)
        smooth = ndi.gaussian_filter(dist, (0, sigma, sigma))
    else:
        dist = ndi.distance_transform_edt(own).astype(np.float32)
        smooth = ndi.gaussian_filter(dist, sigma)
    markers = ndi.label(h_maxima(smooth, h, footprint=conn) & own, structure=conn, output=np.int32)[0]
    if markers.max() <= 1:
        return own.astype(np.int32)
    parts = watershed(-dist, markers, mask=own, connectivity=conn).astype(np.int32)
    rest, k = ndi.label(own & (parts == 0), structure=conn, output=np.int32)  # pieces without a peak
    return np.where(rest > 0, rest + parts.max(), parts) if k else parts


def split_joined(mask: np.ndarray, h: float, sigma: float, in_plane: bool = False, min_area: int = 0) -> np.ndarray:
    """Labels (int32) of a foreground mask in which blobs with several distance peaks are cut
    along the watershed of the distance to the background.

    Markers are the h-maxima of the Gaussian-smoothed distance map: two peaks become two
    objects only when each stands ``h`` pixels above the neck between them, so a round cell
    stays whole and two touching ones part. Blobs under ``min_area`` pixels are not cut. Each
    blob is handled in its own bounding box, so memory stays that of the largest blob.

    >>> m = np.zeros((9, 20), bool); m[1:8, 1:8] = m[1:8, 12:19] = True; m[4, 8:12] = True
    >>> np.unique(split_joined(m, 0.5, 1.0)[4]).tolist()  # two squares joined by a 1-px bridge
    [0, 1, 2]
    """
    conn = _connectivity(mask.ndim, in_plane)
    blobs, _ = ndi.label(mask, structure=conn, output=np.int32)
    out = np.zeros(mask.shape, np.int32)
    pad = int(np.ceil(3 * sigma)) + 1  # room for the smoothing around the blob
    sizes = np.bincount(blobs.ravel())
    n = 0
    for i, box in enumerate(ndi.find_objects(blobs), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, d)) for s, d in zip(box, mask.shape))
        own = blobs[box] == i
        parts = own.astype(np.int32) if sizes[i] < max(min_area, 2) else _split_one(own, h, sigma, in_plane, conn)
        out[box][own] = parts[own] + n
        n += int(parts.max())
    return out


def probability_to_labels(p_fg: np.ndarray, post: PostConfig, in_plane: bool = False) -> np.ndarray:
    """Foreground probability (H, W) / (Z, H, W) float → labels 1..n (uint16 when n < 65536, else uint32).

    Threshold; connected components (full connectivity), or with ``post.split`` objects cut
    apart where the distance map has several peaks (`split_joined`); drop objects under
    ``post.min_size``; then grow every label by up to ``post.grow`` pixels into background where
    ``p_fg > post.grow_threshold`` or where two labels are within 2 pixels (giving back
    the ring that separated touching cells in the training target). Growth assigns each pixel
    to one label only, so labels never merge.
    """
    fp = _footprint(p_fg.ndim, in_plane)
    mask = p_fg > post.threshold
    if post.split:
        # A blob under twice the minimum size cannot give two parts that both survive it.
        labels = split_joined(mask, post.split_h, post.split_sigma, in_plane, min_area=2 * post.min_size)
    else:
        labels = ndi.label(mask, structure=_connectivity(p_fg.ndim, in_plane), output=np.int32)[0]
    n = int(labels.max(initial=0))
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= post.min_size
        keep[0] = False
        lut = np.zeros(sizes.size, np.int32)
        lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels = lut[labels]
        n = int(keep.sum())
    if n and post.grow > 0:
        # The target removed one pixel per side between touching objects: a 2-pixel ring.
        room = (p_fg > post.grow_threshold) | between_labels(labels, 2, in_plane)
        for _ in range(post.grow):
            grown = ndi.grey_dilation(labels, footprint=fp)
            labels = np.where((labels == 0) & room, grown, labels)
    return labels.astype(np.uint16 if n < 65536 else np.uint32)


def fill_holes(labels: np.ndarray, in_plane: bool = False) -> np.ndarray:
    """Labels (*S) with the background each object encloses (in each slice with ``in_plane``)
    given to that object; other objects inside it stay as they are. Same dtype.

    >>> ring = np.ones((5, 5), np.uint16); ring[2, 2] = 0; ring[0] = 0
    >>> int(fill_holes(ring)[2, 2]), int(fill_holes(ring)[0, 0])
    (1, 0)
    """
    out = labels.copy()
    structure = None
    if in_plane and labels.ndim == 3:  # enclosed within the slice, not by slices above and below
        structure = np.zeros((3, 3, 3), bool)
        structure[1] = ndi.generate_binary_structure(2, 1)
    for i, box in enumerate(ndi.find_objects(labels), 1):
        if box is None:
            continue
        own = labels[box] == i
        hole = ndi.binary_fill_holes(own, structure) & (labels[box] == 0)
        out[box][hole] = i  # a hole lies inside its object's bounding box
    return out


def filled(labels: np.ndarray, post: PostConfig, in_plane: bool = False) -> np.ndarray:
    """``labels`` with holes filled when ``post.fill_holes`` says so (what `segment` writes)."""
    return fill_holes(labels, in_plane) if post.fill_holes else labels


def outline(labels: np.ndarray, p_fg: np.ndarray, level: float, reach: int, in_plane: bool = False,
            peak: bool = False, fill: bool = True) -> np.ndarray:
    """Labels (*S) re-drawn along the ``level`` contour of a foreground probability on the same grid
    (*S): every object keeps the pixels within ``reach`` px of it (nearest object first) where
    ``p_fg > level``, and loses the others. With ``peak`` the level is a fraction of each object's
    own highest probability (over its pixels in ``labels``), so that a dim object whose
    probability never nears 1 is outlined at the same fraction of its height as a bright one.
    Objects come from ``post.threshold`` at the network's scale; this moves only their outlines,
    on the image's own grid. With ``fill`` the holes this leaves are filled (`fill_holes`).
    Renumbered 1..n (an object may vanish), same dtype.

    >>> lab = np.zeros((1, 7), np.uint16); lab[0, 2:5] = 1
    >>> outline(lab, np.array([[0.1, 0.6, 0.9, 0.9, 0.55, 0.3, 0.9]]), 0.5, 1)
    array([[0, 1, 1, 1, 1, 0, 0]], dtype=uint16)
    >>> outline(lab, np.array([[0.1, 0.3, 0.6, 0.6, 0.35, 0.2, 0.9]]), 0.5, 1, peak=True)  # level 0.3
    array([[0, 0, 1, 1, 1, 0, 0]], dtype=uint16)
    """
    if in_plane and labels.ndim == 3:  # a 2D model's stack: grow within each slice
        grown = np.stack([expand_labels(s, reach) for s in labels])
    else:
        grown = expand_labels(labels, reach)
    cut: float | np.ndarray = level
    if peak:
        n = int(labels.max(initial=0))
        heights = np.ones(n + 1, np.float32)  # background's entry is never used
        if n:
            heights[1:] = ndi.maximum(p_fg, labels, index=np.arange(1, n + 1))
        cut = level * heights[grown]
    out = relabel_sequential(np.where(p_fg > cut, grown, 0).astype(labels.dtype))[0]
    return fill_holes(out, in_plane) if fill else out
