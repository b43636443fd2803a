"""Where SEG is lost (`evaluation.losses`): against a brute-force classification, and the identity
that the four shares add up to 1 − SEG."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import perturb, random_labels
from test_metrics import brute_force_jaccards

from gruunet_cli.evaluation import metrics
from gruunet_cli.evaluation.losses import KINDS, seg_losses


def brute_force_kinds(ref: np.ndarray, res: np.ndarray) -> list[str]:
    """Each reference object's kind, found with one mask per object (independent of `overlaps`)."""
    matches = {}
    for r in np.unique(ref)[1:]:
        R = ref == r
        for s in np.unique(res[R]):
            if s and np.sum(R & (res == s)) > 0.5 * np.sum(R):
                matches[r] = s
    kinds = []
    for r in np.unique(ref)[1:]:
        R = ref == r
        if r in matches:
            kinds.append("merged" if list(matches.values()).count(matches[r]) > 1 else "outline")
        else:
            kinds.append("split" if np.sum(R & (res != 0)) > 0.5 * np.sum(R) else "missed")
    return kinds


@pytest.mark.parametrize("seed", range(10))
def test_kinds_and_shares_equal_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = random_labels(rng, (40, 48) if seed % 2 else (5, 20, 24), 14)
    res = perturb(rng, ref)
    if seed % 3 == 0:  # merge pairs of result objects so some match two references
        res = np.where(res > 0, (res + 1) // 2, 0).astype(res.dtype)
    m = metrics.match_objects(ref, res)
    got = seg_losses(m)
    kinds = brute_force_kinds(ref, res)
    loss = 1.0 - np.array(brute_force_jaccards(ref, res))
    for k in KINDS:
        sel = np.array([x == k for x in kinds])
        assert getattr(got, k) == int(sel.sum()), k
        assert getattr(got, f"{k}_loss") == pytest.approx(float(loss[sel].sum()), abs=1e-9), k
    assert got.objects == len(kinds)
    assert sum(got.shares().values()) == pytest.approx(1.0 - metrics.seg_score(m.jaccard), abs=1e-12)


def test_every_kind_hand_computed() -> None:
    ref = np.zeros((6, 12), np.uint16)
    ref[0:2, 0:2] = 1  # missed: nothing there
    ref[0:2, 4:8] = 2  # split: two result objects of 4 px each
    ref[4:6, 0:2] = 3  # merged with 4 into one result object
    ref[4:6, 3:5] = 4
    ref[4:6, 8:12] = 5  # matched alone, the result one column short: J = 6/8
    res = np.zeros_like(ref)
    res[0:2, 4:6], res[0:2, 6:8] = 7, 8
    res[4:6, 0:5] = 9  # 10 px covering 3 and 4 (4 px each): J = 0.4 each
    res[4:6, 8:11] = 10
    got = seg_losses(metrics.match_objects(ref, res))
    assert (got.missed, got.split, got.merged, got.outline) == (1, 1, 2, 1)
    assert got.shares() == pytest.approx({"missed": 1 / 5, "split": 1 / 5, "merged": 1.2 / 5, "outline": 0.25 / 5})
