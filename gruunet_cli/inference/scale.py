"""Object scale: segment cells imaged at another magnification than the training data.

A model learns cells of about the size it was trained on (the model file records their median
diameter). When a user's cells are much smaller or larger, the image is resized in-plane so its
cells match that size, segmented, and the labels are resized back (nearest neighbour).
Images: (H, W) or (Z, H, W); only H and W are resized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops
from skimage.segmentation import relabel_sequential
from skimage.transform import resize

from ..evaluation import metrics

# With --diameter auto, factors this close to 1 are left alone: the training zoom already
# covers them, and resampling costs a second pass and a little boundary precision.
TOLERANCE = 1.25
# With --diameter auto, factors are kept within this (and its inverse): a first pass that finds
# only specks must not blow an image up tenfold.
MAX_AUTO = 4.0
# A network cuts cells well above its own size into pieces that are themselves above it, so the
# first pass can measure pieces: the image is looked at again at the chosen factor, and cells
# measured there larger by more than this are taken instead. GRUU-Net on the DSB validation images
# enlarged so their median nucleus is 60 px: SEG 0.711 → 0.758; as they are: 0.799 → 0.800.
LARGER = 1.25


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


# With --diameter auto, a first pass that finds cells smaller than the model's or about its size
# (below TOLERANCE times it) also looks at the image shrunk by these factors: when large cells
# break into fragments at full size, the fragments look small or model-sized (the network
# labels pieces of its own cell size), but shrunk enough the cells come out whole.
PROBE_SCALES = (0.5, 0.25, 0.125)
MIN_PROBE_SIDE = 48  # px: smaller probe images say nothing
# Whole cells keep their diameter (in the original image's pixels) when the image shrinks;
# fragments are sized by the network, so theirs doubles with every halving: √2 is midway.
CONSISTENT = float(np.sqrt(2.0))
# A probe's cells are whole when they match the next smaller probe's at least this well (SEG of
# the probe's labels against the smaller probe's): a split cell matches neither half.
AGREE = 0.7
# A network can cut a cell well above its size into pieces even at the probe whose cells agree
# overall (one large cell among many): an object with at least this share of its area inside one
# cell of the next smaller probe is a piece of it (`rejoined`)...
WITHIN = 0.5
# ...when that cell is convex (`solidity` at least this): two touching cells that the smaller
# probe merged have a waist. On `gruunet-nuclei`'s validation images and CHO, the candidates that
# were one cell measured 0.897-0.958; 16 of 18 that joined different cells, 0.767-0.888.
SOLID = 0.9
# With --diameter auto, an image of more than twice this side squared has its cells measured on
# a window of this side (`window`) when it holds MIN_CELLS whole cells, instead of a whole first
# pass: the median of that many cells is as good as the image's, and the image is then segmented
# once at the chosen scale rather than once to measure and again resized. Fewer (large or sparse
# cells): the whole image measures, and the window cost at most 1/2 of a pass (1/16 at 1024²).
WINDOW = 256
MIN_CELLS = 30


@dataclass(frozen=True)
class Probe:
    """Labels found on an image resized in-plane by ``scale`` (at that scale), and the foreground
    probability they came from (for `instances.outline`)."""

    scale: float
    labels: np.ndarray
    p_fg: np.ndarray | None = None

    @property
    def diameter(self) -> float | None:
        """Median cell diameter in the original image's pixels."""
        d = object_diameter([self.labels])
        return None if d is None else d / self.scale


def agreement(probe: Probe, smaller: Probe) -> float:
    """SEG of ``probe``'s labels against those of a probe at a smaller scale (brought to its size).

    >>> lab = np.zeros((8, 8), int); lab[:4] = 1; lab[4:] = 2
    >>> half = np.zeros((4, 4), int); half[:2] = 1; half[2:] = 2
    >>> agreement(Probe(1.0, lab), Probe(0.5, half))
    1.0
    >>> split = lab.copy(); split[:4, 4:] = 3  # the first cell split in two halves
    >>> agreement(Probe(1.0, split), Probe(0.5, half))
    0.5
    """
    ref = labels_to_shape(smaller.labels, probe.labels.shape)
    return metrics.seg_score(metrics.match_objects(ref, probe.labels).jaccard)


def fragmented(first: Probe, half: Probe) -> bool:
    """Whether the full-size pass broke the cells into fragments: the half-size probe finds cells
    whose diameter (in original pixels) grew by more than `CONSISTENT`.

    >>> lab = np.zeros((64, 64), int); lab[:8, :8] = 1; lab[20:28, 20:28] = 2
    >>> fragmented(Probe(1.0, lab), Probe(0.5, lab[::2, ::2]))  # the same cells
    False
    >>> fragmented(Probe(1.0, lab), Probe(0.5, lab))  # twice the size in original pixels
    True
    """
    d1, d2 = first.diameter, half.diameter
    return d2 is not None and (d1 is None or d2 / d1 > CONSISTENT)


def whole_probe(probes: Sequence[Probe], rejoin: bool = False) -> Probe:
    """Of probes at decreasing scales (all but the full size), the largest whose cells are whole
    (`agreement` with the next one ≥ `AGREE`), with ``rejoin`` the cells it still cut `rejoined`;
    else the most shrunk one that found cells."""
    for probe, smaller in zip(probes, probes[1:]):
        if probe.diameter is not None and agreement(probe, smaller) >= AGREE:
            return rejoined(probe, smaller) if rejoin else probe
    found = [p for p in probes if p.diameter is not None]
    return found[-1] if found else probes[-1]


def solidity(mask: np.ndarray) -> float:
    """A mask's one object: its area over that of its convex hull, in-plane (a stack counts with
    the slice where the object is largest).

    >>> sq = np.ones((6, 6), bool); ell = sq.copy(); ell[:3, 3:] = False  # 27 of the hull's 30 pixels
    >>> solidity(sq), round(solidity(ell), 3)
    (1.0, 0.9)
    """
    plane = mask if mask.ndim == 2 else mask[int(np.argmax(mask.sum(axis=(1, 2))))]
    return float(regionprops(plane.astype(np.uint8))[0].solidity)


def rejoined(probe: Probe, smaller: Probe) -> Probe:
    """``probe`` with every cell of the next smaller probe that it cut into pieces made whole again:
    where two or more of its objects each lie mostly (`WITHIN`) inside one convex (`SOLID`) cell
    of ``smaller`` (brought to its size), they become one object, which that cell fills out
    between them. A concave cell is more likely two that the smaller probe merged.
    Other objects are kept as they are; renumbered 1..n.

    >>> whole = np.zeros((8, 12), int); whole[1:7, 1:7] = 1; whole[2:6, 8:11] = 2
    >>> cut = whole.copy(); cut[1:7, 4:7] = 3; cut[1:7, 4] = 0  # cell 1 in two pieces, a gap between
    >>> cut[3].tolist()
    [0, 1, 1, 1, 0, 3, 3, 0, 2, 2, 2, 0]
    >>> rejoined(Probe(1.0, cut), Probe(1.0, whole)).labels[3].tolist()  # one cell again, the gap filled
    [0, 2, 2, 2, 2, 2, 2, 0, 1, 1, 1, 0]
    """
    a = probe.labels
    b = labels_to_shape(smaller.labels, a.shape)
    both = (a > 0) & (b > 0)
    nb = int(b.max(initial=0)) + 1
    pairs, counts = np.unique(a[both].astype(np.int64) * nb + b[both], return_counts=True)
    if not pairs.size:
        return probe
    pa, pb = np.divmod(pairs, nb)
    order = np.lexsort((-counts, pa))  # per object of ``probe``: its largest overlap first
    firsts = np.unique(pa[order], return_index=True)[1]
    pa, pb, counts = pa[order][firsts], pb[order][firsts], counts[order][firsts]
    inside = counts >= WITHIN * np.bincount(a.ravel())[pa]
    hosts, pieces = np.unique(pb[inside], return_counts=True)
    boxes = ndi.find_objects(b)
    cut = np.array([h for h in hosts[pieces >= 2] if solidity(b[boxes[h - 1]] == h) >= SOLID], np.int64)
    if not cut.size:
        return probe
    new = np.zeros(nb, np.int64)
    new[cut] = int(a.max()) + 1 + np.arange(cut.size)  # a fresh label per rejoined cell
    relabel = np.arange(int(a.max()) + 1, dtype=np.int64)
    keep = inside & np.isin(pb, cut)
    relabel[pa[keep]] = new[pb[keep]]
    out = relabel[a]
    fill = new[b]
    out = np.where((out == 0) & (fill > 0), fill, out)
    return Probe(probe.scale, relabel_sequential(out.astype(a.dtype))[0], probe.p_fg)


def window(image: np.ndarray, side: int | None = None) -> tuple[slice, slice] | None:
    """The in-plane window (H and W slices, at most ``side`` each) of an image of more than
    2·side² pixels per plane where cells are measured, or None for smaller images (measured
    whole). Of the nine windows at the corners, edge midpoints and centre, the one whose
    intensity varies most: cells give contrast, empty background does not.

    >>> im = np.zeros((40, 40)); im[30:, 30:] = np.arange(100).reshape(10, 10)
    >>> window(im, 10)
    (slice(30, 40, None), slice(30, 40, None))
    """
    side = side or WINDOW
    h, w = image.shape[-2:]
    if h * w <= 2 * side * side:
        return None
    sh, sw = min(side, h), min(side, w)
    plane = image if image.ndim == 2 else image[image.shape[0] // 2]  # a stack: its middle slice
    starts = [(y, x) for y in sorted({0, (h - sh) // 2, h - sh}) for x in sorted({0, (w - sw) // 2, w - sw})]
    step = max(1, int(np.sqrt(sh * sw / 65536)))  # a subsample of ~64k pixels per window is enough
    spread = [float(np.std(plane[y:y + sh:step, x:x + sw:step], dtype=np.float64)) for y, x in starts]
    y, x = starts[int(np.argmax(spread))]
    return slice(y, y + sh), slice(x, x + sw)


def count(labels: np.ndarray) -> int:
    """Number of distinct objects (non-zero labels)."""
    return int(np.count_nonzero(np.bincount(labels.ravel())[1:]))


def resize_plane(image: np.ndarray, f: float) -> np.ndarray:
    """(*Z, H, W) → (*Z, round(f·H), round(f·W)) float32, bilinear (area-smoothed when shrinking)."""
    shape = (*image.shape[:-2], *(max(1, int(round(s * f))) for s in image.shape[-2:]))
    return resize(image.astype(np.float32), shape, order=1, anti_aliasing=f < 1, preserve_range=True).astype(np.float32)


def labels_to_shape(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Labels resized to ``shape`` by nearest neighbour, renumbered 1..n (objects may vanish
    when shrinking), same dtype."""
    zoomed = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)
    return relabel_sequential(zoomed)[0]


def probability_to_shape(p: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A probability map (*s) resampled to ``shape`` (bilinear; area-smoothed when shrinking), float32."""
    shrink = any(a < b for a, b in zip(shape, p.shape))
    return resize(p, shape, order=1, anti_aliasing=shrink, preserve_range=True).astype(np.float32)
