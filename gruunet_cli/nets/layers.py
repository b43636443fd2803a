"""Dimension-agnostic building blocks shared by GRUU-Net and the U-Net baseline.

``dims`` = 2 works on (B, C, H, W), 3 on (B, C, Z, H, W). All convolutions use reflection
padding and He-normal initialisation for LReLU(0.2), as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2


# Off only to measure what `_ReflectRing` saves, side by side in one process (README, "Benchmarks").
REFLECT_RING = True
# Set by `bands.by_rows` while it computes a band: whether the first / last row (axis -2) of the
# band's inputs is a cut inside the image. Rows next to a cut are wrong whatever the padding and
# are dropped with the band's halo, so the ring skips them.
BAND_CUTS = (False, False)


class _ReflectRing:
    """A 'same' convolution with reflection padding that, at inference, does not build the padded
    copy of its input: the convolution pads with zeros itself (inside oneDNN, no copy), and only
    the outermost ``p`` rows of every face, the outputs that read padding, are computed again from
    thin reflection-padded slabs. At 1024² the padded copies took 12-18% of a pass (torch's
    profiler); the interior is the same arithmetic on the same values, the ring exact too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding[0]
        if (self.training or torch.is_grad_enabled() or not REFLECT_RING or self.padding_mode != "reflect"
                or min(x.shape[2:]) <= 2 * p):
            return super().forward(x)
        fn = F.conv2d if x.dim() == 4 else F.conv3d
        out = fn(x, self.weight, self.bias, 1, p)  # (B, C_out, *S), zero-padded border
        n = x.dim() - 2
        for axis in range(2, x.dim()):
            size = x.shape[axis]
            for start, before in ((0, True), (size - 2 * p, False)):
                if axis == x.dim() - 2 and BAND_CUTS[0 if before else 1]:
                    continue
                pads = [p] * (2 * n)  # F.pad order: last axis first
                pads[2 * (x.dim() - 1 - axis) + (1 if before else 0)] = 0
                slab = F.pad(x.narrow(axis, start, 2 * p), pads, mode="reflect")
                out.narrow(axis, 0 if before else size - p, p).copy_(fn(slab, self.weight, self.bias))
        return out


class ReflectConv2d(_ReflectRing, nn.Conv2d):
    """nn.Conv2d with `_ReflectRing` inference."""


class ReflectConv3d(_ReflectRing, nn.Conv3d):
    """nn.Conv3d with `_ReflectRing` inference."""


def conv(dims: int, cin: int, cout: int, kernel: int, bias: bool = True) -> nn.Module:
    """A ``kernel``-sized convolution with 'same' reflection padding."""
    if kernel == 1:
        return (nn.Conv2d if dims == 2 else nn.Conv3d)(cin, cout, 1, bias=bias)
    cls = ReflectConv2d if dims == 2 else ReflectConv3d
    return cls(cin, cout, kernel, padding=kernel // 2, padding_mode="reflect", bias=bias)


def batch_norm(dims: int, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def he_init(module: nn.Module) -> None:
    """He-normal weights for LReLU(0.2) on every convolution, zero biases, unit BN."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=LRELU_SLOPE, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def max_pool(x: torch.Tensor, factor: tuple[int, ...]) -> torch.Tensor:
    """Max pooling by an integer factor per spatial axis (identity for all-ones)."""
    if all(f == 1 for f in factor):
        return x
    return F.max_pool2d(x, factor) if x.dim() == 4 else F.max_pool3d(x, factor)


def resize(x: torch.Tensor, size: tuple[int, ...], mode: str) -> torch.Tensor:
    """Resample to ``size``: mode 'linear' is bilinear/trilinear, 'nearest' nearest-neighbour."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if mode == "linear":
        return F.interpolate(x, size=size, mode="bilinear" if x.dim() == 4 else "trilinear", align_corners=False)
    return F.interpolate(x, size=size, mode="nearest")


def pad_to_multiple(x: torch.Tensor, multiple: tuple[int, ...]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the spatial axes at their far end up to a multiple of ``multiple`` and at least twice it
    (so the coarsest feature map is 2 wide and a 3x3 reflection-padded conv still works).

    Returns the padded tensor and the slices that crop it back. Reflection where the axis is
    long enough, else edge replication.
    """
    spatial = x.shape[2:]
    extra = [max(s + (-s) % m, 2 * m) - s for s, m in zip(spatial, multiple)]
    crop = (slice(None), slice(None), *[slice(0, s) for s in spatial])
    if not any(extra):
        return x, crop
    pads: list[int] = []
    for e in reversed(extra):  # F.pad wants the last axis first
        pads += [0, e]
    mode = "reflect" if all(e < s for e, s in zip(extra, spatial)) else "replicate"
    return F.pad(x, pads, mode=mode), crop


class ConvBnAct(nn.Sequential):
    """conv → BN → LReLU(0.2)."""

    def __init__(self, dims: int, cin: int, cout: int, kernel: int) -> None:
        super().__init__(conv(dims, cin, cout, kernel, bias=False), batch_norm(dims, cout), nn.LeakyReLU(LRELU_SLOPE))
