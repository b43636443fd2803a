"""A 3×3 reflection-padded convolution of a nearest-upsampled input, computed at the coarse scale.

GRUU-Net feeds each GRU step the dense unit's output ``x`` upsampled by nearest neighbour from
the unit's scale 1/p to full resolution, and the GRU's first convolution ``W * x`` (3×3, 32 → 96
channels) is half of a step's arithmetic. On the upsampled image every p×p block is constant,
so each full-resolution output pixel sees at most 2×2 distinct coarse pixels: along one axis the
first row of a block reads coarse rows i-1 (kernel tap 0) and i (taps 1 + 2), the last row reads
i (taps 0 + 1) and i+1 (tap 2), the rows between read only i (all three taps). So the output is
at most 3×3 "phase types" of convolutions with summed taps at the coarse scale (2×2 types for
p = 2), each broadcast over its rows and columns of every block: the same function, at 1/p² of
the cost for its coarse part (p = 2: 4/9 of the taps; p = 16: ~1/50). Reflection padding of the
upsampled image is replication padding of the coarse one (for p ≥ 2 the reflected row lies in
the same block as the border row). 2D only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Switch for side-by-side measurements (`gruunet bench stages`) and the FLOP count of the plain pass.
ENABLED = True
# Smallest factor it is used for: at p = 2 its four 2×2 convolutions save 5/9 of the taps but ran
# at a lower rate, and measured no faster than the upsampled input at 1024².
MIN_FACTOR = 4

# Along one axis: per phase type, (first padded coarse row, groups of kernel taps summed per coarse tap).
_FIRST = (0, ((0,), (1, 2)))  # block row 0: coarse rows i-1 | i
_MIDDLE = (1, ((0, 1, 2),))  # block rows 1 .. p-2: coarse row i
_LAST = (1, ((0, 1), (2,)))  # block row p-1: coarse rows i | i+1


def _types(p: int) -> list[tuple[tuple[int, tuple[tuple[int, ...], ...]], slice]]:
    """Phase types along one axis for factor ``p``: (taps, block rows they cover)."""
    if p == 2:
        return [(_FIRST, slice(0, 1)), (_LAST, slice(1, 2))]
    return [(_FIRST, slice(0, 1)), (_MIDDLE, slice(1, p - 1)), (_LAST, slice(p - 1, p))]


def coarse(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: int) -> list[list[torch.Tensor]]:
    """The phase-type outputs of conv3x3_reflect(nearest_upsample(x, p)) at the coarse scale.

    x: (B, C_in, h, w); weight: (C_out, C_in, 3, 3). Returns a grid [row type][column type] of
    (B, C_out, h, w) tensors (2×2 for p = 2, else 3×3), for `expand`.
    """
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (B, C_in, h + 2, w + 2)
    h, w = x.shape[2:]
    grid = []
    for (r0, rows), _ in _types(p):
        line = []
        for (c0, cols), _ in _types(p):
            k = torch.stack([torch.stack([weight[:, :, list(gr)][:, :, :, list(gc)].sum((2, 3)) for gc in cols], -1)
                             for gr in rows], -2)  # (C_out, C_in, len(rows), len(cols))
            src = padded[..., r0:r0 + h + len(rows) - 1, c0:c0 + w + len(cols) - 1]
            line.append(F.conv2d(src, k.contiguous(memory_format=torch.channels_last), bias))
        grid.append(line)
    return grid


def expand(grid: list[list[torch.Tensor]], p: int, rows: tuple[int, int]) -> torch.Tensor:
    """Rows ``lo:hi`` of the full-resolution convolution from `coarse`'s grid: (B, C_out, hi - lo, W)."""
    lo, hi = rows
    c0, c1 = lo // p, -(-hi // p)
    first = grid[0][0]
    b, c, _, w = first.shape
    out = torch.empty((b, c, (c1 - c0) * p, w * p), dtype=first.dtype, device=first.device,
                      memory_format=torch.channels_last)
    blocks = out.view(b, c, c1 - c0, p, w, p)  # every (coarse row, block row, coarse col, block col)
    for (_, ys), line in zip(_types(p), grid):
        for (_, xs), part in zip(_types(p), line):
            blocks[:, :, :, ys, :, xs] = part[:, :, c0:c1, None, :, None]
    return out[:, :, lo - c0 * p:hi - c0 * p]
