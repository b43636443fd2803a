"""`segment`: CTC outputs, tiled = whole-image inference, atomic writes, options and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi
from typer.testing import CliRunner

from gruunet_cli import ctc, demo, metrics, modelfile, scale, segment
from gruunet_cli.cli import app
from gruunet_cli.config import Arch, ModelConfig, ModelMeta, PostConfig
from gruunet_cli.model import build_model
from gruunet_cli.tiling import tiles
from synthetic import render, touching_discs


def random_model_file(tmp_path: Path, cfg: ModelConfig = ModelConfig(), post: PostConfig = PostConfig(threshold=0.5)) -> Path:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return modelfile.save(tmp_path / "model", model, ModelMeta(model=cfg, post=post))


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


def test_tiled_equals_whole_image(tmp_path: Path) -> None:
    """A random U-Net with a small receptive field: tiles that overlap by more than it agree with
    the whole image away from seams and almost everywhere else."""
    cfg = ModelConfig(arch=Arch.unet, unet_base=4, unet_depth=1)
    weights = random_model_file(tmp_path, cfg)
    image = np.random.default_rng(1).random((96, 130)).astype(np.float32) * 1000
    whole = segment.Predictor(weights, segment.SegmentOptions(device="cpu", tile=256)).probabilities(image)
    tiled = segment.Predictor(weights, segment.SegmentOptions(device="cpu", tile=48, overlap=24, batch=3)).probabilities(image)
    assert tiled.shape == whole.shape == (1, 96, 130)
    diff = np.abs(tiled - whole)[0]
    coverage = np.zeros(image.shape, int)
    for window in tiles(image.shape, (48, 48), (24, 24), cfg.multiple):
        coverage[window] += 1
    assert (coverage == 1).sum() > 1000
    assert diff[coverage == 1].max() < 1e-5  # inside a single tile: exactly the whole-image result
    assert diff.max() < 0.02  # in the blended overlaps: within a tiny tolerance


def test_gruunet_tiles_blend_without_seams(tmp_path: Path) -> None:
    weights = random_model_file(tmp_path)
    image = np.random.default_rng(2).random((80, 80)).astype(np.float32)
    p = segment.Predictor(weights, segment.SegmentOptions(device="cpu", tile=48, overlap=16)).probabilities(image)
    assert p.shape == (1, 80, 80) and np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()


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


def test_labels_come_back_at_the_input_size_renumbered() -> None:
    labels = np.zeros((40, 40), np.uint16)
    labels[2:12, 2:12], labels[20, 20], labels[25:38, 25:38] = 3, 7, 9  # a 1-px object vanishes
    small = scale.labels_to_shape(labels, (20, 20))
    assert small.dtype == np.uint16 and np.unique(small).tolist() == [0, 1, 2]
    big = scale.labels_to_shape(small, (40, 40))
    assert metrics.match_objects(labels, big).jaccard[[0, 2]].min() > 0.85


def shrunk_validation_rows(f: float) -> tuple[np.ndarray, np.ndarray]:
    """The bundled 01 image's validation rows (never trained on) at ``f`` times their size."""
    sample = demo.SAMPLE
    image = tifffile.imread(sample / "01" / "t000.tif")[384:].astype(np.float32)
    truth = tifffile.imread(sample / "01_GT" / "SEG" / "man_seg000.tif")[384:]
    shape = tuple(int(round(s * f)) for s in image.shape)
    return (scale.resize_plane(image, f), scale.labels_to_shape(truth, shape))


@pytest.mark.skipif(not demo.WEIGHTS.exists(), reason="shipped weights not in this checkout")
def test_diameter_brings_small_cells_to_the_training_size() -> None:
    """Cells at 0.4× the training size: telling `segment` their diameter, or letting it
    estimate it, segments them far better than taking the image as it is."""
    image, truth = shrunk_validation_rows(0.4)
    score = {}
    for d in (None, "auto", scale.object_diameter([truth])):
        labels = segment.Predictor(demo.WEIGHTS, segment.SegmentOptions(device="cpu", diameter=d)).labels(image)
        assert labels.shape == image.shape and labels.dtype == np.uint16
        score[d] = metrics.seg_score(metrics.match_objects(truth, labels).jaccard)
    plain, auto, given = score.values()
    assert auto > plain + 0.05 and given > plain + 0.05, score


@pytest.mark.skipif(not demo.WEIGHTS.exists(), reason="shipped weights not in this checkout")
def test_auto_diameter_leaves_training_sized_cells_alone() -> None:
    image, _ = shrunk_validation_rows(1.0)
    plain = segment.Predictor(demo.WEIGHTS, segment.SegmentOptions(device="cpu", diameter=None)).labels(image)
    auto = segment.Predictor(demo.WEIGHTS, segment.SegmentOptions(device="cpu")).labels(image)  # the default
    assert np.array_equal(plain, auto)


def test_auto_diameter_factor_is_bounded() -> None:
    assert scale.factor(23.6, 2.0, auto=False) == pytest.approx(11.8)  # a diameter the user gave counts as is
    assert scale.factor(23.6, 2.0, auto=True) == scale.MAX_AUTO  # an estimate from specks does not
    assert scale.factor(23.6, 200.0, auto=True) == 1 / scale.MAX_AUTO
    assert scale.factor(23.6, 9.0, auto=True) == pytest.approx(23.6 / 9.0)
    assert scale.factor(23.6, 20.0, auto=True) is None and scale.factor(None, 9.0, auto=True) is None


def test_auto_diameter_takes_a_model_without_a_training_size_as_is(tmp_path: Path) -> None:
    weights = random_model_file(tmp_path)
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    auto = segment.Predictor(weights, segment.SegmentOptions(device="cpu")).labels(image)
    off = segment.Predictor(weights, segment.SegmentOptions(device="cpu", diameter=None)).labels(image)
    assert np.array_equal(auto, off)


@pytest.mark.skipif(not demo.WEIGHTS.exists(), reason="shipped weights not in this checkout")
def test_diameter_applies_to_the_iterations_frame_too(tmp_path: Path) -> None:
    image, _ = shrunk_validation_rows(0.4)
    src = tmp_path / "02"
    src.mkdir()
    tifffile.imwrite(src / "t000.tif", image)
    opts = segment.SegmentOptions(device="cpu", diameter="auto")
    segment.run(src, tmp_path / "a", demo.WEIGHTS, opts)
    segment.run(src, tmp_path / "b", demo.WEIGHTS, opts, iterations_dir=tmp_path / "it")
    a, b = (tifffile.imread(tmp_path / d / "mask000.tif") for d in ("a", "b"))
    assert a.max() > 10 and np.array_equal(a, b)


@pytest.mark.skipif(not demo.WEIGHTS.exists(), reason="shipped weights not in this checkout")
def test_auto_diameter_finds_large_cells() -> None:
    """Cells 2.5x the training size: auto must measure about the true diameter, shrink the
    image (not enlarge it because of fragments), and score about as well as the true diameter."""
    image, truth = shrunk_validation_rows(2.5)
    true_d = scale.object_diameter([truth])
    scores, used = {}, {}
    for d in ("auto", true_d):
        p = segment.Predictor(demo.WEIGHTS, segment.SegmentOptions(device="cpu", diameter=d))
        scores[d] = metrics.seg_score(metrics.match_objects(truth, p.labels(image)).jaccard)
        used[d] = p.last_scale
    assert used["auto"]["diameter"] == pytest.approx(true_d, rel=0.3), used
    assert used["auto"]["factor"] < 1, used
    assert scores["auto"] >= scores[true_d] - 0.05, scores


def test_min_size_counts_in_the_images_own_pixels(tmp_path: Path) -> None:
    weights = random_model_file(tmp_path, post=PostConfig(min_size=15, split=False))
    p = segment.Predictor(weights, segment.SegmentOptions(device="cpu"))
    prob = np.zeros((40, 40), np.float32)
    prob[5:11, 5:11] = 1.0  # 36 px at a 2x enlarged scale: 9 px of the original image
    prob[20:30, 20:30] = 1.0  # 100 px there: 25 px of the original
    at_scale = p.labels_from(prob, prob, f=2.0)
    assert np.unique(at_scale[5:11, 5:11]).tolist() == [0] and at_scale[25, 25] > 0
    assert p.labels_from(prob, prob)[8, 8] > 0  # at the image's own scale 36 px stay
