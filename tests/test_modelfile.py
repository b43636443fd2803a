"""Model files: bit-for-bit round trip, the architecture rebuilt from the file alone, safe loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gruunet_cli.config import Arch, ModelConfig, ModelMeta, NormConfig
from gruunet_cli.errors import UserError
from gruunet_cli.files import modelfile
from gruunet_cli.nets.model import build_model


@pytest.mark.parametrize("cfg", [ModelConfig(shared_gru=False), ModelConfig(arch=Arch.unet, unet_base=8),
                                 ModelConfig(dims=3, z_pool_levels=1)])
def test_round_trip_is_bit_for_bit(tmp_path: Path, cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    model(torch.randn(2, 1, *([4] if cfg.dims == 3 else []), 32, 32))  # move BN running stats off their init
    model.eval()
    meta = ModelMeta(model=cfg, norm=NormConfig(p_low=2.0), training={"iterations": 3})
    path = modelfile.save(tmp_path / "m", model, meta)
    assert path.name == "m.safetensors" and (tmp_path / "m.json").is_file()
    loaded, loaded_meta = modelfile.load(tmp_path / "m")
    assert loaded_meta == meta
    x = torch.randn(1, 1, *([6] if cfg.dims == 3 else []), 40, 24)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_bad_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        modelfile.load(tmp_path / "missing")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(UserError, match="not a safetensors model file"):
        modelfile.load(tmp_path / "junk")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UserError, match="no gruunet configuration"):
        modelfile.load(tmp_path / "plain")
    model = build_model(ModelConfig(arch=Arch.unet, unet_base=8))
    path = modelfile.save(tmp_path / "u", model, ModelMeta(model=ModelConfig(arch=Arch.unet, unet_base=8)))
    # Metadata claiming another architecture than the tensors hold.
    from safetensors.torch import load_file
    save_file(load_file(str(path)), str(path), metadata={"gruunet": modelfile.dumps(ModelMeta())})
    with pytest.raises(UserError, match="do not fit"):
        modelfile.load(path)
