"""`train`'s end step chooses ``post.rejoin`` on the validation frames (`tools.rejoin`)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import NUCLEI, STARDIST2D, shrunk_validation_rows

from gruunet_cli.evaluation import metrics
from gruunet_cli.files import modelfile
from gruunet_cli.inference import segment
from gruunet_cli.inference.passes import SharedPasses
from gruunet_cli.tools import rejoin

OPTS = segment.SegmentOptions(device="cpu", threads=1)


def copy_without_rejoin(weights: Path, tmp_path: Path) -> Path:
    out = tmp_path / weights.name
    shutil.copy(weights, out)
    model, meta = modelfile.load(out)
    modelfile.save(out, model, dataclasses.replace(meta, post=dataclasses.replace(meta.post, rejoin=False)))
    return out


def frame(tmp_path: Path, f: float) -> tuple[tuple[Path, Path], np.ndarray, np.ndarray]:
    """The bundled 01 image's validation rows enlarged ``f`` times, written as an (image, reference) pair."""
    image, truth = shrunk_validation_rows(f)
    pair = (tmp_path / "img.tif", tmp_path / "ref.tif")
    tifffile.imwrite(pair[0], image)
    tifffile.imwrite(pair[1], truth)
    return pair, image, truth


@pytest.mark.parametrize(("weights", "f", "expect"), [
    # measured: gruunet-nuclei cuts these 72-px nuclei at the ½ probe (SEG 0.711 → 0.718 rejoined; 0.700 → 0.715 before session 39);
    # gruunet-stardist2d's ¼ probe merges touching 48-px ones into convex blobs (0.820 → 0.733)
    (NUCLEI, 3.0, True), (STARDIST2D, 2.0, False)])
def test_the_better_way_on_the_validation_frames_is_recorded(tmp_path: Path, weights: Path, f: float, expect: bool) -> None:
    """Both ways are scored as `segment` runs them (``--rejoin`` / ``--no-rejoin``; the way not
    chosen by hand, the chosen one as `segment` follows the file), and the higher SEG is written
    into the file."""
    if not weights.exists():
        pytest.skip("shipped weights not in this checkout")
    w = copy_without_rejoin(weights, tmp_path)
    pair, image, truth = frame(tmp_path, f)
    passes = SharedPasses()  # kept for the check below: rewriting the file's post changes no pass
    choice = rejoin.choose(w, OPTS, [pair], passes)
    assert choice is not None and choice.rejoin is expect and choice.changed == ("ref.tif",)
    runs = passes.runs
    chosen, other = ("on", "off") if expect else ("off", "on")
    rejoin.record(w, choice)
    meta = modelfile.read_meta(w)
    assert meta.post.rejoin is expect and meta.training["rejoin_choice"]["rejoin"] is expect
    by_hand = segment.Predictor(w, dataclasses.replace(OPTS, post_overrides={"rejoin": not expect}))
    followed = segment.Predictor(w, OPTS)  # `segment` follows the file now
    passes.add([by_hand, followed])  # one file's weights: the same passes (test_passes.py)
    by_hand, followed = by_hand.labels(image), followed.labels(image)
    assert passes.runs == runs  # the passes the choice ran

    def seg(labels: np.ndarray) -> float:
        return metrics.seg_score(metrics.match_objects(truth, labels).jaccard)

    assert choice.seg == pytest.approx({chosen: seg(followed), other: seg(by_hand)})  # both ways scored as segment runs them
    assert abs(choice.seg["on"] - choice.seg["off"]) > 0.005  # a real difference, not a tie broken
    assert ("on" if expect else "off") in rejoin.describe(choice)


@pytest.mark.skipif(not NUCLEI.exists(), reason="shipped weights not in this checkout")
def test_frames_that_never_reach_the_probes_leave_it_off(tmp_path: Path) -> None:
    """Model-sized nuclei are not in pieces, so no probe is chosen and both ways give the same labels: a tie, and off stays.
    Without --diameter auto, or without frames, nothing is chosen and the file is left as it is."""
    w = copy_without_rejoin(NUCLEI, tmp_path)
    pair, _, _ = frame(tmp_path, 17 / 24)  # the 01 image's 24-px nuclei at the model's 17 px
    choice = rejoin.choose(w, OPTS, [pair])
    assert choice is not None and not choice.rejoin and choice.changed == () and choice.seg["on"] == choice.seg["off"] > 0.5
    assert rejoin.choose(w, dataclasses.replace(OPTS, diameter=None), [pair]) is None and rejoin.choose(w, OPTS, []) is None
    before = w.read_bytes()
    assert "left as the file had it" in rejoin.choose_and_record(w, OPTS, [])
    assert w.read_bytes() == before
