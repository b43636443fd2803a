"""From labels to the training target and back: touching cells stay separate labels."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import touching_discs

from gruunet_cli.config import PostConfig
from gruunet_cli.evaluation import metrics
from gruunet_cli.inference.instances import probability_to_labels, separated_foreground


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
