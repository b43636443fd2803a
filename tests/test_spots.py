"""Unlabelled bright specks (``--ignore-spots``): found where annotators put their small discs,
never on labelled objects or their edges, carried into the crops' loss mask, counted in the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from gruunet_cli.config import NormConfig
from gruunet_cli.files.sources import Layout, Source
from gruunet_cli.training.augment import NO_AUGMENTATION, augmented_crop
from gruunet_cli.training.data import scan
from gruunet_cli.training.spots import SPOT_RADIUS, unlabelled_spots


def speckled(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """(96, 96) uint8-like image: background 14 with noise of std 2.6 (as in StarDist's demo image),
    two labelled nuclei (r 6, +80) and four unlabelled 3x3 specks (+12), as DSB's small dots."""
    rng = np.random.default_rng(seed)
    img = 14 + rng.normal(0, 2.6, (96, 96))
    labels = np.zeros((96, 96), np.int32)
    yy, xx = np.indices(img.shape)
    for i, (cy, cx) in enumerate([(20, 20), (70, 60)], 1):
        disc = np.hypot(yy - cy, xx - cx) <= 6
        img[disc] += 80
        labels[disc] = i
    specks = [(20, 60), (50, 15), (80, 25), (45, 80)]
    for cy, cx in specks:
        img[cy - 1:cy + 2, cx - 1:cx + 2] += 12
    return np.clip(img, 0, 255).round(), labels, specks


def test_specks_are_found_off_the_labels_and_nowhere_else() -> None:
    img, labels, specks = speckled()
    mask = unlabelled_spots(img, labels)
    assert mask is not None
    for cy, cx in specks:
        assert mask[cy, cx]
    assert not (mask & (labels > 0)).any()
    # each region is a disc of SPOT_RADIUS around one speck: no noise blobs, no nucleus edges
    regions, n = ndi.label(mask)
    assert n == len(specks)
    assert mask.sum() <= n * np.pi * (SPOT_RADIUS + 1) ** 2
    # a labelled speck is a positive, not unknown; a clean image has nothing to ignore
    labels2 = labels.copy()
    labels2[19:22, 59:62] = 9
    assert not unlabelled_spots(img, labels2)[20, 60]
    flat = np.full((64, 64), 14.0) + np.random.default_rng(1).normal(0, 2.6, (64, 64)).round()
    assert unlabelled_spots(flat, np.zeros((64, 64), np.int32)) is None


def test_stacks_are_searched_plane_by_plane() -> None:
    img, labels, specks = speckled()
    stack, lab = np.stack([img, img[::-1]]), np.stack([labels, labels[::-1]])
    mask = unlabelled_spots(stack, lab)
    assert mask.shape == stack.shape
    cy, cx = specks[0]
    assert mask[0, cy, cx] and mask[1, 95 - cy, cx]


def test_training_frames_carry_the_specks_into_the_loss_mask(tmp_path: Path) -> None:
    img, labels, specks = speckled()
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", img.astype(np.uint8))
    tifffile.imwrite(tmp_path / "masks" / "a.tif", labels.astype(np.uint16))
    source = Source(Layout.stardist, tmp_path)
    plain = scan(source, 2).refs[0].load(NormConfig())
    assert plain.ignore is None
    ref = scan(source, 2, spots=True).refs[0]
    frame = ref.load(NormConfig())
    assert frame.ignored_spots == len(specks)
    assert all(frame.ignore[cy, cx] for cy, cx in specks)
    # an un-augmented crop centred on a nucleus next to a speck: the loss does not look there
    rng = np.random.default_rng(0)
    crop = augmented_crop(rng, frame.image, frame.labels, 96, NO_AUGMENTATION, [(slice(20, 21), slice(20, 21))],
                          ignore=frame.ignore)
    valid = crop.valid
    assert valid.min() == 0.0 and valid[crop.labels > 0].min() == 1.0
    assert crop.target[valid == 0].max() == 0


def test_labelled_dsb_specks_are_what_the_detector_finds(shared_data: Path) -> None:
    """The detector against an independent reference, DSB's annotators: with their small discs
    (<= 30 px) taken out of the labels, most of them must be found again, in the 12 images that have the most."""
    root = shared_data / "DSB2018-fluo" / "train"
    names = ["0402a81e7526", "094afe36759e", "12f89395ad5d", "1c681dfa5cf7", "1f9e429c12f4", "0bda515e3702",
             "0287e7ee5b00", "20468e8779c4", "2227fd9b01d6", "00071198d059", "2ab91a440886", "243443ae303c"]
    found = total = 0
    for name in names:
        img = tifffile.imread(root / "images" / f"{name}.tif").astype(np.float32)
        gt = tifffile.imread(root / "masks" / f"{name}.tif").astype(np.int32)
        ids = np.unique(gt)[1:]
        tiny = ids[np.bincount(gt.ravel())[ids] <= 30]
        kept = np.where(np.isin(gt, tiny), 0, gt)
        mask = unlabelled_spots(img, kept)
        total += tiny.size
        found += 0 if mask is None else sum(bool(mask[gt == t].any()) for t in tiny)
    assert total >= 60
    assert found / total >= 0.6
