"""Precise BatchNorm statistics for validation and the saved model.

Training sees batches of two small crops centred on cells; `segment` sees whole images, mostly
background. BN's running averages (momentum 0.1 over such batches) describe neither: on GOWT1 a
model that scored SEG 0.85 with the image's own statistics scored 0.52 with its running ones.
Before each validation the running statistics are therefore recomputed as exact averages over
whole training frames in train mode (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm",
precise BN); the weights are untouched, and training goes on with batch statistics as before.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..config import NormConfig
from ..inference.tiling import plan_tile
from .data import Frame, FrameRef

# BN statistics need training mode, which runs without row bands (nets/bands.py): about 1.8 KiB
# per pixel, so a smaller window than `segment`'s tile keeps this pass under ~3 GiB.
TRAIN_MODE_TILE_PIXELS = 1536 * 1024


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def evenly(items: list, n: int) -> list:
    """``n`` items spread over the list (all when it is shorter).

    >>> evenly(list(range(10)), 3)
    [0, 4, 9]
    """
    if len(items) <= n:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def recalibrate(model: nn.Module, frames: list[Frame | FrameRef], device: torch.device, norm: NormConfig,
                max_frames: int = 8, tile_z: int = 64) -> int:
    """Replace every BN layer's running mean and variance by their average over up to
    ``max_frames`` whole frames (evenly spread; each cut to a first tile of at most 1.5 MP when larger).
    Returns the number of frames used. The model's train/eval mode is kept."""
    bns = batch_norms(model)
    chosen = evenly(frames, max_frames)
    if not bns or not chosen:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every frame counts the same
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            for item in chosen:
                image = (item.load(norm) if isinstance(item, FrameRef) else item).image
                th, tw = plan_tile(image.shape[-2:], 64, model.cfg.multiple[-1], budget=TRAIN_MODE_TILE_PIXELS)
                window = image[..., :th, :tw] if image.ndim == 2 else image[:tile_z, :th, :tw]
                model(torch.from_numpy(np.ascontiguousarray(window, np.float32))[None, None].to(device))
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(chosen)
