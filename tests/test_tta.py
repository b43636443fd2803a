"""Test-time augmentation: the probability averaged over the 8 flips and 90° rotations of the plane."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import STARDIST2D, demo_quarter
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.files import modelfile
from gruunet_cli.inference.passes import SharedPasses
from gruunet_cli.inference.predict import plane_mean
from gruunet_cli.inference.segment import Predictor, SegmentOptions
from gruunet_cli.tools import outline

SAMPLE = Path(__file__).resolve().parents[1] / "ctc" / "sample" / "StarDist-nuclei-2D"


def test_plane_mean_averages_a_position_dependent_map_by_hand() -> None:
    """fn(x) = x · j (the column index) is not equivariant: turned back, the 8 views weigh each pixel
    by j, N-1-j, i and N-1-i twice each, whose mean is (N-1)/2 everywhere (hand-computed)."""
    n = 6
    x = np.random.default_rng(0).random((n, n)).astype(np.float32)
    cols = np.arange(n, dtype=np.float32)[None, :].repeat(n, 0)
    got = plane_mean(lambda v: (v * cols)[None], x)
    assert got.shape == (1, n, n) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], x * (n - 1) / 2, rtol=1e-6)
    stack = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)  # not square, slices kept apart
    np.testing.assert_allclose(plane_mean(lambda v: v[None] ** 2, stack)[0], stack**2, rtol=1e-6)


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_segment_tta_from_the_model_file_or_the_option(tmp_path: Path) -> None:
    """A model file with ``post.tta`` gives the mean of the plain model's probabilities of the 8
    views (each turned back); `segment --no-tta` and `--tta` override the file."""
    model, meta = modelfile.load(STARDIST2D)
    with_tta = modelfile.save(tmp_path / "tta", model, dataclasses.replace(meta, post=dataclasses.replace(meta.post, tta=True)))
    image_path, image = demo_quarter(tmp_path / "in")
    opts = SegmentOptions(diameter=None, threads=1, device="cpu", amp=False)
    plain = Predictor(STARDIST2D, opts)
    views = []
    for k in range(4):
        for flip in (False, True):
            v = np.rot90(image, k)
            v = v[:, ::-1] if flip else v
            p = plain.probabilities(np.ascontiguousarray(v))[0]
            views.append(np.rot90(p[:, ::-1] if flip else p, -k))
    got = Predictor(with_tta, opts).probabilities(image)[0]
    np.testing.assert_allclose(got, np.mean(views, axis=0), atol=1e-5)
    assert np.abs(got - plain.probabilities(image)[0]).max() > 1e-3  # the views differ
    runs = {}
    for name, args in (("file", []), ("no", ["--no-tta"]), ("plain+tta", ["--tta"])):
        weights = STARDIST2D if name == "plain+tta" else with_tta
        r = CliRunner().invoke(app, ["segment", str(image_path.parent), str(tmp_path / name), "--weights", str(weights),
                                     "--threads", "1", "--device", "cpu", "--diameter", "off", *args])
        assert r.exit_code == 0, r.output
        assert ("averaged over its 8 flips and rotations" in r.output) == (name != "no")  # the user is told why it is slower
        runs[name] = tifffile.imread(tmp_path / name / "mask000.tif")
    direct = Predictor(STARDIST2D, dataclasses.replace(opts, amp=True)).labels(image)
    assert np.array_equal(runs["no"], direct) and np.array_equal(runs["file"], runs["plain+tta"])
    assert not np.array_equal(runs["file"], runs["no"])


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
@pytest.mark.parametrize("drawn_with_tta", [True, False])
def test_choose_tta_keeps_what_drew_the_reference(tmp_path: Path, drawn_with_tta: bool) -> None:
    """A reference drawn by `segment` with outline 0.6, with or without averaging: the choice that
    matches it exactly (SEG 1) is kept, recorded in the model file, and `segment` redraws it."""
    model, meta = modelfile.load(STARDIST2D)
    weights = modelfile.save(tmp_path / "m", model, meta)
    opts = SegmentOptions(diameter=12.0, threads=1, device="cpu")
    image_path, image = demo_quarter(tmp_path / "in")
    drawer = Predictor(weights, dataclasses.replace(opts, post_overrides={"outline": 0.6, "tta": drawn_with_tta}))
    passes = SharedPasses([drawer])  # the choice and `segment` below run these passes again where they average as the drawing did
    ref = drawer.labels(image)
    tifffile.imwrite(tmp_path / "man_seg000.tif", ref)
    choice = outline.choose_tta(weights, opts, [(image_path, tmp_path / "man_seg000.tif")], passes=passes)
    assert choice is not None and choice.tta == drawn_with_tta and choice.outline == 0.6
    kept, other = ("on", "off") if drawn_with_tta else ("off", "on")
    assert choice.seg_by_tta[kept] == pytest.approx(1.0) and choice.seg_by_tta[other] < 1.0 - outline.TTA_GAIN
    outline.record(weights, choice)
    assert modelfile.read_meta(weights).post.tta == drawn_with_tta
    assert modelfile.read_meta(weights).training["outline_choice"]["seg_by_tta"][kept] == 1.0
    redraw = Predictor(weights, opts)
    passes.add([redraw])
    assert np.array_equal(redraw.labels(image), ref)
    assert passes.runs == 2  # one plain pass and one averaged, each run once
    assert outline.choose_tta(weights, opts, [(image_path, tmp_path / "man_seg000.tif")], try_tta=False, passes=passes).seg_by_tta == {}
