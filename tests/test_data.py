"""Training sources and frames: CTC, StarDist and Cellpose layouts, lazy loading, per-source
split, scale normalisation, balanced sampling, and a real training run on a mix of sources."""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from synthetic import render, touching_discs, write_ctc
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.config import NormConfig
from gruunet_cli.files import modelfile
from gruunet_cli.files.sources import Layout, Source, folder_pairs, parse
from gruunet_cli.inference import scale
from gruunet_cli.training import curves, data
from gruunet_cli.training.augment import NO_AUGMENTATION
from gruunet_cli.training.prefetch import CropDataset, SamplingConfig
from gruunet_cli.training.train import TrainConfig, TrainData, output_paths, prepare


def stardist_folder(root: Path, shapes: list[tuple[int, int]], seed: int = 0, radius=(5, 10)) -> Path:
    """``root/images/NAME.tif`` (uint8 and uint16 mixed) + ``root/masks/NAME.tif``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, shape in enumerate(shapes):
        lab = touching_discs(rng, shape, 8, radius)
        img = render(rng, lab)
        if i % 2:
            img = (img // 64).astype(np.uint8)
        tifffile.imwrite(root / "images" / f"img{i}.tif", img)
        tifffile.imwrite(root / "masks" / f"img{i}.tif", lab)
    return root


def cellpose_folder(root: Path, n: int, seed: int = 1) -> Path:
    """``root/NAME.png`` + ``root/NAME_masks.png`` (Cellpose's layout, PNG)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        lab = touching_discs(rng, (72, 88), 8)
        iio.imwrite(root / f"cells{i}.png", (render(rng, lab) // 64).astype(np.uint8))
        iio.imwrite(root / f"cells{i}_masks.png", lab)
    return root


def test_layouts_are_recognised_and_paired(tmp_path: Path) -> None:
    sd = stardist_folder(tmp_path / "sd", [(64, 64), (80, 70)])
    cp = cellpose_folder(tmp_path / "cp", 2)
    rng = np.random.default_rng(2)
    labs = [touching_discs(rng, (64, 64), 6) for _ in range(2)]
    images, gt = write_ctc(tmp_path, "01", [render(rng, x) for x in labs], dict(enumerate(labs)))
    sources = parse([images, sd, cp])  # 01_GT beside 01/ is found
    assert [s.layout for s in sources] == [Layout.ctc, Layout.stardist, Layout.cellpose]
    assert sources[0].gt == gt
    assert parse([images, gt])[0].gt == gt  # the classic `train 01/ 01_GT/`
    assert [p[0] for p in folder_pairs(sources[2])] == ["cells0", "cells1"]
    assert [p[2].name for p in folder_pairs(sources[1])] == ["img0.tif", "img1.tif"]


@pytest.mark.parametrize("case, message", [
    ("no_mask", "image without a mask"),
    ("other_shape", "mask of shape (40, 40) for an image of shape (64, 64)"),
    ("float_mask", "not a label image: pixel type float32 is not integer"),
    ("empty", "no images in this source"),
    ("all_zero", "the references hold no objects"),
    ("gt_alone", "is a reference folder"),
])
def test_bad_sources_are_one_line_errors(tmp_path: Path, case: str, message: str) -> None:
    root = stardist_folder(tmp_path / "sd", [(64, 64), (64, 64)])
    bad = root / "masks" / "img1.tif"
    arg = root
    if case == "no_mask":
        bad = root / "masks" / "img1.tif"
        bad.unlink()
        bad = root / "images" / "img1.tif"
    elif case == "other_shape":
        tifffile.imwrite(bad, np.ones((40, 40), np.uint16))
    elif case == "float_mask":
        tifffile.imwrite(bad, np.ones((64, 64), np.float32))
    elif case == "empty":
        for p in [*(root / "images").iterdir(), *(root / "masks").iterdir()]:
            p.unlink()
        bad = root / "images"
    elif case == "all_zero":
        for p in (root / "masks").iterdir():
            tifffile.imwrite(p, np.zeros((64, 64), np.uint16))
        bad = root
    elif case == "gt_alone":
        rng = np.random.default_rng(0)
        lab = touching_discs(rng, (64, 64), 5)
        _, gt = write_ctc(tmp_path, "01", [render(rng, lab)], {0: lab})
        arg = bad = gt
    out = tmp_path / "m"
    result = CliRunner().invoke(app, ["train", str(arg), "--out", str(out), "--iterations", "1", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and message in lines[0], result.output
    assert not list(tmp_path.glob("m.*"))  # nothing written


def test_an_image_unreadable_past_its_header_is_one_line_from_the_worker(tmp_path: Path) -> None:
    """Images are read lazily, by the augmentation workers: a TIFF cut short after its header
    passes the scan, and its error still reaches the user as one line, exit code 2, with the
    workers stopped then (not when the process exits) and nothing written."""
    root = stardist_folder(tmp_path / "sd", [(64, 64), (64, 64), (64, 64)])
    for image in (root / "images").iterdir():  # the validation image too: whichever is read first
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
    before = set(multiprocessing.active_children())
    result = CliRunner().invoke(app, ["train", str(root), "--out", str(tmp_path / "m"), "--iterations", "2",
                                      "--workers", "1", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"error: {re.escape(str(root / 'images'))}/img\d\.tif: cannot read TIFF .*", lines[0]), result.output
    assert not set(multiprocessing.active_children()) - before  # the worker was stopped
    assert not list(tmp_path.glob("m.*"))


def test_scan_measures_and_scale_to_normalises_cell_size(tmp_path: Path) -> None:
    small = stardist_folder(tmp_path / "small", [(96, 96)] * 2, radius=(4, 5))
    big = stardist_folder(tmp_path / "big", [(96, 96)] * 2, seed=3, radius=(10, 12))
    for root in (small, big):
        plain = data.scan(Source(Layout.stardist, root), 2)
        scaled = data.scan(Source(Layout.stardist, root), 2, scale_to=16.0)
        for ref, st, st2 in zip(scaled.refs, plain.stats, scaled.stats):
            assert ref.factor == pytest.approx(16.0 / np.median(st.diameters))
            frame = ref.load(NormConfig())
            assert frame.image.shape == tuple(round(s * ref.factor) for s in (96, 96))
            # the loaded frame's cells have about the asked diameter
            assert np.median(scale.object_diameters(frame.labels)) == pytest.approx(16.0, rel=0.1)
            assert np.median(st2.diameters) == pytest.approx(16.0)


def test_split_is_per_source_and_one_frame_splits_in_space(tmp_path: Path) -> None:
    sd = stardist_folder(tmp_path / "sd", [(64, 64)] * 8)
    one = stardist_folder(tmp_path / "one", [(80, 64)])
    cfg = TrainConfig(crop=32, device="cpu")
    prep = prepare(cfg, TrainData((Source(Layout.stardist, sd), Source(Layout.stardist, one))))
    assert [len(refs) for refs in prep.train] == [6, 1]
    assert sorted(f.name for f in prep.val) == ["one:img0[val rows]", "sd:img3", "sd:img7"]
    rows = next(f for f in prep.val if f.name.startswith("one:")).load(NormConfig())
    assert rows.image.shape == (20, 64)  # the last 25% of 80 rows
    assert prep.train[1][0].load(NormConfig()).image.shape == (60, 64)


def test_sampling_balances_sources_and_loads_lazily(tmp_path: Path) -> None:
    many = stardist_folder(tmp_path / "many", [(64, 64)] * 9)
    few = stardist_folder(tmp_path / "few", [(64, 64)])
    srcs = [data.scan(Source(Layout.stardist, p), 2).refs for p in (many, few)]
    ds = CropDataset(srcs, SamplingConfig(crop=32, batch=1, seed=0, augment=NO_AUGMENTATION, clean_from_batch=0),
                     cache_bytes=1)  # a cache of one frame: every other frame is read again when drawn
    for i in range(200):
        ds[i]
    loaded = ds.cache._frames
    assert len(loaded) == 1  # the cache holds one frame, not the data set
    # which source each sample came from: the same draws as __getitem__
    picks = [int(np.random.default_rng([0, i]).integers(2)) for i in range(200)]
    assert 0.4 < np.mean(picks) < 0.6  # each source half the time, though one has 9x the frames


def test_mixed_sources_train_a_few_iterations(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    labs = [touching_discs(rng, (80, 96), 10) for _ in range(3)]
    images, gt = write_ctc(tmp_path, "01", [render(rng, x) for x in labs], dict(enumerate(labs)))
    sd = stardist_folder(tmp_path / "sd", [(64, 64), (120, 100), (90, 70), (70, 130)])
    cp = cellpose_folder(tmp_path / "cp", 2)
    out = tmp_path / "w" / "mix"
    result = CliRunner().invoke(app, ["train", str(images), str(gt), str(sd), str(cp), "--out", str(out),
                                      "--iterations", "4", "--val-interval", "2", "--crop", "32", "--workers", "1",
                                      "--device", "cpu", "--ema", "0.9"])
    assert result.exit_code == 0, result.output
    _, meta = modelfile.load(out)
    assert meta.training["config"]["ema"] == 0.9
    recorded = meta.training["data"]["sources"]
    assert [(s["layout"], s["path"]) for s in recorded] == [("ctc", str(images)), ("stardist", str(sd)), ("cellpose", str(cp))]
    assert recorded[0]["gt"] == str(gt)
    names = meta.training["train_frames"] + meta.training["val_frames"]
    assert {n.split(":")[0] for n in names} == {"01", "sd", "cp"}
    assert [r["iteration"] for r in curves.read_csv(output_paths(out)["log"])] == [2, 4]
    # afterwards the outline is chosen on every validation frame, found again in all three layouts
    chosen, val_names = meta.training["outline_choice"], meta.training["val_frames"]
    assert len(chosen["frames"]) == len(val_names) and {n.split(":")[0] for n in val_names} == {"01", "sd", "cp"}
    assert {n.split(":")[-1] for n in val_names if n.startswith("01:")} <= set(chosen["frames"])
    assert "outline " in result.output and meta.post.outline == chosen["outline"]
    # and how it sizes cells larger than its own, measured there first (too few here: unset)
    assert "large cells: " in result.output and meta.large_cell_ratio == meta.training["large_cell_sizing"]["ratio"]
    # and last whether to rejoin cut cells, on the same frames
    assert "rejoin cut large cells: " in result.output and meta.post.rejoin == meta.training["rejoin_choice"]["rejoin"]
    assert meta.training["rejoin_choice"]["frames"] == chosen["frames"]


@pytest.mark.slow
def test_dsb_training_memory_stays_bounded(shared_data: Path, tmp_path: Path) -> None:
    """The 479 DSB images train with a resident set well under 4 GiB (main process and worker)."""
    code = (
        "import resource, sys\n"
        "from gruunet_cli.cli import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print('RSS', me, kids)\n"
    )
    args = ["train", str(shared_data / "DSB2018-fluo" / "train"), "--out", str(tmp_path / "m"), "--iterations", "3",
            "--val-interval", "3", "--val-fraction", "0.01", "--crop", "64", "--workers", "1", "--scale-to", "17",
            "--device", "cpu", "--no-choose-outline"]  # training's memory; the choices after it are not part of it
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = [x for x in out.stdout.splitlines() if x.startswith("RSS")][-1]
    main_kib, worker_kib = map(int, line.split()[1:])
    assert main_kib < 3 * 2**20 and worker_kib < 2 * 2**20, line
