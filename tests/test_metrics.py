"""Metrics against hand-computed cases, a brute-force reading of the definitions and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import hausdorff_distance
from skimage.segmentation import find_boundaries
from synthetic import perturb, random_labels

from gruunet_cli.evaluation import metrics


def brute_force_jaccards(ref: np.ndarray, res: np.ndarray) -> list[float]:
    """SEG's per-object Jaccard straight from the definition, one mask at a time."""
    out = []
    for r in np.unique(ref):
        if r == 0:
            continue
        R = ref == r
        j = 0.0
        for s in np.unique(res[R]):
            if s == 0:
                continue
            S = res == s
            inter = np.sum(R & S)
            if inter > 0.5 * np.sum(R):
                j = inter / np.sum(R | S)
        out.append(j)
    return out


def test_seg_hand_computed() -> None:
    ref = np.zeros((6, 6), np.uint16)
    ref[0:2, 0:4] = 3  # 8 px
    ref[4:6, 0:2] = 9  # 4 px
    ref[4:6, 4:6] = 12  # 4 px
    res = np.zeros_like(ref)
    res[0:2, 0:3] = 1  # covers 6 of 8 → J = 6/8
    res[0:1, 4:6] = 1  # the same result object grows outside: |S| = 8 → J = 6/(8+8-6) = 0.6
    res[4:5, 0:2] = 2  # exactly half of object 9: not a match (strictly more than half)
    res[3:6, 3:6] = 7  # covers all 4 of object 12, |S| = 9 → J = 4/9
    m = metrics.match_objects(ref, res)
    assert m.ref_labels.tolist() == [3, 9, 12]
    assert m.res_labels.tolist() == [1, 0, 7]
    assert m.jaccard.tolist() == pytest.approx([0.6, 0.0, 4 / 9], abs=1e-15)
    assert metrics.seg_score(m.jaccard) == pytest.approx((0.6 + 4 / 9) / 3, abs=1e-15)


@pytest.mark.parametrize("seed", range(12))
def test_seg_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (40, 48) if seed % 2 else (6, 20, 24)
    ref = random_labels(rng, shape, 12)
    res = perturb(rng, ref)
    if seed % 3 == 0:  # labels near the top of uint16 (py-ctcmetrics overflows there)
        res = np.where(res > 0, 65535 - (res % 50), 0).astype(np.uint16)
    if seed % 4 == 1:  # no background pixel at all
        res = np.where(res == 0, 65000, res).astype(np.uint16)
    m = metrics.match_objects(ref, res)
    assert m.jaccard.tolist() == pytest.approx(brute_force_jaccards(ref, res), abs=1e-12)


def test_overlaps_many_labels_uses_sparse_path() -> None:
    # 5000 × 5000 label pairs exceed the dense table limit, forcing the sorted path.
    ref = np.arange(1, 5001, dtype=np.int64).repeat(2).reshape(100, 100)
    res = np.roll(ref, 1)
    r, s, c = metrics.overlaps(ref, res)
    assert c.sum() == ref.size
    m = metrics.match_objects(ref, res)
    assert m.jaccard.tolist() == pytest.approx(brute_force_jaccards(ref, res))


def test_det_hand_computed() -> None:
    markers = np.array([[1, 1, 0, 2, 2, 0, 3, 3, 0, 4, 4, 0]])
    res = np.array([[5, 5, 5, 5, 5, 0, 0, 0, 0, 6, 7, 8]])
    # markers 1 and 2 share object 5 (1 split), 3 is missed (FN), 4 is half-covered by 6 and
    # half by 7 (neither is > half: FN), objects 6, 7 and 8 cover no marker (3 FP).
    e = metrics.detection_errors(markers, res)
    assert e == metrics.DetErrors(markers=4, fn=2, fp=3, ns=1)
    assert metrics.det_score(e) == pytest.approx(1 - (5 * 1 + 10 * 2 + 3) / 40)
    worse = metrics.DetErrors(markers=1, fn=1, fp=50, ns=0)
    assert metrics.det_score(worse) == 0.0  # AOGM-D is capped at AOGM-D0


def test_dice_hand_computed() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, 10 shared
    assert metrics.dice(a, b) == pytest.approx(0.5)
    assert metrics.dice(a, a) == 1.0
    assert metrics.dice(a, np.zeros_like(a)) == 0.0
    assert metrics.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_hausdorff_hand_computed() -> None:
    a = np.zeros((30, 30), bool)
    a[5:10, 5:10] = True
    b = a.copy()
    b[20, 20] = True  # a lone pixel: its distance to the nearest boundary of a is |(20,20)-(9,9)|
    assert metrics.hausdorff(a, b) == pytest.approx(np.hypot(11, 11))
    c = np.roll(a, 4, axis=0)
    assert metrics.hausdorff(a, c) == pytest.approx(4.0)
    assert metrics.hausdorff(a, a) == 0.0
    assert metrics.hausdorff(a, np.zeros_like(a)) == float("inf")


@pytest.mark.parametrize("seed", range(5))
def test_hausdorff_equals_scikit_image(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = random_labels(rng, (50, 60), 6) > 0
    b = perturb(rng, random_labels(rng, (50, 60), 6)) > 0
    ref = hausdorff_distance(find_boundaries(a, mode="inner"), find_boundaries(b, mode="inner"))
    assert metrics.hausdorff(a, b) == pytest.approx(ref)
