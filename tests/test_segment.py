"""`segment`: CTC outputs, tiled = whole-image inference, atomic writes, options and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import random_model_file
from scipy import ndimage as ndi
from synthetic import render, touching_discs
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.config import ModelConfig, PostConfig
from gruunet_cli.files import ctc
from gruunet_cli.inference import segment


def test_masks_have_ctc_names_dtype_shape_and_unique_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "02"
    src.mkdir()
    shapes = {7: (50, 70), 12: (64, 33)}
    for t, shape in shapes.items():
        tifffile.imwrite(src / f"t{t:04d}.tif", render(rng, touching_discs(rng, shape, 8)))
    weights = random_model_file(tmp_path, post=PostConfig(threshold=0.45, min_size=1))
    out = tmp_path / "02_RES"
    written = segment.run(src, out, weights, segment.SegmentOptions(device="cpu", tile=32, overlap=8))
    assert sorted(p.name for p in written) == ["mask0007.tif", "mask0012.tif"]
    for t, shape in shapes.items():
        mask = tifffile.imread(out / f"mask{t:04d}.tif")
        assert mask.dtype == np.uint16 and mask.shape == shape
        ids = np.unique(mask)[1:]
        assert ids.tolist() == list(range(1, len(ids) + 1))
        for k in ids:  # one label = one connected object
            assert ndi.label(mask == k, np.ones((3, 3)))[1] == 1


def test_existing_masks_are_kept_unless_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "01"
    src.mkdir()
    tifffile.imwrite(src / "t000.tif", np.random.default_rng(0).random((40, 40)).astype(np.float32))
    weights = random_model_file(tmp_path)
    out = tmp_path / "01_RES"
    out.mkdir()
    sentinel = np.full((40, 40), 9, np.uint16)
    tifffile.imwrite(out / "mask000.tif", sentinel)
    assert segment.run(src, out, weights, segment.SegmentOptions(device="cpu")) == []
    assert (tifffile.imread(out / "mask000.tif") == 9).all()
    assert len(segment.run(src, out, weights, segment.SegmentOptions(device="cpu", overwrite=True))) == 1


def test_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "01"
    src.mkdir()
    for t in range(2):
        tifffile.imwrite(src / f"t{t:03d}.tif", np.random.default_rng(t).random((32, 32)).astype(np.float32))
    weights = random_model_file(tmp_path)
    real_imwrite = tifffile.imwrite
    calls = []

    def imwrite_then_die(path, data, **kw):
        calls.append(path)
        if len(calls) == 2:  # the second mask: write part of it, then Ctrl-C
            Path(path).write_bytes(b"II*\x00partial")
            raise KeyboardInterrupt
        return real_imwrite(path, data, **kw)

    monkeypatch.setattr(ctc.tifffile, "imwrite", imwrite_then_die)
    out = tmp_path / "01_RES"
    with pytest.raises(KeyboardInterrupt):
        segment.run(src, out, weights, segment.SegmentOptions(device="cpu"))
    assert sorted(p.name for p in out.iterdir()) == ["mask000.tif"]  # no partial mask001, no temp file
    assert tifffile.imread(out / "mask000.tif").shape == (32, 32)


def test_3d_stack_with_2d_model_and_3d_model(tmp_path: Path) -> None:
    src = tmp_path / "01"
    src.mkdir()
    tifffile.imwrite(src / "t000.tif", np.random.default_rng(0).random((3, 40, 36)).astype(np.float32), photometric="minisblack")
    w2 = random_model_file(tmp_path / "2d")
    w3 = random_model_file(tmp_path / "3d", ModelConfig(dims=3, z_pool_levels=1))
    for w, name in ((w2, "a"), (w3, "b")):
        segment.run(src, tmp_path / name, w, segment.SegmentOptions(device="cpu", tile=32, tile_z=2, overlap=8))
        mask = tifffile.imread(tmp_path / name / "mask000.tif")
        assert mask.shape == (3, 40, 36) and mask.dtype == np.uint16
        with tifffile.TiffFile(tmp_path / name / "mask000.tif") as tif:  # 3 slices, not an RGB picture
            assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK


def test_iterations_and_overlay_outputs(tmp_path: Path) -> None:
    src = tmp_path / "01"
    src.mkdir()
    tifffile.imwrite(src / "t000.tif", np.random.default_rng(0).random((40, 40)).astype(np.float32))
    weights = random_model_file(tmp_path)
    result = CliRunner().invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(weights),
                                      "--device", "cpu", "--iterations", str(tmp_path / "it"), "--overlay", str(tmp_path / "ov")])
    assert result.exit_code == 0, result.output
    maps = tifffile.imread(tmp_path / "it" / "iterations.tif")
    assert maps.shape == (9, 40, 40) and (maps >= 0).all() and (maps <= 1).all()
    assert sorted(p.name for p in (tmp_path / "it").glob("*.png")) == [f"iteration_{k}.png" for k in range(1, 10)]
    assert (tmp_path / "ov" / "overlay000.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    weights = random_model_file(tmp_path)
    r = runner.invoke(app, ["segment", str(tmp_path / "nope"), str(tmp_path / "res"), "--weights", str(weights)])
    assert r.exit_code == 2 and r.output.strip() == f"error: {tmp_path / 'nope'}: does not exist"
    src = tmp_path / "01"
    src.mkdir()
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(weights)])
    assert r.exit_code == 2 and "no images here (tNNN.tif frames, or .tif/.png/.jpg files)" in r.output
    tifffile.imwrite(src / "t000.tif", np.zeros((2, 3, 4, 5), np.float32), photometric="minisblack")
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(weights), "--device", "cpu"])
    assert r.exit_code == 2 and "t000.tif: expected a 2D or 3D grey image" in r.output
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "missing.safetensors: model file does not exist" in r.output
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(weights), "--diameter", "big"])
    assert r.exit_code == 2 and r.output.strip() == "error: --diameter must be 'auto', 'off' or a positive number of pixels, not 'big'"
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(weights), "--diameter", "12"])
    assert r.exit_code == 2 and "records no training cell size" in r.output




@pytest.mark.slow
def test_torchrun_splits_frames_and_gives_the_same_masks(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2 -m gruunet_cli segment` writes the masks one process writes."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(7)
    src = tmp_path / "02"
    src.mkdir()
    for t in range(5):
        tifffile.imwrite(src / f"t{t:03d}.tif", render(rng, touching_discs(rng, (48, 64), 6)))
    weights = random_model_file(tmp_path, post=PostConfig(threshold=0.45, min_size=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["segment", str(src), "--weights", str(weights), "--device", "cpu", "--diameter", "off"]
    one = subprocess.run([sys.executable, "-m", "gruunet_cli", *base[:2], str(tmp_path / "one"), *base[2:]],
                         capture_output=True, text=True, timeout=600, env=env)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "gruunet_cli", *base[:2], str(tmp_path / "two"), *base[2:]],
                         capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0 and two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    assert "wrote 5 mask(s)" in two.stdout
    for t in range(5):
        a, b = (tifffile.imread(tmp_path / d / f"mask{t:03d}.tif") for d in ("one", "two"))
        assert np.array_equal(a, b), t
