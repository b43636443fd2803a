"""`inference.passes`: predictors of one model file that differ only in post-processing share their
network passes, and get exactly the labels each gets alone."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import STARDIST2D, demo_quarter, shrunk_validation_rows


from gruunet_cli.config import ModelMeta, PostConfig
from gruunet_cli.files import modelfile
from gruunet_cli.inference import segment
from gruunet_cli.inference.passes import SharedPasses
from gruunet_cli.tools import sizing

OPTS = segment.SegmentOptions(device="cpu", threads=1)


def ways() -> dict[str, segment.Predictor]:
    return {k: segment.Predictor(STARDIST2D, dataclasses.replace(OPTS, post_overrides={"rejoin": k == "on"})) for k in ("off", "on")}


def counted(predictor: segment.Predictor) -> list[tuple[int, ...]]:
    """The shapes of the network passes ``predictor`` runs from now on."""
    calls: list[tuple[int, ...]] = []
    run = predictor.probabilities

    def probabilities(image: np.ndarray, iterations: bool = False, norm: tuple[float, float] | None = None) -> np.ndarray:
        calls.append(image.shape)
        return run(image, iterations=iterations, norm=norm)

    predictor.probabilities = probabilities  # type: ignore[method-assign]
    return calls


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_two_ways_run_each_pass_once_and_label_as_alone() -> None:
    image = shrunk_validation_rows(2.0)[0][:, :512]  # 256x512, 48-px nuclei: the probes run
    alone = ways()
    calls = {k: counted(p) for k, p in alone.items()}
    expected = {k: p.labels(image) for k, p in alone.items()}
    assert calls["off"] == calls["on"] and len(calls["off"]) >= 3, calls  # window or first pass, and probes
    together = ways()
    passes = SharedPasses(list(together.values()))
    for k, p in together.items():
        assert np.array_equal(p.labels(image), expected[k]), k
    assert passes.runs == len(calls["off"])
    mine = together["on"].probabilities(image)
    mine[:] = -1  # what a caller does with its copy does not reach the cache
    assert passes.runs == len(calls["off"]) and together["off"].probabilities(image).min() >= 0
    passes.clear()
    assert not passes.cache


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_a_predictor_that_averages_flips_gets_its_own_passes(tmp_path: Path) -> None:
    _, image = demo_quarter(tmp_path)
    plain, tta = segment.Predictor(STARDIST2D, OPTS), segment.Predictor(STARDIST2D, dataclasses.replace(OPTS, post_overrides={"tta": True}))
    expected = {"plain": plain.probabilities(image), "tta": tta.probabilities(image)}
    assert not np.array_equal(expected["plain"], expected["tta"])
    passes = SharedPasses([plain, tta])
    got = {"plain": plain.probabilities(image), "tta": tta.probabilities(image)}
    assert passes.runs == 2 and all(np.array_equal(got[k], expected[k]) for k in got)


def test_the_cache_keeps_at_most_its_bound_dropping_the_least_recently_used() -> None:
    """A hand-made stand-in for the network (it only counts), so that the bound is checked exactly."""
    class Net:  # what `SharedPasses.add` needs of a predictor
        def __init__(self) -> None:
            self.model, self.opts, self.batch = torch.nn.Linear(1, 1), OPTS, 1
            self.meta, self.post, self.device = ModelMeta(), PostConfig(), torch.device("cpu")
            self.calls = 0

        def probabilities(self, image: np.ndarray, iterations: bool = False, norm: tuple[float, float] | None = None) -> np.ndarray:
            self.calls += 1
            return np.full((1, *image.shape), float(image.flat[0]), np.float32)

    net = Net()
    frames = [np.full((8, 8), v, np.float32) for v in range(3)]  # 256 bytes of probability each
    passes = SharedPasses([net], max_bytes=2 * 256)  # type: ignore[list-item]
    for v in (0, 1, 0, 2):  # 0 used again before 2 arrives: 1 is dropped
        assert net.probabilities(frames[v])[0, 0, 0] == v
    assert net.calls == 3 and passes.hits == 1 and passes.bytes == 512 and len(passes.cache) == 2
    net.probabilities(frames[0]), net.probabilities(frames[2])
    assert net.calls == 3
    net.probabilities(frames[1])
    assert net.calls == 4 and passes.bytes == 512
    big = np.zeros((16, 16), np.float32)  # larger than the bound: run, not kept, nothing dropped
    net.probabilities(big), net.probabilities(big)
    assert net.calls == 6 and len(passes.cache) == 2


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_trains_end_step_runs_each_pass_once_and_chooses_as_its_steps_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sizing.after_training` (sizing, then outline, then rejoin, each with the file as the step
    before wrote it) records exactly what the three steps record run one by one with passes of
    their own, and runs each distinct network pass once: as many as the inputs the steps alone
    passed to the network, fewer than the passes they ran."""
    pairs = []
    for f in (1.5, 2.0):  # 36-px nuclei, measured large (the ratio then sizes them); 48-px ones, probed (rejoin)
        image, ref = shrunk_validation_rows(f)
        pairs.append((tmp_path / f"{f}.tif", tmp_path / f"{f}_ref.tif"))
        tifffile.imwrite(pairs[-1][0], image[:, :200])
        tifffile.imwrite(pairs[-1][1], ref[:, :200])
    monkeypatch.setattr(sizing.outline, "validation_pairs", lambda w: pairs)
    inputs: list[bytes] = []
    network = segment.Predictor.probabilities

    def counted(self: segment.Predictor, image: np.ndarray, iterations: bool = False, norm: tuple[float, float] | None = None) -> np.ndarray:
        data = np.ascontiguousarray(image)
        inputs.append(repr((data.shape, data.dtype.str, iterations, norm)).encode() + hashlib.blake2b(data).digest())
        return network(self, image, iterations=iterations, norm=norm)

    monkeypatch.setattr(segment.Predictor, "probabilities", counted)
    files = {k: tmp_path / k / STARDIST2D.name for k in ("alone", "shared")}
    for f in files.values():
        f.parent.mkdir()
        shutil.copy(STARDIST2D, f)
        shutil.copy(STARDIST2D.with_suffix(".json"), f.with_suffix(".json"))
    w = files["alone"]
    measured = sizing.measure(segment.Predictor(w, OPTS), pairs, min_frames=1)
    sizing.record(w, measured)
    lines = [sizing.describe(measured), sizing.outline.choose_and_record(w, OPTS), sizing.rejoin.choose_and_record(w, OPTS, pairs)]
    alone = list(inputs)
    inputs.clear()
    monkeypatch.setattr(sizing, "measure", functools.partial(sizing.measure, min_frames=1))  # one frame of large cells is enough here
    shared_lines = sizing.after_training(files["shared"], OPTS)
    assert shared_lines == lines and "median of 1 validation frames" in lines[0] and "rejoin" in lines[2]
    metas = {k: modelfile.read_meta(f) for k, f in files.items()}
    assert metas["shared"].post == metas["alone"].post and metas["shared"].large_cell_ratio == metas["alone"].large_cell_ratio
    for key in ("large_cell_sizing", "outline_choice", "rejoin_choice"):
        assert metas["shared"].training[key] == metas["alone"].training[key], key
    assert sorted(inputs) == sorted(set(alone)) and len(inputs) < len(alone), (len(inputs), len(set(alone)), len(alone))
