"""Configuration: the 3D pooling rule, defaults for new models, old files, bad values."""

from __future__ import annotations

import json

import pytest
import torch

from gruunet_cli.config import (
    Arch,
    ModelConfig,
    ModelMeta,
    default_model,
    dumps,
    from_dict,
)
from gruunet_cli.nets.model import build_model


@pytest.mark.parametrize("arch", [Arch.gruunet, Arch.unet])
def test_3d_pooling_rule_is_the_networks(arch: Arch) -> None:
    """Both networks pool as `ModelConfig.pool` says: with z_pool_levels=1 only the first pooling
    halves Z, so a (2, 16, 16) input (the `multiple`) is the smallest that passes, and works."""
    cfg = ModelConfig(arch=arch, dims=3, z_pool_levels=1, unet_base=4, unet_depth=4, width=8,
                      frdu_widths=(8, 8, 8, 8, 8, 8, 8, 8, 8), growth=4)
    assert cfg.multiple == (2, 16, 16) and cfg.pool(2) == (2, 4, 4) and cfg.pool(0) == (1, 1, 1)
    with torch.no_grad():
        out = build_model(cfg).eval()(torch.zeros(1, 1, 2, 16, 16))
    assert out.shape == (1, 2, 2, 16, 16)


def test_new_models_use_tanh_and_old_files_keep_lrelu() -> None:
    assert default_model(Arch.gruunet, 2).gru_activation == "tanh"
    written_before = json.loads(dumps(ModelMeta()))
    del written_before["model"]["gru_activation"]  # a file from before the field existed
    assert from_dict(ModelMeta, written_before).model.gru_activation == "lrelu"
    meta = ModelMeta(model=default_model(Arch.gruunet, 2))
    assert from_dict(ModelMeta, json.loads(dumps(meta))).model.gru_activation == "tanh"


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError):
        ModelConfig(gru_activation="relu")
    with pytest.raises(ValueError):
        ModelConfig(dims=4)
