"""Inference in row bands for the local, full-resolution parts of a network.

At full resolution every GRUU-Net tensor of a large image is hundreds of MB, and each
element-wise step between two convolutions (sigmoid, add, BN, LReLU, cat) streams it through
main memory; a 512² image's tensors (32 MB) still mostly fit the cache. Computing those parts
band by band keeps the intermediates of one band in cache, so a large image costs per pixel
what a small one does (`gruunet bench segment`). The result is exact: each band is computed
with ``halo`` extra rows on either side (the receptive-field radius of the part) and only its
own rows are kept; at the image border the layers' own padding applies, as in one pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import layers

# Pixels per band (rows × the other in-plane axes): 2**17 keeps a 32-channel band at 16 MB.
BAND_PIXELS = 1 << 17


def by_rows(
    fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
    halo: int,
    *tensors: torch.Tensor,
    band_pixels: int | None = None,
    with_rows: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``fn(*tensors)`` computed in bands along axis -2 (H of (B, C, H, W) or (B, C, Z, H, W)).

    ``fn`` must be local: output row i depends only on input rows i - halo .. i + halo (plus the
    border padding), and all inputs and outputs share the spatial shape. Use it only for
    inference (no gradients, BN in eval mode), where that holds. ``with_rows``: ``fn`` is also
    given ``rows=(lo, hi)``, the rows of the whole its band covers (for inputs it builds itself).
    """
    height = tensors[0].shape[-2]
    row_pixels = tensors[0][0, 0].numel() // height
    rows = max(4 * halo, (band_pixels or BAND_PIXELS) // row_pixels)
    n = -(-height // rows)
    if n < 2:
        return fn(*tensors, rows=(0, height)) if with_rows else fn(*tensors)
    bounds = [i * height // n for i in range(n + 1)]  # even bands, none thinner than the halo
    outs: list[torch.Tensor] = []
    single = False
    for a, b in zip(bounds[:-1], bounds[1:]):
        lo, hi = max(0, a - halo), min(height, b + halo)
        band = [t[..., lo:hi, :] for t in tensors]
        layers.BAND_CUTS = (lo > 0, hi < height)
        try:
            res = fn(*band, rows=(lo, hi)) if with_rows else fn(*band)
        finally:
            layers.BAND_CUTS = (False, False)
        single = isinstance(res, torch.Tensor)
        parts = (res,) if single else tuple(res)
        if not outs:  # full-size outputs in the bands' memory format (channels-last stays so)
            outs = [_empty_full(p, height) for p in parts]
        for out, part in zip(outs, parts):
            out[..., a:b, :] = part[..., a - lo:b - lo, :]
    return outs[0] if single else tuple(outs)


def _empty_full(part: torch.Tensor, height: int) -> torch.Tensor:
    shape = (*part.shape[:-2], height, part.shape[-1])
    if part.dim() == 4 and part.is_contiguous(memory_format=torch.channels_last):
        fmt = torch.channels_last
    elif part.dim() == 5 and part.is_contiguous(memory_format=torch.channels_last_3d):
        fmt = torch.channels_last_3d
    else:
        fmt = torch.contiguous_format
    return torch.empty(shape, dtype=part.dtype, device=part.device, memory_format=fmt)
