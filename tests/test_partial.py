"""Partial CTC gold truth: cells with a TRA marker but no SEG label are unknown, not background.

The ignore region, the masked losses against the paper's equations on the kept pixels, crops
that carry the mask, evaluation that takes Dice/Hausdorff from fully annotated frames only, and
a real training run that must find unannotated cells where training without the mask misses them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from synthetic import render, touching_discs

from gruunet_cli.config import Arch, LossName, ModelConfig, NormConfig
from gruunet_cli.evaluation import evaluate as ev
from gruunet_cli.evaluation import metrics
from gruunet_cli.files import modelfile
from gruunet_cli.files.sources import Layout, Source
from gruunet_cli.inference.predict import probability
from gruunet_cli.training.augment import NO_AUGMENTATION, AugmentConfig, augmented_crop
from gruunet_cli.training.data import scan, unannotated_region
from gruunet_cli.training.loss import compute_loss
from gruunet_cli.training.train import TrainConfig, TrainData, output_paths, run


def disc(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.indices(shape)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_unannotated_region_from_markers_and_from_silver_truth() -> None:
    shape = (40, 60)
    labels = np.zeros(shape, np.int32)
    labels[disc(shape, 10, 10, 6)] = 7  # annotated
    markers = np.zeros(shape, np.int32)
    markers[disc(shape, 10, 10, 2)] = 1  # on the annotated cell
    markers[disc(shape, 25, 40, 2)] = 2  # a cell nobody outlined
    region = unannotated_region(labels, markers, radius=5.0)
    yy, xx = np.indices(shape)
    near2 = np.hypot(yy - 25, xx - 40) <= 7.0  # marker radius 2 + 5
    assert region[25, 40] and region[25, 46] and not region[25, 48] and not region[10, 10]
    assert not (region & (labels > 0)).any()
    assert region.sum() <= near2.sum()
    # with silver truth the extent is the ST object (grown by 2 px), however large
    st = np.zeros(shape, np.int32)
    st[disc(shape, 25, 40, 12)] = 3
    st[disc(shape, 10, 10, 6)] = 4
    region_st = unannotated_region(labels, markers, radius=0.0, st=st)
    assert region_st[25, 40 + 13] and not region_st[25, 40 + 15] and not region_st[10, 10]
    # every marker annotated: nothing to ignore
    assert unannotated_region(labels, np.where(markers == 1, 1, 0), 5.0) is None


@pytest.mark.parametrize("name", [LossName.nfl, LossName.fl, LossName.wce])
def test_masked_losses_equal_the_paper_equations_on_the_known_pixels(name: LossName) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 12, 12, generator=g)
    target = (torch.rand(2, 12, 12, generator=g) > 0.6).long()
    valid = (torch.rand(2, 12, 12, generator=g) > 0.3).float()
    weight = torch.rand(2, 12, 12, generator=g) + 0.5
    got = compute_loss(name, logits, target, weight, 2.0, valid)
    # reference: the unmasked equations on the known pixels only (softmax by hand)
    p = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    x = torch.where(target == 1, p[:, 1], p[:, 0])[valid > 0]
    w_focal = (1 - x) ** 2
    if name == LossName.nfl:
        ref = (w_focal * -torch.log(x)).sum() / w_focal.sum()  # eq. 14
    elif name == LossName.fl:
        ref = (w_focal * -torch.log(x)).sum()  # eq. 9
    else:
        ref = (weight[valid > 0] * -torch.log(x)).mean()
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    # the unknown pixels get no gradient
    logits.requires_grad_(True)
    compute_loss(name, logits, target, weight, 2.0, valid).backward()
    grad = logits.grad.permute(1, 0, 2, 3)  # (2, B, H, W)
    assert torch.all(grad[:, valid == 0] == 0) and torch.any(grad[:, valid > 0] != 0)


def test_crops_carry_the_ignore_mask() -> None:
    rng = np.random.default_rng(0)
    labels = touching_discs(rng, (64, 64), 8).astype(np.int32)
    ignore = np.zeros(labels.shape, bool)
    ignore[10:30, 20:50] = True
    ignore &= labels == 0
    image = rng.random(labels.shape).astype(np.float32)
    crop = augmented_crop(np.random.default_rng(3), image, labels, 32, NO_AUGMENTATION, ignore=ignore)
    # an un-augmented crop copies pixels: find where it came from and compare the masks
    hits = [(y, x) for y in range(33) for x in range(33) if np.array_equal(image[y:y + 32, x:x + 32], crop.image[0])]
    assert len(hits) == 1
    y, x = hits[0]
    np.testing.assert_array_equal(crop.valid, 1.0 - ignore[y:y + 32, x:x + 32])
    # augmented: unknown pixels never carry a label (they came from background pixels)
    for seed in range(5):
        c = augmented_crop(np.random.default_rng(seed), image, labels, 32, AugmentConfig(), ignore=ignore)
        assert not ((c.valid == 0) & (c.labels > 0)).any()


def write_partial_sequence(root: Path, n_frames: int, annotated_share: float, seed: int = 0):
    """A CTC sequence whose SEG labels only ``annotated_share`` of the cells in every frame but the
    last (fully annotated), with TRA markers (eroded cells) for all of them."""
    rng = np.random.default_rng(seed)
    img_dir, seg, tra = root / "01", root / "01_GT" / "SEG", root / "01_GT" / "TRA"
    for d in (img_dir, seg, tra):
        d.mkdir(parents=True)
    from scipy import ndimage as ndi

    for t in range(n_frames):
        lab = touching_discs(rng, (96, 96), 14, (6, 9))
        tifffile.imwrite(img_dir / f"t{t:03d}.tif", render(rng, lab))
        ids = np.unique(lab)[1:]
        keep = ids if t == n_frames - 1 else ids[rng.random(ids.size) < annotated_share]
        tifffile.imwrite(seg / f"man_seg{t:03d}.tif", np.where(np.isin(lab, keep), lab, 0).astype(np.uint16))
        markers = np.zeros_like(lab)
        for k in ids:
            markers[ndi.binary_erosion(lab == k, iterations=3)] = k
        tifffile.imwrite(tra / f"man_track{t:03d}.tif", markers)
    return img_dir, root / "01_GT"


def test_scan_counts_unannotated_cells(tmp_path: Path) -> None:
    images, gt = write_partial_sequence(tmp_path, 3, 0.5)
    sf = scan(Source(Layout.ctc, images, gt), 2)
    frames = [r.load(NormConfig()) for r in sf.refs]
    assert frames[-1].ignore is None  # the fully annotated frame is used whole
    for f in frames[:-1]:
        assert f.ignored_cells > 0 and f.ignore.any() and not (f.ignore & (f.labels > 0)).any()
    off = scan(Source(Layout.ctc, images, gt), 2, partial=False)
    assert all(r.load(NormConfig()).ignore is None for r in off.refs)


@pytest.mark.slow
def test_ignoring_unannotated_cells_lets_the_network_find_them(tmp_path: Path) -> None:
    """Half of the cells of the training frames have no label. Trained with the ignore mask the
    network marks (nearly) every cell of the fully annotated held-out frame; trained with those
    cells as background it learns to leave cells out."""
    images, gt = write_partial_sequence(tmp_path / "d", 6, 0.35)
    seg, pixel_recall = {}, {}
    for ignore in (True, False):
        cfg = TrainConfig(model=ModelConfig(arch=Arch.unet, unet_base=8), crop=48, batch=4, iterations=150,
                          val_interval=150, workers=0, device="cpu", checkpoint_interval=1000,
                          ignore_unannotated=ignore, clean_fraction=0.0)
        out = tmp_path / f"m{ignore}"
        torch.manual_seed(0)
        run(cfg, TrainData((Source(Layout.ctc, images, gt),), (Source(Layout.ctc, images, gt),)), out)
        model, meta = modelfile.load(output_paths(out)["model"])
        full = [r for r in scan(Source(Layout.ctc, images, gt), 2).refs][-1].load(meta.norm)
        p = probability(model, full.image, torch.device("cpu"))[0]
        seg[ignore] = float(metrics.match_objects(full.labels, _components(p > 0.5)).jaccard.mean())
        pixel_recall[ignore] = float((p > 0.5)[full.labels > 0].mean())
        if ignore:
            assert meta.training["ignored"]["cells"] > 0
    # measured: SEG 0.84 vs 0.40, pixel recall 0.997 vs 0.56
    assert seg[True] >= 0.7 and seg[True] - seg[False] >= 0.2, seg
    assert pixel_recall[True] >= 0.95 and pixel_recall[True] - pixel_recall[False] >= 0.2, pixel_recall


def _components(fg: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.label(fg)[0]


def test_evaluate_takes_dice_and_hausdorff_from_fully_annotated_frames(tmp_path: Path) -> None:
    shape = (40, 40)
    a, b = disc(shape, 10, 10, 5), disc(shape, 28, 28, 5)
    gt, res = tmp_path / "01_GT", tmp_path / "01_RES"
    for d in (gt / "SEG", gt / "TRA", res):
        d.mkdir(parents=True)
    both = (a * 1 + b * 2).astype(np.uint16)
    only_a = (a * 1).astype(np.uint16)
    for t, seg in ((0, both), (1, only_a)):
        tifffile.imwrite(gt / "SEG" / f"man_seg{t:03d}.tif", seg)
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", both)
        tifffile.imwrite(res / f"mask{t:03d}.tif", both)  # a perfect result
    (gt / "TRA" / "man_track.txt").write_text("1 0 1 0\n2 0 1 0\n")
    report = ev.evaluate(res, gt)
    assert report.seg == 1.0  # SEG is the official measure, partial or not
    assert [r.complete for r in report.rows] == [True, False]
    assert report.dice_files == ["man_seg000.tif"]
    assert report.dice == 1.0 and report.hausdorff == 0.0  # frame 1 would have Dice 2·78/(78+156) < 1
    assert report.rows[1].dice < 0.7
