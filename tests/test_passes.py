"""`inference.passes`: predictors of one model file that differ only in post-processing share their
network passes, and get exactly the labels each gets alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers import STARDIST2D, demo_quarter, shrunk_validation_rows

from gruunet_cli.inference import segment
from gruunet_cli.inference.passes import SharedPasses

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
