"""Outlines on the image's own grid: `instances.outline` against hand-computed discs, and
`tools/outline.choose` scoring exactly what `segment` writes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import STARDIST2D, demo_quarter, random_model_file
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.config import PostConfig
from gruunet_cli.files import modelfile
from gruunet_cli.inference import instances, scale
from gruunet_cli.inference.passes import SharedPasses
from gruunet_cli.inference.segment import Predictor, SegmentOptions
from gruunet_cli.tools import demo, outline
from test_scale import shrunk_validation_rows

SAMPLE = Path(__file__).resolve().parents[1] / "ctc" / "sample" / "StarDist-nuclei-2D"


def cone(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """A probability falling linearly from 1 at ``centre`` to 0 at ``radius`` px: level v lies on
    the circle of radius (1 - v)·radius."""
    yy, xx = np.indices(shape, dtype=np.float64)
    return np.clip(1 - np.hypot(yy - centre[0], xx - centre[1]) / radius, 0, 1).astype(np.float32)


@pytest.mark.parametrize("level", [0.45, 0.5, 0.6, 0.7])
def test_outline_follows_the_level_of_the_resampled_probability(level: float) -> None:
    """Found at half size (a cone of radius 16 px on 40²), brought to 80² (radius 32 there): the
    object's area is π((1 - level)·32)² within 3% (hand-computed: 973, 804, 515, 290 px), closer
    than the nearest-neighbour labels of the coarse grid come to the 0.5 circle (772 of 804)."""
    low = cone((40, 40), (20, 20), 16)
    labels = scale.labels_to_shape(instances.probability_to_labels(low, PostConfig()), (80, 80))
    p = scale.probability_to_shape(low, (80, 80))
    out = instances.outline(labels, p, level, reach=int(np.ceil(1 / 0.5)) + 1)
    assert out.max() == 1 and out.dtype == labels.dtype
    assert (out == 1).sum() == pytest.approx(np.pi * ((1 - level) * 32) ** 2, rel=0.03)
    if level == 0.5:
        true = np.pi * 16**2
        assert abs((out == 1).sum() - true) < abs((labels == 1).sum() - true)


def test_outline_never_merges_or_adds_objects() -> None:
    labels = np.zeros((20, 20), np.uint16)
    labels[5:10, 2:9], labels[5:10, 9:16] = 1, 2  # touching
    p = np.full((20, 20), 0.9, np.float32)  # everything above the level: growth is bounded by reach
    out = instances.outline(labels, p, 0.5, reach=2)
    assert set(np.unique(out)) == {0, 1, 2}
    assert ((out == 1) & (labels == 2)).sum() == 0 and ((out == 2) & (labels == 1)).sum() == 0
    assert (out[labels > 0] > 0).all() and out[15:, :].max() == 0  # kept, and nothing far away added


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.indices(shape)
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


def test_split_depth_is_the_shallowest_that_keeps_cells_whole_and_apart() -> None:
    """A cell with a shallow neck (discs r 10 and 9, 14 px apart: `split_joined` cuts it at depths
    up to 1.5 px) and two cells joined by a 2-px bridge (a deep neck): depths 0.5–1.5 cut the
    first cell in two, 2–4 keep it whole and the pair apart (SEG 1), so 2 is chosen; 12 px
    also merges the pair."""
    shape = (64, 110)
    ref = np.zeros(shape, np.uint16)
    ref[disc(shape, (20, 18), 10) | disc(shape, (20, 32), 9)] = 1
    ref[disc(shape, (45, 70), 10)] = 2
    ref[disc(shape, (45, 91), 10)] = 3
    p = (ref > 0).astype(np.float32)
    p[45, 80:82] = 1.0  # the bridge
    choice = outline.choose_from([(p, 1.0, ref)], PostConfig(), 2, depths=(0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 12.0))
    by_depth = choice.seg_by_split_h
    assert choice.split_h == 2.0 and by_depth["2.0"] == by_depth["3.0"] == by_depth["4.0"] == pytest.approx(1.0)
    assert max(by_depth["0.5"], by_depth["1.0"], by_depth["1.5"]) < 0.9 and by_depth["12.0"] < 0.9
    assert instances.probability_to_labels(p, dataclasses.replace(PostConfig(), split_h=2.0)).max() == 3
    assert outline.choose_from([(p, 1.0, ref)], PostConfig(split=False), 2).split_h == 0.5  # no cutting: nothing to choose


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
@pytest.mark.parametrize("case, diameter", [("sample", 12.0), ("sample", "auto"), ("large cells", "auto")])
def test_choose_scores_what_segment_writes(tmp_path: Path, case: str, diameter: float | str) -> None:
    """A reference drawn by `segment` with outline 0.6 is matched exactly (SEG 1.0) only at 0.6, and
    the choice written into the model file makes `segment` write that reference again. With
    ``auto`` the cells are measured before the outline moves (or the factor would change); cells
    2.5x the training size are segmented by `auto`'s half-size probe, outlined too."""
    model, meta = modelfile.load(STARDIST2D)
    weights = modelfile.save(tmp_path / "m", model, meta)
    opts = SegmentOptions(diameter=diameter, threads=1, device="cpu")  # resized: outlines move
    image_path = demo_quarter(tmp_path / "in")[0]
    if case == "large cells":
        image_path = tmp_path / "large.tif"
        tifffile.imwrite(image_path, shrunk_validation_rows(2.5)[0][:, :640])  # half the rows' width: half the time
    image = tifffile.imread(image_path)
    drawer = Predictor(weights, dataclasses.replace(opts, post_overrides={"outline": 0.6}))
    passes = SharedPasses([drawer])  # the choice and `segment` below run these passes again: the outline is applied after them
    ref = drawer.labels(image)
    runs = passes.runs
    gt = tmp_path / "02_GT" / "SEG"
    gt.mkdir(parents=True)
    tifffile.imwrite(gt / "man_seg000.tif", ref)
    chooser = Predictor(weights, opts)
    passes.add([chooser])
    choice = outline.choose(chooser, [(image_path, gt / "man_seg000.tif")])
    assert passes.runs == runs  # the frame resized as `segment` resizes it: the drawing's passes
    assert choice is not None and choice.outline == 0.6 and choice.seg["0.6"] == pytest.approx(1.0)
    assert choice.seg["none"] < 0.99 and all(v < 0.99 for k, v in choice.seg.items() if k != "0.6")
    outline.record(weights, choice)
    assert modelfile.read_meta(weights).post.outline == 0.6
    # drawn with the model's split depth 0.5: the shallowest depth with SEG 1.0, recorded with the others
    assert choice.split_h == modelfile.read_meta(weights).post.split_h == 0.5
    assert set(modelfile.read_meta(weights).training["outline_choice"]["seg_by_split_h"]) == {str(d) for d in outline.SPLIT_DEPTHS}
    assert modelfile.read_meta(weights).training["outline_choice"]["frames"] == ["man_seg000.tif"]
    predictor = Predictor(weights, opts)
    passes.add([predictor])
    again = predictor.labels(image)
    assert np.array_equal(again, ref)
    if case == "large cells":
        assert predictor.last_scale["factor"] in scale.PROBE_SCALES


def test_segment_outline_option_is_checked(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["segment", str(SAMPLE / "02"), str(tmp_path / "o"), "--outline", "1.5"])
    assert r.exit_code == 2 and "--outline must be a probability level between 0 and 1 or 'off'" in r.output
    assert not (tmp_path / "o").exists()


def disc_frames(enlarged: int, others: int) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """(probability at the network's scale, factor, reference) per frame: one cone of radius 20 px
    in the frame's pixels. Frames enlarged 2x (cone drawn at 96² with radius 40) hold a disc of
    radius 8, the 0.6 level (hand-computed: (1 - 0.6)·20); the others (48², factor 1) a disc of
    radius 12, the 0.4 level."""
    frames = []
    for f, r in [(2.0, 8)] * enlarged + [(1.0, 12)] * others:
        n = int(48 * f)
        ref = disc((48, 48), (23.5, 23.5), r).astype(np.uint16)
        frames.append((cone((n, n), ((n - 1) / 2, (n - 1) / 2), 20 * f), f, ref))
    return frames


def test_enlarged_frames_get_their_own_outline_level(tmp_path: Path) -> None:
    """Three frames `segment` enlarges want level 0.6, three it does not 0.4: each group gets its
    level (SEG ~1 at it, below 0.8 at the other's), recorded in the model file; with only two enlarged frames one level is
    chosen for all and ``outline_enlarged`` stays unset."""
    choice = outline.choose_from(disc_frames(3, 3), PostConfig(), 2)
    assert (choice.outline, choice.outline_enlarged, choice.enlarged_frames) == (0.4, 0.6, 3)
    assert choice.seg["0.4"] > 0.97 and choice.seg_enlarged["0.6"] > 0.97  # pixels on the circle go either way
    assert choice.seg["0.6"] < 0.8 and choice.seg_enlarged["0.4"] < 0.8 and "none" not in choice.seg_enlarged
    assert choice.seg_by_split_h["0.5"] == pytest.approx((3 * choice.seg["0.4"] + 3 * choice.seg_enlarged["0.6"]) / 6)
    weights = random_model_file(tmp_path)
    outline.record(weights, choice)
    meta = modelfile.read_meta(weights)
    assert (meta.post.outline, meta.post.outline_enlarged) == (0.4, 0.6)
    assert meta.training["outline_choice"]["outline_enlarged"] == 0.6 and meta.training["outline_choice"]["enlarged_frames"] == 3
    assert "enlarged frames 0.6" in outline.describe(choice)
    single = outline.choose_from(disc_frames(2, 3), PostConfig(), 2)
    assert single.outline_enlarged is None and single.seg_enlarged == {} and single.outline in (0.4, 0.45, 0.5, 0.55, 0.6)


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_segment_outlines_enlarged_images_at_their_level(tmp_path: Path) -> None:
    """The demo image is enlarged (its 9-px nuclei to the model's size): with the file's
    ``outline_enlarged`` 0.7 `segment` writes what 0.7 as the only level writes, unlike 0.45;
    ``--outline 0.45`` applies 0.45 to every image, enlarged or not."""
    model, meta = modelfile.load(STARDIST2D)
    both = modelfile.save(tmp_path / "both", model, dataclasses.replace(meta, post=dataclasses.replace(
        meta.post, outline=0.45, outline_enlarged=0.7)))
    opts = SegmentOptions(diameter="auto", threads=1, device="cpu")
    image_path, image = demo_quarter(tmp_path / "in")
    predictor = Predictor(both, opts)
    got = predictor.labels(image)
    assert predictor.last_scale["factor"] > 1
    only = {v: Predictor(STARDIST2D, dataclasses.replace(opts, post_overrides={"outline": v, "outline_enlarged": None})).labels(image)
            for v in (0.45, 0.7)}
    assert np.array_equal(got, only[0.7]) and not np.array_equal(got, only[0.45])
    r = CliRunner().invoke(app, ["segment", str(image_path.parent), str(tmp_path / "o"), "--weights", str(both),
                                 "--outline", "0.45", "--threads", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert np.array_equal(tifffile.imread(tmp_path / "o" / "mask000.tif"), only[0.45])


def two_cones(heights: tuple[float, float]) -> np.ndarray:
    """Two cones of radius 16 px on 40×80, peaks of the given heights at the pixels (20, 20) and (20, 60)."""
    return np.maximum(heights[0] * cone((40, 80), (20, 20), 16), heights[1] * cone((40, 80), (20, 60), 16))


def test_peak_levels_outline_a_dim_object_at_the_same_fraction_of_its_height() -> None:
    """A bright cone (peak 1) and a dim one (peak 0.5): as a fraction of each object's peak, level
    0.5 lies on the circle of radius 8 px in both (the pixels of each with x² + y² < 64 from its
    peak: 193, against π·8² ≈ 201); as a plain level, 0.5 is the dim cone's peak, so that object
    vanishes."""
    p = two_cones((1.0, 0.5))
    labels = instances.probability_to_labels(p, PostConfig(threshold=0.1))
    assert labels.max() == 2
    out = instances.outline(labels, p, 0.5, reach=2, peak=True)
    assert out.max() == 2
    for i in (1, 2):
        assert (out == i).sum() == sum(x * x + y * y < 64 for x in range(-8, 9) for y in range(-8, 9)) == 193
    plain = instances.outline(labels, p, 0.5, reach=2)
    assert plain.max() == 1 and (plain == 1).sum() == (out == 1).sum()


def test_choose_prefers_peak_levels_when_cells_differ_in_brightness(tmp_path: Path) -> None:
    """References at half height of a bright and a dim cone (both found at threshold 0.1): no plain level fits both, a fraction
    of each object's peak does (0.5, SEG ~1); recorded as ``post.outline_peak``. Cones of one
    height tie, and the plain level is kept."""
    ref = (disc((40, 80), (20, 20), 8) + 2 * disc((40, 80), (20, 60), 8)).astype(np.uint16)
    frames = [(two_cones((1.0, 0.5)), 1.0, ref)] * 3
    choice = outline.choose_from(frames, PostConfig(threshold=0.1), 2)
    assert choice.peak and choice.outline == 0.5 and choice.seg["0.5"] > 0.97
    assert choice.seg_by_peak["peak"] > 0.97 and choice.seg_by_peak["level"] < 0.8
    weights = random_model_file(tmp_path)
    outline.record(weights, choice)
    meta = modelfile.read_meta(weights)
    assert meta.post.outline_peak and meta.post.outline == 0.5 and meta.training["outline_choice"]["outline_peak"]
    assert "of each object’s peak" in outline.describe(choice)
    even = outline.choose_from([(two_cones((1.0, 1.0)), 1.0, ref)] * 3, PostConfig(threshold=0.1), 2)
    assert not even.peak and even.outline == 0.5 and even.seg_by_peak["peak"] == even.seg_by_peak["level"]


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_segment_outlines_at_each_objects_peak_when_the_file_says_so(tmp_path: Path) -> None:
    """`segment` on the demo image's quarter (not resized) with ``outline_peak`` writes what
    `instances.outline(..., peak=True)` writes on the same probability, unlike the plain level;
    ``--outline`` sets a plain level."""
    image_path, image = demo_quarter(tmp_path / "in")
    opts = SegmentOptions(threads=1, device="cpu", diameter=None)
    predictor = Predictor(STARDIST2D, dataclasses.replace(opts, post_overrides={"outline": 0.5, "outline_peak": True}))
    p = predictor.probabilities(image)[0]
    want = instances.outline(predictor.labels_from(p, image), p, 0.5, reach=2, peak=True)
    got = predictor.labels(image)
    assert np.array_equal(got, want)
    plain = Predictor(STARDIST2D, dataclasses.replace(opts, post_overrides={"outline": 0.5, "outline_peak": False})).labels(image)
    assert not np.array_equal(got, plain)
    model, meta = modelfile.load(STARDIST2D)
    peaked = modelfile.save(tmp_path / "peak", model, dataclasses.replace(meta, post=dataclasses.replace(
        meta.post, outline=0.5, outline_enlarged=None, outline_peak=True)))
    r = CliRunner().invoke(app, ["segment", str(image_path.parent), str(tmp_path / "o"), "--weights", str(peaked),
                                 "--outline", "0.5", "--threads", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    ref = CliRunner().invoke(app, ["segment", str(image_path.parent), str(tmp_path / "q"), "--weights", str(STARDIST2D),
                                   "--outline", "0.5", "--threads", "1", "--device", "cpu"])
    assert ref.exit_code == 0, ref.output
    assert np.array_equal(tifffile.imread(tmp_path / "o" / "mask000.tif"), tifffile.imread(tmp_path / "q" / "mask000.tif"))
