"""Cell size: resizing images so cells have the training size, and ``--diameter auto``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import NUCLEI, STARDIST2D, random_model_file, shrunk_validation_rows

from gruunet_cli.config import PostConfig
from gruunet_cli.evaluation import metrics
from gruunet_cli.inference import scale, segment
from gruunet_cli.inference.passes import SharedPasses
from gruunet_cli.tools import demo


def discs(centres: list[tuple[int, int]], r: float, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(centres, start=1):
        lab[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = k
    return lab


def test_fragments_are_told_from_whole_cells_by_how_they_scale() -> None:
    """Whole cells keep their diameter in original pixels when the image is halved; fragments,
    sized by the network, double (hand-made probes)."""
    cells = discs([(16, 16), (44, 44)], 10)
    whole_half = scale.Probe(0.5, scale.labels_to_shape(cells, (32, 32)))
    pieces = discs([(10, 10), (10, 22), (22, 10), (22, 22), (40, 40), (40, 50)], 5)  # ~10 px fragments
    assert not scale.fragmented(scale.Probe(1.0, cells), whole_half)
    assert scale.fragmented(scale.Probe(1.0, pieces), whole_half)
    assert scale.Probe(0.5, whole_half.labels).diameter == pytest.approx(20, rel=0.1)


def test_whole_probe_is_the_largest_that_agrees_with_the_next() -> None:
    cells = discs([(16, 16), (44, 44)], 10)
    split = cells.copy()
    split[:, :16][split[:, :16] == 1] = 3  # the first cell cut in two
    at = lambda lab, s: scale.Probe(s, scale.labels_to_shape(lab, tuple(int(64 * s) for _ in range(2))))  # noqa: E731
    probes = [at(split, 0.5), at(cells, 0.25), at(cells, 0.125)]
    assert scale.agreement(probes[0], probes[1]) < scale.AGREE
    assert scale.whole_probe(probes).scale == 0.25  # the split probe is passed over
    assert scale.whole_probe([at(cells, 0.5), at(cells, 0.25)]).scale == 0.5


def test_whole_probe_rejoins_a_large_cell_it_cut_into_pieces() -> None:
    """Nine model-sized cells and one three times larger, which the probe cut into three pieces:
    its cells still agree with the next smaller probe's overall (the other nine are whole), so it
    is chosen, and the large cell comes back whole, as the smaller probe found it."""
    centres = [(16 + 32 * (k // 3), 16 + 32 * (k % 3)) for k in range(9)]
    cells = discs(centres, 8, (160, 160))
    cells[discs([(128, 128)], 24, (160, 160)) > 0] = 10
    cut = cells.copy()
    cut[(cells == 10) & (np.arange(160) < 120)] = 11  # three slices of the large cell, gaps between
    cut[(cells == 10) & (np.arange(160) >= 136)] = 12
    cut[:, [119, 120, 136, 137]] = np.where(cells[:, [119, 120, 136, 137]] == 10, 0, cut[:, [119, 120, 136, 137]])
    at = lambda lab, s: scale.Probe(s, scale.labels_to_shape(lab, (int(160 * s),) * 2))  # noqa: E731
    probes = [at(cut, 0.5), at(cells, 0.25)]
    assert scale.agreement(*probes) >= scale.AGREE
    assert scale.count(scale.whole_probe(probes).labels) == 12  # off unless the model file says so
    chosen = scale.whole_probe(probes, rejoin=True)
    assert chosen.scale == 0.5 and scale.count(chosen.labels) == 10
    jaccard = metrics.match_objects(scale.labels_to_shape(cells, (80, 80)), chosen.labels).jaccard
    assert jaccard.min() > 0.9, jaccard


def test_rejoined_takes_only_objects_mostly_inside_one_cell() -> None:
    """An object with under `WITHIN` of its area in any one cell of the smaller probe is not a
    piece of it; with more, it is, and joins the other piece of that cell (hand-made labels)."""
    smaller = np.zeros((20, 40), np.int32)
    smaller[2:18, 2:19], smaller[2:18, 21:38] = 1, 2
    probe = np.zeros_like(smaller)
    probe[2:18, 3:8], probe[2:18, 32:38] = 2, 3  # wholly inside cell 1 and cell 2
    probe[2:18, 10:30] = 1  # 9 of its 20 columns in cell 1, 9 in cell 2
    assert np.array_equal(scale.rejoined(scale.Probe(1.0, probe), scale.Probe(1.0, smaller)).labels, probe)
    probe[2:18, 10:30] = 0
    probe[2:18, 8:26] = 1  # 11 of 18 columns in cell 1: a piece of it
    out = scale.rejoined(scale.Probe(1.0, probe), scale.Probe(1.0, smaller)).labels
    assert scale.count(out) == 2
    assert len(np.unique(out[2:18, 2:26])) == 1 and out[2, 2] > 0  # cell 1 filled out, the piece's overhang kept
    assert out[2, 32] != out[2, 2]


@pytest.mark.skipif(not NUCLEI.exists(), reason="shipped weights not in this checkout")
def test_segment_rejoins_as_the_model_file_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """`gruunet-nuclei` records ``post.rejoin`` (chosen on its validation images), so `segment`
    rejoins the chosen probe's cut cells; ``--no-rejoin`` (an override) and a file without it do not."""
    from gruunet_cli.files import modelfile

    assert modelfile.read_meta(NUCLEI).post.rejoin and not modelfile.read_meta(STARDIST2D).post.rejoin
    calls: list[float] = []
    real = scale.rejoined
    monkeypatch.setattr(scale, "rejoined", lambda probe, smaller: calls.append(probe.scale) or real(probe, smaller))
    image, _ = shrunk_validation_rows(2.5)  # 60-px nuclei: the probes decide
    ways = [(segment.Predictor(NUCLEI, segment.SegmentOptions(device="cpu", threads=1, post_overrides=overrides)), expect)
            for overrides, expect in (({}, True), ({"rejoin": False}, False))]
    SharedPasses([p for p, _ in ways])  # the same passes; only what is done with the probes differs
    for p, expect in ways:
        calls.clear()
        p.labels(image)
        assert p.last_scale["factor"] in scale.PROBE_SCALES and bool(calls) == expect, (p.post.rejoin, calls, p.last_scale)


def test_labels_come_back_at_the_input_size_renumbered() -> None:
    labels = np.zeros((40, 40), np.uint16)
    labels[2:12, 2:12], labels[20, 20], labels[25:38, 25:38] = 3, 7, 9  # a 1-px object vanishes
    small = scale.labels_to_shape(labels, (20, 20))
    assert small.dtype == np.uint16 and np.unique(small).tolist() == [0, 1, 2]
    big = scale.labels_to_shape(small, (40, 40))
    assert metrics.match_objects(labels, big).jaccard[[0, 2]].min() > 0.85


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_diameter_brings_small_cells_to_the_training_size() -> None:
    """Cells at 0.4× the training size: telling `segment` their diameter, or letting it
    estimate it, segments them far better than taking the image as it is."""
    image, truth = shrunk_validation_rows(0.4)
    score = {}
    for d in (None, "auto", scale.object_diameter([truth])):
        labels = segment.Predictor(STARDIST2D, segment.SegmentOptions(device="cpu", diameter=d)).labels(image)
        assert labels.shape == image.shape and labels.dtype == np.uint16
        score[d] = metrics.seg_score(metrics.match_objects(truth, labels).jaccard)
    plain, auto, given = score.values()
    assert auto > plain + 0.05 and given > plain + 0.05, score


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_auto_diameter_leaves_training_sized_cells_alone() -> None:
    image, _ = shrunk_validation_rows(1.0)
    plain = segment.Predictor(STARDIST2D, segment.SegmentOptions(device="cpu", diameter=None)).labels(image)
    auto = segment.Predictor(STARDIST2D, segment.SegmentOptions(device="cpu")).labels(image)  # the default
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


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_diameter_applies_to_the_iterations_frame_too(tmp_path: Path) -> None:
    image, _ = shrunk_validation_rows(0.4)
    src = tmp_path / "02"
    src.mkdir()
    tifffile.imwrite(src / "t000.tif", image)
    opts = segment.SegmentOptions(device="cpu", diameter="auto")
    segment.run(src, tmp_path / "a", STARDIST2D, opts)
    segment.run(src, tmp_path / "b", STARDIST2D, opts, iterations_dir=tmp_path / "it")
    a, b = (tifffile.imread(tmp_path / d / "mask000.tif") for d in ("a", "b"))
    assert a.max() > 10 and np.array_equal(a, b)


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_auto_diameter_finds_large_cells() -> None:
    """Cells 2.5x the training size: auto must measure about the true diameter, shrink the
    image (not enlarge it because of fragments), and score about as well as the true diameter."""
    image, truth = shrunk_validation_rows(2.5)
    true_d = scale.object_diameter([truth])
    scores, used = {}, {}
    for d in ("auto", true_d):
        p = segment.Predictor(STARDIST2D, segment.SegmentOptions(device="cpu", diameter=d))
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


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_auto_diameter_measures_a_large_image_on_one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image of more than 2·WINDOW² pixels has its cells measured on the window with the most
    contrast (here the corner holding the nuclei, the rest dark noise), not by a whole first
    pass; the diameter agrees with the whole image's estimate and the ground truth, and the
    masks are those of the whole-image estimate."""
    base = tifffile.imread(demo.SAMPLE / "01" / "t000.tif").astype(np.float32)  # 512², nuclei ~24 px
    truth = tifffile.imread(demo.SAMPLE / "01_GT" / "SEG" / "man_seg000.tif")
    rng = np.random.default_rng(0)
    image = (np.median(base) + rng.normal(0, 1, (768, 768))).astype(np.float32)
    image[256:, 256:] = base
    shapes: list[tuple[int, ...]] = []
    results = {}
    predictors = [segment.Predictor(STARDIST2D, segment.SegmentOptions(device="cpu", threads=1)) for _ in range(2)]
    SharedPasses(predictors)  # both segment the whole image at full size: one pass (the shapes asked for still counted)
    for side, p in zip((256, 10**6), predictors):  # windowed; the whole image (above any size)
        monkeypatch.setattr(scale, "WINDOW", side)
        inner = p.probabilities
        monkeypatch.setattr(p, "probabilities", lambda im, *a, **k: shapes.append(im.shape) or inner(im, *a, **k))
        shapes.clear()
        results[side] = (p.labels(image), dict(p.last_scale), list(shapes))
    (win_labels, win_scale, win_shapes), (whole_labels, whole_scale, whole_shapes) = results.values()
    assert all(s.start >= 256 for s in scale.window(image, 256))  # inside the nuclei's corner
    assert win_shapes[0] == (256, 256) and (768, 768) not in whole_shapes[1:]  # measured on the window
    assert win_scale["diameter"] == pytest.approx(whole_scale["diameter"], rel=0.15), (win_scale, whole_scale)
    assert win_scale["diameter"] == pytest.approx(scale.object_diameter([truth]), rel=0.25)
    if win_scale["factor"] == whole_scale["factor"]:
        assert np.array_equal(win_labels, whole_labels)
    assert metrics.seg_score(metrics.match_objects(whole_labels, win_labels).jaccard) > 0.9


@pytest.mark.skipif(not NUCLEI.exists(), reason="shipped weights not in this checkout")
def test_auto_diameter_sees_fragments_of_the_models_own_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The generalist (17 px nuclei) cuts the bundled 01 image's 24-px nuclei into pieces of about
    its own size, which a first pass alone would take for cells that need no resizing: measured
    whole, the half-size probe finds the whole nuclei and auto segments there; measured on a
    window (the default for this 512² image) the image is shrunk too; both far better than as is."""
    image = tifffile.imread(demo.SAMPLE / "01" / "t000.tif")
    truth = tifffile.imread(demo.SAMPLE / "01_GT" / "SEG" / "man_seg000.tif")
    true_d = scale.object_diameter([truth])
    as_is = segment.Predictor(NUCLEI, segment.SegmentOptions(device="cpu", diameter=None, threads=1))
    autos = [segment.Predictor(NUCLEI, segment.SegmentOptions(device="cpu", threads=1)) for _ in range(2)]
    SharedPasses([as_is, *autos])  # a pass of the same image at the same scale is run once
    first = as_is.labels(image)
    assert scale.object_diameter([first]) < scale.TOLERANCE * as_is.meta.object_diameter  # fragments look model-sized
    plain = metrics.seg_score(metrics.match_objects(truth, first).jaccard)
    for side, p in zip((10**6, scale.WINDOW), autos):  # whole; a window
        monkeypatch.setattr(scale, "WINDOW", side)
        auto = metrics.seg_score(metrics.match_objects(truth, p.labels(image)).jaccard)
        assert p.last_scale["diameter"] == pytest.approx(true_d, rel=0.25), p.last_scale
        assert p.last_scale["factor"] < 1 / scale.TOLERANCE, p.last_scale  # shrunk
        if side > image.size:
            assert p.last_scale["factor"] in scale.PROBE_SCALES, p.last_scale  # by the probes
        assert auto > plain + 0.05, (side, auto, plain)


@pytest.mark.skipif(not NUCLEI.exists(), reason="shipped weights not in this checkout")
def test_auto_diameter_measures_a_stack_on_an_in_plane_window() -> None:
    """A 2D model's (Z, H, W) stack is measured on the same in-plane window as one of its slices
    would be, and segmented at the same scale (two identical slices: the same mask twice)."""
    from gruunet_cli.tools.bench_stages import tiled_sample

    plane = tiled_sample(400)  # above 2·WINDOW² pixels: measured on a window
    stack = np.stack([plane, plane])
    assert scale.window(stack) == scale.window(plane) is not None
    p2 = segment.Predictor(NUCLEI, segment.SegmentOptions(device="cpu", threads=1))
    flat = p2.labels(plane)
    p3 = segment.Predictor(NUCLEI, segment.SegmentOptions(device="cpu", threads=1))
    labels = p3.labels(stack)
    assert labels.shape == stack.shape
    assert p3.last_scale["factor"] == pytest.approx(p2.last_scale["factor"], rel=0.05), (p3.last_scale, p2.last_scale)
    assert np.array_equal(labels[0] > 0, labels[1] > 0)
    assert metrics.seg_score(metrics.match_objects(flat, labels[0]).jaccard) > 0.95


DSB_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "DSB2018-fluo" / "train"


@pytest.mark.skipif(not (NUCLEI.exists() and DSB_TRAIN.exists()), reason="needs ../shared/data and the shipped weights")
def test_large_cells_are_measured_again_at_the_chosen_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A validation image of `gruunet-nuclei` (never trained on), enlarged so its median nucleus
    is 60 px: the full-size pass measures pieces of the nuclei, and shrinking to their size leaves
    the nuclei too large for the network. Measured again at that factor, the nuclei are larger, and
    the image is shrunk to them: further than without the check, and with a higher SEG."""
    image = tifffile.imread(DSB_TRAIN / "images" / "8d29c5a03e05.tif").astype(np.float32)
    truth = tifffile.imread(DSB_TRAIN / "masks" / "8d29c5a03e05.tif")
    k = 60.0 / float(np.median(scale.object_diameters(truth)))
    image = scale.resize_plane(image, k)
    truth = scale.labels_to_shape(truth, image.shape)
    predictor = segment.Predictor(NUCLEI, segment.SegmentOptions(diameter="auto", threads=1, device="cpu"))
    SharedPasses([predictor])  # both ways start from the same full-size pass
    checked = predictor.labels(image)
    f_checked = predictor.last_scale["factor"]
    monkeypatch.setattr(scale, "LARGER", float("inf"))  # the first pass's measurement as it is
    unchecked = predictor.labels(image)
    f_unchecked = predictor.last_scale["factor"]
    assert f_checked < 0.8 * f_unchecked, (f_checked, f_unchecked)  # measured: 0.33 against 0.54
    seg = {name: metrics.seg_score(metrics.match_objects(truth, out).jaccard) for name, out in (("checked", checked), ("unchecked", unchecked))}
    # measured with holes filled: 0.866 against 0.842 in bf16, 0.896 against 0.870 in float32
    assert seg["checked"] > seg["unchecked"] + 0.015, seg


@pytest.mark.skipif(not (NUCLEI.exists() and DSB_TRAIN.exists()), reason="needs ../shared/data and the shipped weights")
def test_fragments_seen_on_a_window_get_the_whole_image_probed() -> None:
    """A validation image of `gruunet-nuclei` (54 nuclei, never trained on) enlarged to 60-px
    nuclei (512x640 -> 867x1084): its 256² window holds too few cells to measure, but shows them
    in fragments. The whole image's own first pass does not: at full size and at half size the
    network finds specks of about one size inside the nuclei. Probed because the window said so,
    the image is shrunk to ¼ (SEG 0.72 in float32); measured from its first pass alone it was
    enlarged 2.9x (0.28, session 38)."""
    name = "f728de042672"
    image = tifffile.imread(DSB_TRAIN / "images" / f"{name}.tif").astype(np.float32)
    truth = tifffile.imread(DSB_TRAIN / "masks" / f"{name}.tif")
    image = scale.resize_plane(image, 60.0 / scale.object_diameter([truth]))
    truth = scale.labels_to_shape(truth, image.shape)
    predictor = segment.Predictor(NUCLEI, segment.SegmentOptions(threads=1, device="cpu"))
    SharedPasses([predictor])  # the premise's two passes are the first two of `labels`
    first = predictor.labels_from(predictor.probabilities(image)[0], image)
    assert not scale.fragmented(scale.Probe(1.0, first), predictor.probe(image, 0.5))
    labels = predictor.labels(image)
    assert predictor.last_scale["factor"] == 0.25, predictor.last_scale
    seg = metrics.seg_score(metrics.match_objects(truth, labels).jaccard)
    assert seg > 0.65, seg
