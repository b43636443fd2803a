"""U-Net baseline (Ronneberger et al. 2015), the comparison network of the paper's tables.

Differences from the original, for inputs of any size: 'same' reflection-padded convolutions
instead of valid ones (so no output cropping) and BN after each convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .layers import ConvBnAct, conv, he_init, max_pool, pad_to_multiple


class DoubleConv(nn.Sequential):
    """Two (3x3 conv → BN → LReLU)."""

    def __init__(self, dims: int, cin: int, cout: int) -> None:
        super().__init__(ConvBnAct(dims, cin, cout, 3), ConvBnAct(dims, cout, cout, 3))


class UNet(nn.Module):
    """Encoder of ``unet_depth`` poolings (channels base·2**level), decoder with transposed-conv
    upsampling and skip concatenation, 1x1 conv to class logits. (B, C, *S) → (B, classes, *S)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, b = cfg.dims, cfg.unet_base
        widths = [b * 2**i for i in range(cfg.unet_depth + 1)]
        self.down = nn.ModuleList(DoubleConv(d, cin, cout) for cin, cout in zip([cfg.in_channels, *widths[:-1]], widths))
        up_cls = nn.ConvTranspose2d if d == 2 else nn.ConvTranspose3d
        # pooling factor from level - 1 to level
        self.pools = [tuple(a // b for a, b in zip(cfg.pool(level), cfg.pool(level - 1)))
                      for level in range(1, cfg.unet_depth + 1)]
        self.up = nn.ModuleList(
            up_cls(widths[i + 1], widths[i], self.pools[i], stride=self.pools[i]) for i in reversed(range(cfg.unet_depth))
        )
        self.dec = nn.ModuleList(DoubleConv(d, 2 * widths[i], widths[i]) for i in reversed(range(cfg.unet_depth)))
        self.out = conv(d, widths[0], cfg.classes, 1)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, crop = pad_to_multiple(x, self.cfg.multiple)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = max_pool(x, self.pools[i - 1])
            x = block(x)
            skips.append(x)  # (B, base·2**i, *S/2**i)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return self.out(x)[crop]
