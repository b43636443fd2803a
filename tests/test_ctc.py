"""CTC file layout: frame listing, names, GT folders, mask writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from gruunet_cli.errors import UserError
from gruunet_cli.files import ctc


def touch(path: Path, shape: tuple[int, ...] = (4, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.zeros(shape, np.uint16))


def test_frames_are_sorted_with_their_digit_count(tmp_path: Path) -> None:
    for name in ("t0010.tif", "t0002.tif", "notes.txt", "t7.tif"):
        touch(tmp_path / name) if name.endswith(".tif") else (tmp_path / name).write_text("x")
    frames = ctc.list_images(tmp_path)
    assert [(f.frame, f.digits) for f in frames] == [(2, 4), (10, 4)]  # t7.tif is not a CTC name
    assert ctc.mask_path(tmp_path, 10, 4).name == "mask0010.tif"
    assert ctc.mask_path(tmp_path, 10, 3).name == "mask010.tif"


def test_a_frame_twice_is_one_line(tmp_path: Path) -> None:
    touch(tmp_path / "t001.tif")
    touch(tmp_path / "t0001.tif")
    with pytest.raises(UserError, match="frame 1 appears twice"):
        ctc.list_images(tmp_path)


def test_gt_folder_or_its_seg_folder_and_slices(tmp_path: Path) -> None:
    touch(tmp_path / "01_GT" / "SEG" / "man_seg_003_010.tif")
    touch(tmp_path / "01_GT" / "SEG" / "man_seg003.tif")
    touch(tmp_path / "01_GT" / "TRA" / "man_track003.tif")
    for given in (tmp_path / "01_GT", tmp_path / "01_GT" / "SEG"):
        seg, tra = ctc.resolve_gt_dir(given)
        assert seg.name == "SEG" and tra is not None and tra.name == "TRA"
    assert [(g.frame, g.slice) for g in ctc.list_gt(tmp_path / "01_GT" / "SEG")] == [(3, None), (3, 10)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no reference files"):
        ctc.resolve_gt_dir(tmp_path / "empty")


def test_masks_are_uint16_and_too_many_labels_are_refused(tmp_path: Path) -> None:
    ctc.write_mask(tmp_path / "mask000.tif", np.array([[0, 1], [2, 70000 - 69998]], np.int64))
    written = tifffile.imread(tmp_path / "mask000.tif")
    assert written.dtype == np.uint16 and written.tolist() == [[0, 1], [2, 2]]
    with pytest.raises(UserError, match="do not fit in uint16"):
        ctc.write_mask(tmp_path / "mask001.tif", np.array([[70000]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask000.tif"]  # nothing half-written
