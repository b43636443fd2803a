"""Segmentation measures as small pure functions: overlaps → matches → SEG, DET, Dice, Hausdorff.

Label images are integer arrays of any dimension (``(H, W)`` or ``(Z, H, W)``), 0 = background.
Definitions follow the Cell Tracking Challenge (SEG, DET) and the GRUU-Net paper (Dice eq. 15,
Hausdorff eq. 17). A reference object R is *matched* by the result object S iff
``|R ∩ S| > 0.5 · |R|`` (strictly), so at most one S can match R.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.segmentation import find_boundaries

# Above this many (ref × res) label pairs the dense bincount table would be too large.
_DENSE_PAIRS_LIMIT = 1 << 24


def _as_index(labels: np.ndarray) -> np.ndarray:
    """Flattened labels as a non-negative integer index array (no copy when already fine)."""
    flat = labels.ravel()
    if flat.dtype == np.bool_ or flat.dtype.kind == "i" or flat.dtype.itemsize > 4:
        flat = flat.astype(np.int64)
    return flat


def label_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label values present (sorted, 0 included when present) and their pixel counts.
    Memory depends on the number of pixels and objects, never on how large the label values are.

    >>> ids, sizes = label_sizes(np.array([[0, 2], [2, 4_000_000_000]], np.uint32))
    >>> ids.tolist(), sizes.tolist()
    ([0, 2, 4000000000], [1, 2, 1])
    """
    flat = _as_index(labels)
    if flat.size and int(flat.max()) <= max(2 * flat.size, 65535):  # a small table: one pass, no sort
        counts = np.bincount(flat)
        ids = np.flatnonzero(counts)
        return ids.astype(np.int64), counts[ids].astype(np.int64)
    ids, counts = np.unique(flat, return_counts=True)
    return ids.astype(np.int64), counts.astype(np.int64)


def overlaps(ref: np.ndarray, res: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse contingency table over the reference foreground.

    Returns ``(ref_ids, res_ids, counts)``: for every pair of a reference label ``r > 0`` and a
    result label ``s >= 0`` that share pixels, ``counts = |{ref == r} ∩ {res == s}|``.

    >>> r, s, c = overlaps(np.array([1, 1, 1, 0, 2]), np.array([0, 3, 3, 3, 3]))
    >>> list(zip(r.tolist(), s.tolist(), c.tolist()))
    [(1, 0, 1), (1, 3, 2), (2, 3, 1)]
    """
    if ref.shape != res.shape:
        raise ValueError(f"shapes differ: reference {ref.shape}, result {res.shape}")
    r = _as_index(ref)
    s = _as_index(res)
    fg = r != 0
    r, s = r[fg], s[fg]
    if r.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    # Compact both label sets, then count pairs with one bincount (no sort) when it fits.
    r_ids, r_idx = np.unique(r, return_inverse=True) if r.max() > 65535 else _compact(r)
    s_ids, s_idx = np.unique(s, return_inverse=True) if s.max() > 65535 else _compact(s)
    n_s = len(s_ids)
    if len(r_ids) * n_s <= _DENSE_PAIRS_LIMIT:
        table = np.bincount(r_idx * n_s + s_idx, minlength=len(r_ids) * n_s)
        nz = np.flatnonzero(table)
        counts = table[nz]
    else:
        nz, counts = np.unique(r_idx.astype(np.int64) * n_s + s_idx, return_counts=True)
    return r_ids[nz // n_s].astype(np.int64), s_ids[nz % n_s].astype(np.int64), counts.astype(np.int64)


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for small non-negative ints, via a lookup table."""
    present = np.bincount(values) > 0
    ids = np.flatnonzero(present)
    lut = np.zeros(present.size, np.int64)
    lut[ids] = np.arange(ids.size)
    return ids, lut[values]


@dataclass(frozen=True)
class SegMatch:
    """Per reference object: its label, size, matched result label (0 = none), Jaccard, and how
    many of its pixels any result object covers."""

    ref_labels: np.ndarray  # (n,) int64
    ref_sizes: np.ndarray  # (n,) int64
    res_labels: np.ndarray  # (n,) int64, 0 where unmatched
    jaccard: np.ndarray  # (n,) float64, 0 where unmatched
    covered: np.ndarray  # (n,) int64, pixels under result foreground


def match_objects(ref: np.ndarray, res: np.ndarray) -> SegMatch:
    """Match every reference object to the result object covering more than half of it.

    >>> ref = np.array([[1, 1, 1, 1, 0, 2, 2]])
    >>> res = np.array([[5, 5, 5, 0, 0, 0, 7]])
    >>> m = match_objects(ref, res)
    >>> m.res_labels.tolist(), m.jaccard.tolist()
    ([5, 0], [0.75, 0.0])
    """
    ref_ids, res_ids, counts = overlaps(ref, res)
    labels, sizes = label_sizes(ref)
    res_labels, res_sizes = label_sizes(res)
    sizes, labels = sizes[labels != 0], labels[labels != 0]
    matched_res = np.zeros(labels.size, np.int64)
    jaccard = np.zeros(labels.size, np.float64)
    ref_size = sizes[np.searchsorted(labels, ref_ids)] if ref_ids.size else np.zeros(0, np.int64)
    hit = (res_ids != 0) & (2 * counts > ref_size)
    pos = np.searchsorted(labels, ref_ids[hit])
    inter = counts[hit]
    matched_res[pos] = res_ids[hit]
    jaccard[pos] = inter / (sizes[pos] + res_sizes[np.searchsorted(res_labels, res_ids[hit])] - inter)
    fg = res_ids != 0
    covered = np.bincount(np.searchsorted(labels, ref_ids[fg]), weights=counts[fg], minlength=labels.size)
    return SegMatch(labels, sizes, matched_res, jaccard, covered.astype(np.int64))


def seg_score(jaccards: np.ndarray) -> float:
    """SEG: the mean Jaccard over reference objects (NaN when there are none).

    >>> seg_score(np.array([1.0, 0.5, 0.0]))
    0.5
    """
    return float(np.mean(jaccards)) if jaccards.size else float("nan")


@dataclass(frozen=True)
class DetErrors:
    """Detection errors of one frame against its markers (AOGM-D terms)."""

    markers: int  # reference markers (AOGM-D0 = 10 · markers)
    fn: int  # markers covered by no result object
    fp: int  # result objects covering no marker
    ns: int  # splits needed: a result object covering k markers adds k − 1

    def __add__(self, other: DetErrors) -> DetErrors:
        return DetErrors(self.markers + other.markers, self.fn + other.fn, self.fp + other.fp, self.ns + other.ns)


def detection_errors(markers: np.ndarray, res: np.ndarray) -> DetErrors:
    """Count false negatives, false positives and splits of ``res`` against ``markers``.

    >>> markers = np.array([1, 1, 0, 2, 2, 0, 3, 0])
    >>> res     = np.array([4, 4, 4, 4, 4, 0, 0, 9])
    >>> detection_errors(markers, res)
    DetErrors(markers=3, fn=1, fp=1, ns=1)
    """
    match = match_objects(markers, res)
    matched = match.res_labels[match.res_labels != 0]
    res_labels = label_sizes(res)[0]
    res_labels = res_labels[res_labels != 0]
    per_object = np.unique(matched, return_counts=True)[1]
    return DetErrors(
        markers=int(match.ref_labels.size),
        fn=int(np.sum(match.res_labels == 0)),
        fp=int(res_labels.size - per_object.size),
        ns=int(np.sum(per_object - 1)),
    )


def det_score(errors: DetErrors) -> float:
    """DET = 1 − min(AOGM-D, AOGM-D0) / AOGM-D0, AOGM-D = 5·NS + 10·FN + 1·FP, AOGM-D0 = 10·markers.

    >>> det_score(DetErrors(markers=3, fn=1, fp=1, ns=1))
    0.4666666666666667
    """
    if errors.markers == 0:
        return float("nan")
    aogm = 5 * errors.ns + 10 * errors.fn + 1 * errors.fp
    aogm0 = 10 * errors.markers
    return 1.0 - min(aogm, aogm0) / aogm0


def unannotated_markers(labels: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Ids of the tracking markers less than half of which lie on reference labels: cells the
    reference does not annotate (partial CTC gold truth). Empty when the reference is complete.

    >>> lab = np.array([[1, 1, 0, 0]]); mk = np.array([[3, 0, 0, 4]])
    >>> unannotated_markers(lab, mk).tolist()
    [4]
    """
    from scipy import ndimage as ndi

    ids = np.unique(markers[markers > 0])
    if ids.size == 0:
        return ids
    on_labels = np.asarray(ndi.mean(labels > 0, markers, ids))
    return ids[on_labels < 0.5]


def dice(ref_fg: np.ndarray, res_fg: np.ndarray) -> float:
    """Dice of two foreground masks (paper eq. 15): 2|A∩B| / (|A| + |B|); 1 when both are empty.

    >>> dice(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
    0.5
    """
    a, b = np.asarray(ref_fg, bool), np.asarray(res_fg, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def boundary(fg: np.ndarray) -> np.ndarray:
    """Inner boundary of a foreground mask: foreground pixels with a background neighbour."""
    return find_boundaries(np.asarray(fg, bool), mode="inner", connectivity=1)


def hausdorff(ref_fg: np.ndarray, res_fg: np.ndarray) -> float:
    """Hausdorff distance (paper eq. 17) between the foreground boundaries, in pixels.

    0 when both masks are empty, ``inf`` when only one is.

    >>> a = np.zeros((20, 20), bool); a[5:10, 5:10] = True
    >>> b = np.zeros((20, 20), bool); b[5:10, 8:13] = True
    >>> hausdorff(a, b)
    3.0
    """
    from scipy import ndimage as ndi

    pa, pb = boundary(ref_fg), boundary(res_fg)
    a_any, b_any = bool(pa.any()), bool(pb.any())
    if not a_any and not b_any:
        return 0.0
    if not a_any or not b_any:
        return float("inf")
    # Exact Euclidean distance transforms within the boxes holding both boundaries (a k-d tree
    # crashed in a process whose CPU flushes denormals, as `segment` sets it).
    (box,) = ndi.find_objects((pa | pb).astype(np.uint8))
    pa, pb = pa[box], pb[box]
    d_ab = ndi.distance_transform_edt(~pb)[pa].max()
    d_ba = ndi.distance_transform_edt(~pa)[pb].max()
    return float(max(d_ab, d_ba))
