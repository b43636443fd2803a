"""The GRU's W x at the dense unit's scale (nets/upconv.py) is the convolution of the upsampled
input, and the band cuts the reflect ring skips (nets/layers.py, nets/bands.py) change nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gruunet_cli.config import ModelConfig
from gruunet_cli.nets import bands, layers, upconv
from gruunet_cli.nets.bands import by_rows
from gruunet_cli.nets.model import build_model


@pytest.mark.parametrize("p", [2, 4, 8, 16])
@pytest.mark.parametrize("coarse_hw", [(2, 2), (3, 5), (7, 4)])
def test_coarse_conv_equals_the_conv_of_the_upsampled_input(p: int, coarse_hw: tuple[int, int]) -> None:
    """Reference: torch's nearest upsampling, reflection padding and a 3×3 conv at full size, in
    float64; every band of rows, including ones that start or end inside a p×p block."""
    torch.manual_seed(p)
    x = torch.randn(2, 5, *coarse_hw, dtype=torch.float64)
    weight, bias = torch.randn(6, 5, 3, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    full = F.interpolate(x, scale_factor=p, mode="nearest")
    ref = F.conv2d(F.pad(full, (1, 1, 1, 1), mode="reflect"), weight, bias)  # (2, 6, h p, w p)
    grid = upconv.coarse(x, weight, bias, p)
    assert len(grid) == (2 if p == 2 else 3)
    height = coarse_hw[0] * p
    for rows in [(0, height), (1, height - 1), (p - 1, p + 1), (3, height)]:
        torch.testing.assert_close(upconv.expand(grid, p, rows), ref[:, :, rows[0]:rows[1]], rtol=0, atol=1e-12)


def test_network_with_coarse_wx_equals_the_upsampled_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole GRUU-Net at inference, in float64, one pass and in 12-row bands: coarse W x on
    (and really used) gives what the upsampled input gives."""
    torch.manual_seed(0)
    model = build_model(ModelConfig()).double().eval()
    with torch.no_grad():
        for m in model.modules():  # trained-looking BN statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(1, 1, 150, 70, dtype=torch.float64)
        used = []
        monkeypatch.setattr(upconv, "coarse", lambda *a: used.append(a[-1]) or coarse(*a))
        for band in (1 << 40, 12 * 70):
            monkeypatch.setattr(bands, "BAND_PIXELS", band)
            monkeypatch.setattr(upconv, "ENABLED", False)
            plain = model(x)
            monkeypatch.setattr(upconv, "ENABLED", True)
            torch.testing.assert_close(model(x), plain, rtol=1e-9, atol=1e-8)
    assert sorted(set(used)) == [4, 8, 16]  # levels 2-4 (p = 2 keeps the upsampled input: MIN_FACTOR)


coarse = upconv.coarse


def test_bands_tell_the_ring_which_rows_are_cuts() -> None:
    """Inside `by_rows` the first band's last row, the middle bands' both and the last band's
    first row are cuts; outside it, none."""
    seen = []
    by_rows(lambda t: seen.append(layers.BAND_CUTS) or t, 1, torch.zeros(1, 1, 30, 4), band_pixels=10 * 4)
    assert seen == [(False, True), (True, True), (True, False)] and layers.BAND_CUTS == (False, False)
    seen.clear()
    by_rows(lambda t: seen.append(layers.BAND_CUTS) or t, 1, torch.zeros(1, 1, 30, 4), band_pixels=1 << 20)
    assert seen == [(False, False)]  # one band: both ends are the image border
