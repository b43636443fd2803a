"""Random CTC-style label images and folders for tests (seeded, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi


def random_labels(rng: np.random.Generator, shape: tuple[int, ...], n: int, radius: tuple[int, int] = (3, 8)) -> np.ndarray:
    """``n`` random balls (2D or 3D) painted in order, so later ones overlap and touch earlier ones.

    Labels are non-contiguous, like real CTC GT. Returns ``uint16`` of ``shape``.
    """
    grid = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    ids = rng.choice(np.arange(1, 3 * n + 2), size=n, replace=False)
    for k in ids:
        centre = [rng.uniform(0, s) for s in shape]
        r = rng.uniform(*radius)
        d2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
        labels[d2 <= r * r] = k
    return labels


def perturb(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    """A plausible imperfect segmentation of ``ref``: grown/shrunk, shifted, merged, split,
    dropped and spurious objects, relabelled at random."""
    res = ref.astype(np.int64)
    ids = [int(i) for i in np.unique(ref) if i]
    for k in ids:
        op = rng.integers(0, 7)
        obj = res == k
        if op == 0 and obj.any():  # shrink
            res[obj & ~ndi.binary_erosion(obj)] = 0
        elif op == 1:  # grow into background
            res[ndi.binary_dilation(obj) & (res == 0)] = k
        elif op == 2:  # drop
            res[obj] = 0
        elif op == 3 and len(ids) > 1:  # merge with another object
            res[obj] = ids[rng.integers(0, len(ids))]
        elif op == 4 and obj.any():  # split along the first axis through the centre
            coords = np.argwhere(obj)
            cut = np.median(coords[:, 0])
            half = obj.copy()
            half[tuple(coords[coords[:, 0] > cut].T)] = False
            res[obj & ~half] = 10_000 + k
        elif op == 5:  # shift by one pixel along a random axis
            res[obj] = 0
            res[np.roll(obj, 1, axis=int(rng.integers(0, ref.ndim))) & (res == 0)] = k
    if rng.random() < 0.5:  # a spurious object
        spur = random_labels(rng, ref.shape, 1, (2, 4))
        res[(spur > 0) & (res == 0)] = 20_000
    out = np.zeros_like(res)
    old = [i for i in np.unique(res) if i]
    new = rng.choice(np.arange(1, 40_000), size=len(old), replace=False)
    for o, n in zip(old, new):
        out[res == o] = n
    return out.astype(np.uint16)


def write_sequence(root: Path, seq: str, gt_frames: dict[int, np.ndarray], res_frames: dict[int, np.ndarray],
                   markers: dict[int, np.ndarray] | None = None, digits: int = 3) -> tuple[Path, Path]:
    """Write ``root/<seq>_GT/{SEG,TRA}`` and ``root/<seq>_RES`` with track files that py-ctcmetrics accepts.

    Markers default to the GT of every result frame (or empty). Each track lives in one frame
    (``L t t 0``), which is what a segmentation-only result needs.
    """
    gt, res = root / f"{seq}_GT", root / f"{seq}_RES"
    (gt / "SEG").mkdir(parents=True)
    (gt / "TRA").mkdir()
    res.mkdir()
    for t, lab in gt_frames.items():
        tifffile.imwrite(gt / "SEG" / f"man_seg{t:0{digits}d}.tif", lab)
    shape = next(iter(res_frames.values())).shape
    if markers is None:
        markers = {t: gt_frames.get(t, np.zeros(shape, np.uint16)) for t in res_frames}
    for name, frames, track_file in ((gt / "TRA", markers, "man_track.txt"), (res, res_frames, "res_track.txt")):
        lines, next_label = [], 1
        for t in sorted(frames):
            lab = frames[t]
            relab = np.zeros(lab.shape, np.uint16)
            for k in np.unique(lab):
                if k:
                    relab[lab == k] = next_label
                    lines.append(f"{next_label} {t} {t} 0")
                    next_label += 1
            prefix = "man_track" if track_file == "man_track.txt" else "mask"
            tifffile.imwrite(name / f"{prefix}{t:0{digits}d}.tif", relab)
        (name / track_file).write_text("\n".join(lines) + ("\n" if lines else ""))
    return res, gt


def touching_discs(rng: np.random.Generator, shape: tuple[int, int], n: int, radius: tuple[float, float] = (5, 10)) -> np.ndarray:
    """Up to ``n`` non-overlapping discs, many touching their neighbours (convex objects, so
    separating them never splits one). Returns uint16 labels 1..k."""
    labels = np.zeros(shape, np.uint16)
    placed: list[tuple[float, float, float]] = []
    yy, xx = np.indices(shape)
    for _ in range(50 * n):
        if len(placed) == n:
            break
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(*radius)
        if any(np.hypot(cy - y, cx - x) < r + q - 0.5 for y, x, q in placed):
            continue
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)
        if disc.sum() < 10:
            continue
        placed.append((cy, cx, r))
        labels[disc] = len(placed)
    return labels


def write_ctc(root: Path, seq: str, images: list[np.ndarray], labels: dict[int, np.ndarray], digits: int = 3) -> tuple[Path, Path]:
    """``root/<seq>/tNNN.tif`` and ``root/<seq>_GT/SEG/man_segNNN.tif``; returns (image folder, GT folder)."""
    img_dir, seg = root / seq, root / f"{seq}_GT" / "SEG"
    img_dir.mkdir(parents=True)
    seg.mkdir(parents=True)
    for t, img in enumerate(images):
        tifffile.imwrite(img_dir / f"t{t:0{digits}d}.tif", img)
    for t, lab in labels.items():
        tifffile.imwrite(seg / f"man_seg{t:0{digits}d}.tif", lab)
    return img_dir, seg.parent


def render(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """A noisy uint16 fluorescence-like image of the labelled objects."""
    fg = (labels > 0).astype(np.float64)
    img = 200 + 800 * ndi.gaussian_filter(fg, 1.0) + rng.normal(0, 40, labels.shape)
    return np.clip(img, 0, 65535).astype(np.uint16)
