"""Input normalisation's gamma: a signed power after the percentiles, recorded in the model file,
applied alike to training frames and to what `segment` feeds the network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gruunet_cli.config import ModelConfig, ModelMeta, NormConfig
from gruunet_cli.errors import UserError
from gruunet_cli.files import modelfile
from gruunet_cli.files.sources import Layout, Source
from gruunet_cli.inference import normalize
from gruunet_cli.inference.segment import Predictor, SegmentOptions
from gruunet_cli.nets.model import build_model
from gruunet_cli.training import data
from test_data import stardist_folder


def test_gamma_is_a_signed_power_of_the_percentile_normalised_image() -> None:
    image = np.array([[10.0, 12.0, 14.0, 110.0, 0.0]])
    linear = normalize.apply(image, 10.0, 110.0)  # 0, 0.02, 0.04, 1, -0.1
    lifted = normalize.apply(image, 10.0, 110.0, gamma=0.5)
    np.testing.assert_allclose(lifted, [[0.0, 0.02 ** 0.5, 0.2, 1.0, -(0.1 ** 0.5)]], rtol=1e-6)
    assert lifted.dtype == np.float32 and np.all(lifted[0, 1:3] >= 5 * linear[0, 1:3])  # dim pixels lifted
    np.testing.assert_array_equal(normalize.normalize(image, NormConfig(0, 100, gamma=0.5)),
                                  normalize.apply(image, 0.0, 110.0, 0.5))  # percentiles 0 and 100


def test_training_frames_take_the_configured_gamma(tmp_path: Path) -> None:
    ref = data.scan(Source(Layout.stardist, stardist_folder(tmp_path / "sd", [(48, 48)])), 2).refs[0]
    linear, lifted = ref.load(NormConfig()).image, ref.load(NormConfig(gamma=0.5)).image
    np.testing.assert_allclose(lifted, np.sign(linear) * np.sqrt(np.abs(linear)), rtol=1e-5, atol=1e-7)


def test_segment_feeds_the_network_the_files_gamma(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(width=8, growth=4)
    path = modelfile.save(tmp_path / "m", build_model(cfg).eval(), ModelMeta(model=cfg, norm=NormConfig(gamma=0.5)))
    predictor = Predictor(path, SegmentOptions(device="cpu", threads=1, diameter=None))
    seen: list[torch.Tensor] = []
    predictor.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    image = np.random.default_rng(0).integers(0, 4000, (40, 56)).astype(np.uint16)
    predictor.probabilities(image)
    lo, hi = normalize.percentiles(image, NormConfig())
    expected = normalize.apply(image, lo, hi, 0.5)
    torch.testing.assert_close(seen[0][0, 0, :40, :56], torch.from_numpy(expected))


@pytest.mark.parametrize("gamma", [0.0, -1.0, 50.0])
def test_a_model_file_with_a_bad_gamma_is_a_user_error(tmp_path: Path, gamma: float) -> None:
    path = modelfile.save(tmp_path / "m", build_model(ModelConfig()).eval(), ModelMeta())
    from safetensors.torch import load_file, save_file
    meta = json.loads(modelfile.dumps(ModelMeta()))
    meta["norm"]["gamma"] = gamma
    save_file(load_file(str(path)), str(path), metadata={"gruunet": json.dumps(meta)})
    with pytest.raises(UserError, match="gamma must be in 0.1..10"):
        modelfile.load(path)
