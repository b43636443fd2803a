"""Row-banded inference (nets/bands.py) gives the one-pass result exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gruunet_cli.config import ModelConfig
from gruunet_cli.nets import bands
from gruunet_cli.nets.bands import by_rows
from gruunet_cli.nets.model import build_model


def two_reflect_convs(x: torch.Tensor) -> torch.Tensor:
    """A local function of receptive-field radius 2 rows, reflection padding at the border."""
    w = torch.linspace(-1, 1, 9 * x.shape[1] * 3, dtype=x.dtype).reshape(3, x.shape[1], 3, 3)
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w)
    return F.conv2d(F.pad(torch.tanh(y), (1, 1, 1, 1), mode="reflect"), w[:, :3])


def test_bands_of_a_local_function_equal_one_pass() -> None:
    # float64: CI's CPU runs float32 convolutions in reduced precision (4.5e-4 apart between
    # band shapes in a CI run of stop 42), float64 ones are exact to rounding on every CPU.
    x = torch.randn(2, 4, 53, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = two_reflect_convs(x)
    for band in (8 * 17, 11 * 17, 40 * 17):  # 8 rows = 4 × halo, odd splits of 53 rows
        torch.testing.assert_close(by_rows(two_reflect_convs, 2, x, band_pixels=band), whole, rtol=0, atol=1e-12)


def test_bands_are_really_bands() -> None:
    """A non-local function (the image mean) gives another result in bands: the split happens."""
    x = torch.rand(1, 1, 64, 8) + torch.linspace(0, 1, 64)[:, None]
    whole = x - x.mean()
    banded = by_rows(lambda t: t - t.mean(), 0, x, band_pixels=16 * 8)
    assert (banded - whole).abs().max() > 0.1
    torch.testing.assert_close(by_rows(lambda t: t - t.mean(), 0, x, band_pixels=64 * 8), whole)  # one band


def test_tuple_outputs_keep_channels_last() -> None:
    x = torch.randn(1, 8, 40, 16).contiguous(memory_format=torch.channels_last)
    a, b = by_rows(lambda t: (t * 2, t[:, :3] + 1), 1, x, band_pixels=4 * 16)
    assert a.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a, x * 2)
    torch.testing.assert_close(b, x[:, :3] + 1)


@pytest.mark.parametrize("cfg, shape", [
    (ModelConfig(), (1, 1, 150, 70)),
    (ModelConfig(dims=3, z_pool_levels=1), (1, 1, 4, 70, 40)),
])
def test_network_in_bands_equals_one_pass(cfg: ModelConfig, shape: tuple[int, ...],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """GRUU-Net inference with its full-resolution parts in bands of a few rows (stem, FRDUs at
    level 0, every GRU step, head) equals the same network in one pass, 2D and 3D."""
    torch.manual_seed(0)
    # float64: this untrained network amplifies float32 rounding (which oneDNN's zero-padded
    # convolutions of `layers._ReflectRing` round differently per band shape) by ~1e4.
    model = build_model(cfg).double().eval()
    with torch.no_grad():
        for m in model.modules():  # trained-looking BN statistics, so BN is not the identity
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(shape, dtype=torch.float64)
        monkeypatch.setattr(bands, "BAND_PIXELS", 1 << 40)
        whole = model(x)
        monkeypatch.setattr(bands, "BAND_PIXELS", 12 * shape[-1])  # 12-row bands: many of them
        banded = model(x)
    torch.testing.assert_close(banded, whole, rtol=1e-9, atol=1e-6)  # outputs up to ~1e3


def test_training_mode_is_never_banded(monkeypatch: pytest.MonkeyPatch) -> None:
    """BN in training mode uses batch statistics, which bands would change: not banded (while
    the same call in eval mode is)."""
    calls = []

    def spy(fn, halo, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(halo)
        return by_rows(fn, halo, *args, **kwargs)

    monkeypatch.setattr("gruunet_cli.nets.model.by_rows", spy)
    model = build_model(ModelConfig()).train()
    with torch.no_grad():
        model(torch.randn(2, 1, 64, 64))
    assert not calls
    with torch.no_grad():
        model.eval()(torch.randn(2, 1, 64, 64))
    assert calls == [2] + [k for k in ModelConfig().dense_layers for k in (k, 2)] + [2]  # stem, (FRDU, GRU) × 9, head
