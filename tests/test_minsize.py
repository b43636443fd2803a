"""Choosing `min_size` on a video's unannotated frames (`tools.minsize`), against hand-counted DET."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from gruunet_cli.config import PostConfig
from gruunet_cli.tools import minsize


def _discs(shape: tuple[int, int], discs: list[tuple[int, int, int]]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.uint16)
    for k, (cy, cx, r) in enumerate(discs, 1):
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    return out


CELLS = [(30, 30, 9), (30, 90, 9), (90, 60, 9)]  # ~250 px each, each with a marker
SPECKS = [(10, 10, 3), (10, 110, 3), (110, 10, 3), (110, 110, 3), (60, 20, 5)]  # 29 px x4, 81 px


@pytest.mark.parametrize("f", [1.0, 2.0])
def test_det_by_min_size_counts_the_false_positives_each_size_leaves(f: float) -> None:
    """3 markers; at 15 px all 5 specks are false positives (DET = 1 - 5/30), at 50 px one
    (1 - 1/30), at 100 px none (1.0), at 400 px the cells go too (3 misses: DET 0). The same
    with the probability computed on the frame enlarged 2x: sizes stay in original pixels."""
    shape = (120, 120)
    markers = _discs(shape, [(y, x, 3) for y, x, _ in CELLS])
    p = (_discs(shape, CELLS + SPECKS) > 0).astype(np.float32)
    if f != 1.0:
        p = np.kron(p, np.ones((2, 2), np.float32))
    det = minsize.det_by_min_size([(p, f)], [markers], PostConfig(), (15, 50, 100, 400))
    assert det == pytest.approx({15: 1 - 5 / 30, 50: 1 - 1 / 30, 100: 1.0, 400: 0.0})
    assert minsize.pick(det) == 100


def test_unannotated_frames_and_the_smallest_annotated_cell(tmp_path: Path) -> None:
    gt = tmp_path / "01_GT"
    (gt / "SEG").mkdir(parents=True)
    (gt / "TRA").mkdir()
    (tmp_path / "01").mkdir()
    for t in range(20):
        tifffile.imwrite(tmp_path / "01" / f"t{t:03d}.tif", np.zeros((8, 8), np.uint16))
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", np.zeros((8, 8), np.uint16))
    seg = np.zeros((8, 8), np.uint16)
    seg[:2, :3], seg[4:, 4:] = 1, 2  # 6 px and 16 px
    for t in (0, 5):
        tifffile.imwrite(gt / "SEG" / f"man_seg{t:03d}.tif", seg)
    assert minsize.smallest_annotated(gt) == 6
    free = minsize.unannotated_frames(tmp_path / "01", gt, count=4)
    assert free == [1, 8, 13, 19]  # evenly spaced over the 18 free frames and not {0, 5} & set(free)
    assert len(minsize.unannotated_frames(tmp_path / "01", gt, count=100)) == 18
    (gt / "TRA" / "man_track001.tif").unlink()  # no markers: not a candidate
    assert 1 not in minsize.unannotated_frames(tmp_path / "01", gt, count=100)
