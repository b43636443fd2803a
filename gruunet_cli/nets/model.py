"""GRUU-Net (Wollmann et al. 2019, Section 2.1, Fig. 1-3, Table 1): small blocks first, the network last.

Two streams: a full-resolution recurrent state ``h`` (32 channels) refined nine times by one
convolutional GRU, and a pooling stream ``o`` going down and up through scales
1, 1/2, 1/4, 1/8, 1/16, 1/8, 1/4, 1/2, 1. At each step a Full-Resolution Dense Unit (FRDU)
combines ``o`` with the max-pooled state and produces the GRU input ``x_t`` at full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Arch, ModelConfig
from . import upconv
from .bands import by_rows
from .layers import (
    LRELU_SLOPE,
    ConvBnAct,
    batch_norm,
    conv,
    he_init,
    lrelu,
    max_pool,
    pad_to_multiple,
    resize,
)


class ConvGRUCell(nn.Module):
    """Convolutional GRU (paper eq. 2-7) with 3x3 convolutions in place of matrix products.

    r = σ(W_r*x + U_r*h + b_r), z = σ(W_z*x + U_z*h + b_z),
    h̃ = σ_h(W_h*x + U_h*(r∘h) + b_h), h_t = z∘h + (1 − z)∘h̃, σ_h = LReLU (paper) or tanh.

    Args:
        dims: 2 or 3 spatial dimensions.
        channels: channels of both the input x and the state h.
    """

    def __init__(self, dims: int, channels: int, activation: str = "lrelu") -> None:
        super().__init__()
        self.act = lrelu if activation == "lrelu" else torch.tanh  # σ_h
        self.w = conv(dims, channels, 3 * channels, 3)  # W_r, W_z, W_h with biases b_r, b_z, b_h
        self.u_rz = conv(dims, channels, 2 * channels, 3, bias=False)  # U_r, U_z
        self.u_h = conv(dims, channels, channels, 3, bias=False)  # U_h

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x, h: (B, C, *S) → new state (B, C, *S)."""
        if not torch.is_grad_enabled():  # inference: in place, few new tensors
            return self.gated(self.w(x), h)
        wr, wz, wh = self.w(x).chunk(3, dim=1)  # 3 × (B, C, *S)
        ur, uz = self.u_rz(h).chunk(2, dim=1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz)
        h_tilde = self.act(wh + self.u_h(r * h))
        return torch.lerp(h_tilde, h, z)  # z∘h + (1 − z)∘h̃ in one pass

    def gated(self, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The step at inference from w = W x + b (B, 3C, *S: the r | z | h̃ parts) and h (B, C, *S)."""
        c = h.shape[1]
        # r and z together: one pass over 2C channels instead of two strided passes over C
        # (channels-last keeps a pixel's 3C values together, so a C-slice is strided).
        rz = w[:, :2 * c].add_(self.u_rz(h)).sigmoid_()
        r, z = rz[:, :c], rz[:, c:]
        h_tilde = self.u_h(r * h).add_(w[:, 2 * c:])  # r∘h and U_h's output are dense
        h_tilde = h_tilde.tanh_() if self.act is torch.tanh else F.leaky_relu_(h_tilde, LRELU_SLOPE)
        return torch.lerp(h_tilde, h, z)


class DenseLayer(nn.Sequential):
    """BN → LReLU → 3x3 conv: one layer of a densely connected block (Huang et al. 2017)."""

    def __init__(self, dims: int, cin: int, growth: int) -> None:
        super().__init__(batch_norm(dims, cin), nn.LeakyReLU(0.2), conv(dims, cin, growth, 3, bias=False))


class FRDU(nn.Module):
    """Full-Resolution Dense Unit (Fig. 3).

    concat(o, maxpool(h)) → BN + 1x1 conv embedding → dense block of ``layers`` layers →
    1x1 transition to ``width`` channels (the new ``o``) → 1x1 conv to the state width and
    nearest-neighbour upsampling to full resolution (the GRU input ``x``).

    Args:
        dims: 2 or 3.
        in_o: channels of the incoming pooling stream.
        state: channels of the recurrent state h (32).
        width: c_t, channels of the outgoing pooling stream.
        layers: k_t, dense layers.
        growth: channels each dense layer adds.
    """

    def __init__(self, dims: int, in_o: int, state: int, width: int, layers: int, growth: int) -> None:
        super().__init__()
        embed = 2 * growth  # ours: a narrow embedding keeps the unit near the paper's size
        self.embed = nn.Sequential(batch_norm(dims, in_o + state), conv(dims, in_o + state, embed, 1, bias=False))
        self.dense = nn.ModuleList(DenseLayer(dims, embed + i * growth, growth) for i in range(layers))
        self.transition = conv(dims, embed + layers * growth, width, 1)
        self.to_state = conv(dims, width, state, 1)

    def forward(self, o: torch.Tensor, h: torch.Tensor, pool: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """o: (B, in_o, *s) at the unit's scale, h: (B, state, *S) full resolution, with S = s · pool.

        Returns (o_t (B, width, *s), x_t (B, state, *S)).
        """
        o, x = self.core(o, max_pool(h, pool))
        return o, resize(x, tuple(h.shape[2:]), "nearest")  # x: (B, state, *S)

    def core(self, o: torch.Tensor, h_pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit at its own scale (local: ``len(self.dense)`` 3x3 convs deep).
        o: (B, in_o, *s), h_pooled: (B, state, *s) → (o_t (B, width, *s), x_t (B, state, *s))."""
        feats = [self.embedded(o, h_pooled)]  # (B, embed, *s)
        for layer in self.dense:
            feats.append(layer(torch.cat(feats, dim=1)))  # each (B, growth, *s)
        o = self.transition(torch.cat(feats, dim=1))  # (B, width, *s)
        return o, self.to_state(o)


    def embedded(self, o: torch.Tensor, h_pooled: torch.Tensor) -> torch.Tensor:
        """BN + 1x1 conv of concat(o, h_pooled): (B, in_o, *s), (B, state, *s) → (B, embed, *s).

        At inference (BN in eval mode) the BN is folded into the convolution, which is split in two
        so the concatenation is never built: conv(W, a∘x + b) = conv(W·diag(a), x) + W·b. At 1024²
        the embed's BN on the 96-288-channel concatenation took 1.0 of 9.0 s/Mpx (tensors over
        32 MiB are fresh, page-faulted memory each time); equal up to float rounding."""
        if self.training or torch.is_grad_enabled():
            return self.embed(torch.cat([o, h_pooled], dim=1))
        bn, pw = self.embed
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (in_o + state,)
        shift = bn.bias - bn.running_mean * scale
        weight = pw.weight * scale.view(1, -1, *[1] * (o.dim() - 2))  # (embed, in_o + state, 1, ...)
        bias = pw.weight.flatten(1) @ shift  # (embed,)
        c = o.shape[1]
        conv_fn = F.conv2d if o.dim() == 4 else F.conv3d
        out = conv_fn(o, weight[:, :c].contiguous(), bias)
        return out.add_(conv_fn(h_pooled, weight[:, c:].contiguous()))


class ResidualHead(nn.Module):
    """Residual block (two 3x3 convs, skip) → 1x1 conv to classes → BN. Returns logits."""

    def __init__(self, dims: int, channels: int, classes: int, bn: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(dims, channels, channels, 3)
        self.conv2 = nn.Sequential(conv(dims, channels, channels, 3, bias=False), batch_norm(dims, channels))
        self.out = conv(dims, channels, classes, 1)
        self.out_bn = batch_norm(dims, classes) if bn else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, C, *S) → logits (B, classes, *S)."""
        y = lrelu(h + self.conv2(self.conv1(h)))
        return self.out_bn(self.out(y))


def step_levels(steps: int) -> list[int]:
    """Pooling level of each step: 9 steps → [0, 1, 2, 3, 4, 3, 2, 1, 0] (scale 1/2**level)."""
    return [min(t, steps - 1 - t) for t in range(steps)]


class GRUUNet(nn.Module):
    """GRUU-Net for (B, in_channels, H, W) or (B, in_channels, Z, H, W) inputs of any size.

    ``forward`` returns class logits of the input's size (softmax gives the paper's output);
    with ``return_iterations=True`` it returns the list of the nine per-step logits (the head
    applied to every GRU state, Fig. 7), the last of which is the normal output.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if len(cfg.frdu_widths) != len(cfg.dense_layers):
            raise ValueError("frdu_widths and dense_layers must have the same length")
        self.cfg = cfg
        d, w = cfg.dims, cfg.width
        self.stem = ConvBnAct(d, cfg.in_channels, w, 5)  # starts both streams (ours)
        in_o = [w, *cfg.frdu_widths[:-1]]
        self.frdus = nn.ModuleList(
            FRDU(d, i, w, c, k, cfg.growth) for i, c, k in zip(in_o, cfg.frdu_widths, cfg.dense_layers)
        )
        n_gru = 1 if cfg.shared_gru else len(cfg.frdu_widths)
        self.grus = nn.ModuleList(ConvGRUCell(d, w, cfg.gru_activation) for _ in range(n_gru))
        self.head = ResidualHead(d, w, cfg.classes, cfg.head_bn)
        self.levels = step_levels(len(cfg.frdu_widths))
        he_init(self)

    def forward(self, x: torch.Tensor, return_iterations: bool = False) -> torch.Tensor | list[torch.Tensor]:
        x, crop = pad_to_multiple(x, self.cfg.multiple)
        # Inference computes the full-resolution parts in row bands (exact; see bands.py).
        banded = not self.training and not torch.is_grad_enabled() and x.device.type == "cpu"  # a GPU gains nothing

        def local(fn, halo: int, *args: torch.Tensor):  # noqa: ANN202 - fn's own result
            return by_rows(fn, halo, *args) if banded else fn(*args)

        h = o = local(self.stem, 2, x)  # (B, 32, *S)
        full = tuple(h.shape[2:])
        per_step = []
        for t, (frdu, level) in enumerate(zip(self.frdus, self.levels)):
            pool = self.cfg.pool(level)
            size = tuple(s // p for s, p in zip(full, pool))
            if any(a < b for a, b in zip(size, o.shape[2:])):  # down: max pooling by 2 (or 1 along a kept Z)
                o = max_pool(o, tuple(a // b for a, b in zip(o.shape[2:], size)))
            else:  # up: bilinear / trilinear
                o = resize(o, size, "linear")
            o, x_t = local(frdu.core, len(frdu.dense), o, max_pool(h, pool))  # banded at the two finest levels
            gru = self.grus[0 if self.cfg.shared_gru else t]
            if banded and pool[0] >= upconv.MIN_FACTOR and self.cfg.dims == 2 and upconv.ENABLED:  # W x at 1/p
                grid = upconv.coarse(x_t, gru.w.weight, gru.w.bias, pool[0])  # (see upconv.py)
                h = by_rows(lambda h_, rows: gru.gated(upconv.expand(grid, pool[0], rows), h_), 2, h, with_rows=True)
            else:
                h = local(gru, 2, resize(x_t, full, "nearest"), h)  # x_t: (B, 32, *S)
            if return_iterations:
                per_step.append(local(self.head, 2, h)[crop])
        if return_iterations:
            return per_step
        return local(self.head, 2, h)[crop]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network named by ``cfg.arch``, its weights channels-last: oneDNN's convolutions then
    skip converting every activation to and from their blocked layout, measured 1.3x faster for
    GRUU-Net inference and 1.15x per training step on the CPU (`gruunet bench model`); the
    results differ only by float rounding (`tests/test_model.py`)."""
    if cfg.arch == Arch.gruunet:
        model: nn.Module = GRUUNet(cfg)
    else:
        from .unet import UNet

        model = UNet(cfg)
    return model.to(memory_format=torch.channels_last if cfg.dims == 2 else torch.channels_last_3d)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
