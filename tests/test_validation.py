"""Validation during training scores exactly what `segment` + `evaluate` score (one path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import STARDIST2D
from synthetic import random_labels

from gruunet_cli.config import ModelConfig, ModelMeta, NormConfig, PostConfig
from gruunet_cli.evaluation.evaluate import evaluate
from gruunet_cli.files import modelfile
from gruunet_cli.files.sources import Layout, Source
from gruunet_cli.inference import segment
from gruunet_cli.nets.model import build_model
from gruunet_cli.tools import demo
from gruunet_cli.training import data
from gruunet_cli.training.validation import validate

CPU = torch.device("cpu")


def validation_seg(weights: Path, images: Path, gt: Path, dims: int) -> float:
    model, meta = modelfile.load(weights, CPU)
    refs = data.scan(Source(Layout.ctc, images, gt), dims).refs
    return validate(model, refs, CPU, meta.post, norm=meta.norm).seg


def segment_and_evaluate(weights: Path, images: Path, gt: Path, out: Path) -> float:
    segment.run(images, out, weights, segment.SegmentOptions(device="cpu", diameter=None))
    return evaluate(out, gt).seg


@pytest.mark.skipif(not STARDIST2D.is_file(), reason="shipped weights not in this checkout")
def test_2d_validation_equals_segment_and_evaluate(tmp_path: Path) -> None:
    seq = demo.SAMPLE / "02"
    val = validation_seg(STARDIST2D, seq, demo.SAMPLE / "02_GT", 2)
    seg = segment_and_evaluate(STARDIST2D, seq, demo.SAMPLE / "02_GT", tmp_path / "02_RES")
    assert val > 0.3  # a real model on real nuclei: the comparison is not between two zeros
    assert val == pytest.approx(seg, abs=1e-9)


def test_3d_validation_equals_segment_and_evaluate(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images, gt = tmp_path / "01", tmp_path / "01_GT" / "SEG"
    images.mkdir()
    gt.mkdir(parents=True)
    for t in range(2):
        labels = random_labels(rng, (6, 48, 40), 5, radius=(4, 8)).astype(np.uint16)
        image = (labels > 0) * 200.0 + rng.normal(20, 5, labels.shape)
        tifffile.imwrite(images / f"t{t:03d}.tif", image.astype(np.float32), photometric="minisblack")
        tifffile.imwrite(gt / f"man_seg{t:03d}.tif", labels, photometric="minisblack")
    torch.manual_seed(0)
    cfg = ModelConfig(dims=3, z_pool_levels=1, width=8, frdu_widths=(8, 16, 8), dense_layers=(1, 1, 1), growth=4)
    model = build_model(cfg)
    weights = tmp_path / "m3d"
    modelfile.save(weights, model, ModelMeta(model=cfg, norm=NormConfig(), post=PostConfig(min_size=0, split=False)))
    val = validation_seg(weights.with_suffix(".safetensors"), images, tmp_path / "01_GT", 3)
    seg = segment_and_evaluate(weights.with_suffix(".safetensors"), images, tmp_path / "01_GT", tmp_path / "01_RES")
    assert val > 0  # an untrained network, but it matches some objects (measured: 0.039)
    assert val == pytest.approx(seg, abs=1e-9)
