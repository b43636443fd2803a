"""From labels to the training target and back: touching cells stay separate labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import STARDIST2D
from synthetic import touching_discs

from gruunet_cli.config import PostConfig
from gruunet_cli.evaluation import metrics
from gruunet_cli.inference.instances import fill_holes, outline, probability_to_labels, separated_foreground
from gruunet_cli.inference.segment import Predictor, SegmentOptions


@pytest.mark.parametrize("seed", range(5))
def test_touching_objects_come_back_as_separate_labels(seed: int) -> None:
    labels = touching_discs(np.random.default_rng(seed), (128, 128), 40)
    n = len(np.unique(labels)) - 1
    p = separated_foreground(labels).astype(np.float32)  # a perfect network's output
    for grow in (0, 1, 2):
        out = probability_to_labels(p, PostConfig(min_size=1, grow=grow))
        assert len(np.unique(out)) - 1 == n
        m = metrics.match_objects(labels, out)
        assert (m.res_labels > 0).all()  # every object found, none merged
        assert m.jaccard.min() > 0.8


def test_growth_gives_back_the_separating_ring() -> None:
    """Squares sharing whole edges (a 3×3 block) plus a lone one: the target removes the shared
    edges; growing by 2 pixels over the ring restores the objects, probability 0 there or not."""
    labels = np.zeros((60, 60), np.int32)
    for i in range(3):
        for j in range(3):
            labels[5 + 10 * i:15 + 10 * i, 5 + 10 * j:15 + 10 * j] = 1 + 3 * i + j
    labels[45:55, 45:55] = 10
    p = separated_foreground(labels).astype(np.float32)
    seg = {g: metrics.seg_score(metrics.match_objects(labels, probability_to_labels(p, PostConfig(min_size=1, grow=g))).jaccard)
           for g in (0, 2)}
    assert seg[0] < 0.8
    assert seg[2] > 0.97


def test_small_components_are_dropped_and_labels_are_consecutive() -> None:
    p = np.zeros((20, 20), np.float32)
    p[1:6, 1:6] = 0.9  # 25 px
    p[10, 10] = 0.9  # 1 px
    p[12:16, 12:16] = 0.8  # 16 px
    out = probability_to_labels(p, PostConfig(min_size=10, grow=0))
    assert out.dtype == np.uint16
    assert sorted(np.unique(out).tolist()) == [0, 1, 2]
    assert out[10, 10] == 0


def test_3d_slices_link_into_one_object() -> None:
    p = np.zeros((4, 20, 20), np.float32)
    p[:, 5:10, 5:10] = 0.9
    out = probability_to_labels(p, PostConfig(min_size=1, grow=0), in_plane=True)
    assert np.unique(out).tolist() == [0, 1]


def disc(shape: tuple[int, int], centre: tuple[float, float], r: float) -> np.ndarray:
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def test_split_cuts_two_overlapping_discs_but_keeps_an_ellipse_whole() -> None:
    a, b = disc((40, 60), (20, 20), 10), disc((40, 60), (20, 36), 10)  # overlap: a 4-px lens
    truth = np.where(a, 1, np.where(b, 2, 0))
    truth[b & (np.indices(a.shape)[1] >= 28)] = 2  # the lens split down the middle
    p = (a | b).astype(np.float32)  # the network left them joined
    assert np.unique(probability_to_labels(p, PostConfig(split=False, min_size=1))).tolist() == [0, 1]
    out = probability_to_labels(p, PostConfig(min_size=1))
    m = metrics.match_objects(truth, out)
    assert len(np.unique(out)) - 1 == 2 and m.jaccard.min() > 0.9
    yy, xx = np.indices((40, 60))
    ellipse = ((yy - 20) / 8.0) ** 2 + ((xx - 30) / 22.0) ** 2 <= 1  # long, no neck: one cell
    assert np.unique(probability_to_labels(ellipse.astype(np.float32), PostConfig(min_size=1))).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(3))
def test_split_recovers_touching_discs_without_a_separating_ring(seed: int) -> None:
    labels = touching_discs(np.random.default_rng(seed), (128, 128), 40)
    p = (labels > 0).astype(np.float32)  # worst case: no ring at all between touching cells
    plain = metrics.match_objects(labels, probability_to_labels(p, PostConfig(split=False, min_size=1)))
    split = metrics.match_objects(labels, probability_to_labels(p, PostConfig(min_size=1)))
    assert metrics.seg_score(split.jaccard) > metrics.seg_score(plain.jaccard) + 0.1
    assert metrics.seg_score(split.jaccard) > 0.8


def test_split_in_plane_keeps_slices_linked() -> None:
    two = disc((40, 60), (20, 20), 10) | disc((40, 60), (20, 36), 10)
    out = probability_to_labels(np.stack([two] * 3).astype(np.float32), PostConfig(min_size=1), in_plane=True)
    assert np.unique(out).tolist() == [0, 1, 2]
    assert all(np.unique(out[z]).tolist() == [0, 1, 2] for z in range(3))
    assert (out[0] == out[2]).mean() > 0.99  # only ties on the neck may fall either way


def _nucleus_with_nucleolus() -> np.ndarray:
    """(64, 64) probability: a disc of radius 12 (0.9) with a dark disc of radius 3 at its centre
    (0.1), and beside it a ring open to the background on one side."""
    yy, xx = np.mgrid[:64, :64]
    p = np.full((64, 64), 0.05, np.float32)
    p[(yy - 20) ** 2 + (xx - 20) ** 2 <= 144] = 0.9
    p[(yy - 20) ** 2 + (xx - 20) ** 2 <= 9] = 0.1
    p[(yy - 50) ** 2 + (xx - 50) ** 2 <= 64] = 0.9
    p[(yy - 50) ** 2 + (xx - 50) ** 2 <= 9] = 0.1
    p[48:53, 50:] = 0.1  # the second object's hole opens to the right edge: a bay, not a hole
    return p


def test_holes_are_filled_and_bays_are_not() -> None:
    """The nucleolus (29 px of the disc of radius 3) is given back to its nucleus; the open bay
    of the other object stays background."""
    p = _nucleus_with_nucleolus()
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 144
    nucleolus = (yy - 20) ** 2 + (xx - 20) ** 2 <= 9
    assert nucleolus.sum() == 29
    kept = probability_to_labels(p, PostConfig(min_size=1, split=False))
    filled = fill_holes(kept)
    first = filled[20, 20]
    assert first > 0 and ((filled == first) == disc).all()
    assert ((kept == kept[20, 12]) == (disc & ~nucleolus)).all()
    assert filled[50, 50] == 0 and (filled[48:53, 50:] == 0).all()  # the bay stays open
    assert (filled > 0).sum() - (kept > 0).sum() == 29


def test_fill_holes_keeps_objects_inside_others_and_fills_slices_in_plane() -> None:
    """An object inside another's hole stays itself; in a 2D model's stack (``in_plane``) a hole
    in every slice is filled, while in 3D a tube open at both ends of the stack is no cavity."""
    ring = np.zeros((9, 9), np.uint16)
    ring[1:8, 1:8] = 1
    ring[3:6, 3:6] = 0
    ring[4, 4] = 2  # a second object in the hole
    out = fill_holes(ring)
    assert out[4, 4] == 2 and (out[3:6, 3:6] == 1).sum() == 8
    tube = np.stack([ring] * 3)
    tube[tube == 2] = 0
    assert (fill_holes(tube, in_plane=True)[:, 3:6, 3:6] == 1).all()
    assert (fill_holes(tube)[:, 3:6, 3:6] == 0).all()


def test_outline_fills_the_holes_it_leaves() -> None:
    """Re-outlining on the probability leaves the nucleolus out again unless ``fill``."""
    p = _nucleus_with_nucleolus()
    labels = probability_to_labels(p, PostConfig(min_size=1, split=False))
    assert outline(labels, p, 0.5, 2)[20, 20] > 0
    assert outline(labels, p, 0.5, 2, fill=False)[20, 20] == 0


def test_segment_fills_holes_unless_told_not_to() -> None:
    """A real model on bright discs with dark centres (nucleoli) leaves holes; `segment` fills
    them, with or without an outline level, exactly as `fill_holes` does; ``fill_holes=False``
    (``--keep-holes``) writes the holes."""
    yy, xx = np.mgrid[:128, :128]
    image = np.full((128, 128), 10.0, np.float32)
    for cy, cx in ((32, 32), (32, 96), (96, 40), (90, 96)):
        r = np.hypot(yy - cy, xx - cx)
        image[r <= 12] = 200
        image[r <= 4] = 10
    opts = SegmentOptions(threads=1, device="cpu", diameter=None)
    for level in (None, 0.5):
        kept = Predictor(STARDIST2D, dataclasses.replace(opts, post_overrides={"fill_holes": False, "outline": level})).labels(image)
        filled = Predictor(STARDIST2D, dataclasses.replace(opts, post_overrides={"outline": level})).labels(image)
        assert np.array_equal(filled, fill_holes(kept))
        # a nucleolus: a hole, then its nucleus'. One ring may come out as two objects (bf16 on
        # two threads splits the first disc), and a hole between two objects is not filled.
        centres = [(32, 32), (32, 96), (96, 40), (90, 96)]
        holes = [c for c in centres if kept[c] == 0 and filled[c] > 0]
        assert len(holes) >= 3, holes
        assert (filled > 0).sum() - (kept > 0).sum() >= len(holes) * 40  # holes of about 49 px
