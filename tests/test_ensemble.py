"""Ensembles (`nets.ensemble`, `gruunet ensemble`): the mean of the members' probabilities, as one model file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import NUCLEI, random_model_file
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.config import Arch, ModelConfig, ModelMeta
from gruunet_cli.errors import UserError
from gruunet_cli.evaluation import metrics
from gruunet_cli.files import modelfile
from gruunet_cli.inference.segment import Predictor, SegmentOptions
from gruunet_cli.nets.ensemble import Ensemble
from gruunet_cli.nets.model import build_model
from gruunet_cli.tools import demo
from gruunet_cli.tools import ensemble as ens
from gruunet_cli.training.checkpoint import init_model_config

SMALL = ModelConfig(width=8, growth=4, frdu_widths=(8, 8, 8), dense_layers=(1, 1, 1))
runner = CliRunner()


def members(n: int, cfg: ModelConfig = SMALL) -> list[torch.nn.Module]:
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(build_model(cfg).eval())
    return out


@pytest.mark.parametrize("cfg", [SMALL, ModelConfig(arch=Arch.unet, unet_base=4, unet_depth=2)])
def test_the_ensemble_gives_the_mean_of_its_members_probabilities(cfg: ModelConfig) -> None:
    nets = members(3, cfg)
    x = torch.randn(2, 1, 32, 48)
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(1) for m in nets]).mean(0)  # each member on its own
        got = Ensemble(nets)(x).softmax(1)
    assert got.shape == expected.shape == (2, cfg.classes, 32, 48)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, nets[0](x).softmax(1), atol=1e-3)  # the members differ: the mean is not one of them


def test_each_gruunet_step_is_averaged_too() -> None:
    nets = members(2)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        steps = Ensemble(nets)(x, return_iterations=True)
        by_member = [m(x, return_iterations=True) for m in nets]
    assert len(steps) == len(by_member[0]) == len(SMALL.frdu_widths)  # one per GRU step
    for k, step in enumerate(steps):
        assert torch.allclose(step.softmax(1), (by_member[0][k].softmax(1) + by_member[1][k].softmax(1)) / 2, atol=1e-6)


def test_an_ensemble_file_loads_and_predicts_the_mean_through_segment(tmp_path: Path) -> None:
    """Written by `combine`, loaded back as an `Ensemble` (bit for bit); `segment`'s tiled path gives
    the mean of the member files' probabilities, and the file names its members."""
    a = random_model_file(tmp_path / "a", SMALL)
    torch.manual_seed(1)
    b = modelfile.save(tmp_path / "b" / "model", build_model(SMALL).eval(), ModelMeta(model=SMALL, post=modelfile.read_meta(a).post))
    out = ens.combine([a, b], tmp_path / "both")
    model, meta = modelfile.load(out)
    assert isinstance(model, Ensemble) and meta.members == 2 and len(model.members) == 2
    record = json.loads((tmp_path / "both.json").read_text())["training"]["ensemble"]
    assert [m["sha256"] for m in record] == [ens.sha256(a), ens.sha256(b)]
    image = np.random.default_rng(0).random((70, 90)).astype(np.float32) * 1000
    opts = SegmentOptions(device="cpu", threads=1, tile=48, overlap=16, diameter=None)  # tiles: the tiled path
    p = [Predictor(w, opts).probabilities(image)[0] for w in (a, b)]
    np.testing.assert_allclose(Predictor(out, opts).probabilities(image)[0], (p[0] + p[1]) / 2, atol=1e-5)


def test_members_that_cannot_be_averaged_are_one_line_errors(tmp_path: Path) -> None:
    a = random_model_file(tmp_path / "a", SMALL)
    other = random_model_file(tmp_path / "u", ModelConfig(arch=Arch.unet, unet_base=4, unet_depth=2))
    model, meta = modelfile.load(a)
    elsewhere = modelfile.save(tmp_path / "v" / "m", model, ModelMeta(model=SMALL, training={"val_frames": ["x:y"]}))
    bigger = modelfile.save(tmp_path / "d" / "m", model, ModelMeta(model=SMALL, object_diameter=30.0))
    c = modelfile.save(tmp_path / "c" / "m", model, meta)
    pair = ens.combine([a, c], tmp_path / "pair")
    cases = [([a], "at least two"), ([a, a], "named twice"), ([a, other], "architecture differs"),
             ([a, elsewhere], "validated on other frames"), ([a, bigger], "another cell size"),
             ([a, pair], "itself an ensemble"), ([a, tmp_path / "missing"], "does not exist")]
    for files, message in cases:
        r = runner.invoke(app, ["ensemble", *map(str, files), "--out", str(tmp_path / "out"), "--device", "cpu"])
        assert r.exit_code == 2, r.output
        assert message in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not list(tmp_path.glob("out*"))  # nothing written
    r = runner.invoke(app, ["ensemble", str(a), str(c), "--out", str(a), "--no-choose-outline"])
    assert r.exit_code == 2 and "overwrite" in r.output
    with pytest.raises(UserError, match="fine-tune one of its member files"):  # train --init
        init_model_config(pair, Arch.gruunet, 2)


@pytest.mark.skipif(not NUCLEI.exists(), reason="shipped weights not in this checkout")
def test_the_ensemble_chooses_its_post_processing_on_the_members_validation_frames(tmp_path: Path) -> None:
    """`gruunet ensemble` runs `train`'s end step on the members' validation frame; the SEG it records
    for the outline it chose is what `segment` then writes with the ensemble, scored against the
    reference. The second member is the generalist with every weight jittered by 5%."""
    src = tmp_path / "src"
    for d in ("images", "masks"):
        (src / d).mkdir(parents=True)
    image = tifffile.imread(demo.SAMPLE / "02" / "t000.tif")[64:192, 64:192]
    ref = tifffile.imread(demo.SAMPLE / "02_GT" / "SEG" / "man_seg000.tif")[64:192, 64:192]
    tifffile.imwrite(src / "images" / "q.tif", image)
    tifffile.imwrite(src / "masks" / "q.tif", ref)
    model, meta = modelfile.load(NUCLEI)
    training = {"data": {"sources": [{"layout": "stardist", "path": str(src), "gt": None, "st": None}], "val": []},
                "val_frames": ["src:q"]}
    first = modelfile.save(tmp_path / "m0" / "m", model, ModelMeta(model=meta.model, norm=meta.norm, post=meta.post,
                                                                    object_diameter=meta.object_diameter, training=training))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.parameters():
            t.mul_(1 + 0.05 * torch.randn(t.shape, generator=g))
    second = modelfile.save(tmp_path / "m1" / "m", model, modelfile.read_meta(first))
    r = runner.invoke(app, ["ensemble", str(first), str(second), "--out", str(tmp_path / "e"), "--device", "cpu", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "outline" in r.output and "rejoin" in r.output
    meta = modelfile.read_meta(tmp_path / "e")
    choice = meta.training["outline_choice"]
    assert choice["frames"] == ["q.tif"] and meta.members == 2
    labels = Predictor(tmp_path / "e", SegmentOptions(device="cpu", threads=1)).labels(image)
    seg = metrics.seg_score(metrics.match_objects(ref, labels).jaccard)
    best = max(choice["seg_by_split_h"].values())
    assert seg == pytest.approx(best, abs=1e-4) and seg > 0.5
