"""Sliding-window inference with overlapping, linearly blended tiles in bounded memory.

Tiles form a Cartesian grid (per-axis start positions), and the blending window is a product of
per-axis ramps, so the sum of weights is the outer product of per-axis sums: no full-size
weight array is needed, only the output accumulator.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of the fewest tiles of ``tile`` px that cover ``length`` px overlapping by at
    least ``overlap`` px, spread evenly. Starts are multiples of ``align`` (the network's pooling
    grid, so a tile computes what the whole image would), except a last tile flush with the end.

    >>> tile_starts(100, 40, 10)
    [0, 30, 60]
    >>> tile_starts(1024, 512, 64, align=16)
    [0, 256, 512]
    >>> tile_starts(130, 48, 24, align=16)
    [0, 16, 32, 48, 64, 82]
    >>> tile_starts(30, 40, 10)
    [0]
    """
    if length <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    n = 1 + -(-(length - tile) // stride)
    starts = [i * (length - tile) // (n - 1) // align * align for i in range(n - 1)] + [length - tile]
    return sorted(set(starts))


# Default tile budget (in-plane pixels per forward pass): GRUU-Net inference on the CPU holds about
# 1.1 KiB per pixel (its full-resolution layers run in row bands, nets/bands.py; measured: 1024² →
# 1.37 GiB peak RSS, 0.28 of it the process before), so 2.5 MP keeps a pass under ~3 GiB.
TILE_PIXELS = 2560 * 1024


def plan_tile(shape: tuple[int, int], overlap: int, align: int = 16, budget: int = TILE_PIXELS) -> tuple[int, int]:
    """In-plane tile (H, W) for an image of ``shape``: the whole image when it fits ``budget``
    pixels (one pass, nothing computed twice), else the grid of fewest computed pixels whose
    tiles fit, each tile just large enough (on the ``align`` grid) to cover its share plus
    ``overlap``.

    >>> plan_tile((681, 681), 64)  # fits: one pass
    (681, 681)
    >>> plan_tile((2048, 2048), 64)  # 1×2 tiles of 2048 × 1056: 1.03x the pixels
    (2048, 1056)
    >>> plan_tile((1040, 3000), 64)  # 1×2 tiles of 1040 × 1536: 1.02x
    (1040, 1536)
    """
    def side(length: int, n: int) -> int:  # n tiles along an axis of ``length`` px
        if n == 1:
            return length
        share = -(-(length + (n - 1) * overlap) // n)  # ceil
        return min(length, -(-share // align) * align)

    best: tuple[int, tuple[int, int]] | None = None
    for n_h in range(1, 65):
        for n_w in range(1, 65):
            side_hw = (side(shape[0], n_h), side(shape[1], n_w))
            if side_hw[0] * side_hw[1] > budget:
                continue
            cost = (len(tile_starts(shape[0], side_hw[0], overlap, align)) * side_hw[0]
                    * len(tile_starts(shape[1], side_hw[1], overlap, align)) * side_hw[1])
            if best is None or cost < best[0]:
                best = (cost, side_hw)
            break  # more columns than the fewest that fit only add overlap
    if best is None:  # a budget below one aligned tile: the smallest aligned square
        return (min(shape[0], align), min(shape[1], align))
    return best[1]


def ramp(tile: int, overlap: int) -> np.ndarray:
    """1D blending weights: rising linearly over ``overlap`` px at both ends, 1 in between, > 0 everywhere.

    >>> [round(v, 3) for v in ramp(6, 2).tolist()]
    [0.333, 0.667, 1.0, 1.0, 0.667, 0.333]
    """
    i = np.arange(tile, dtype=np.float64)
    return np.minimum(1.0, np.minimum(i + 1, tile - i) / (overlap + 1)).astype(np.float32)


def tiles(shape: tuple[int, ...], tile: tuple[int, ...], overlap: tuple[int, ...],
          align: tuple[int, ...] | None = None) -> Iterator[tuple[slice, ...]]:
    """All tile windows (slices) of the grid, in C order."""
    align = align or (1,) * len(shape)
    per_axis = [tile_starts(s, min(t, s), o, a) for s, t, o, a in zip(shape, tile, overlap, align)]
    sizes = [min(t, s) for s, t in zip(shape, tile)]
    for starts in itertools.product(*per_axis):
        yield tuple(slice(a, a + n) for a, n in zip(starts, sizes))


def predict_tiled(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: tuple[int, ...],
    overlap: tuple[int, ...],
    channels: int = 1,
    batch: int = 1,
    prepare: Callable[[np.ndarray], np.ndarray] | None = None,
    align: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Run ``predict`` over overlapping tiles of ``image`` and blend the results.

    Args:
        predict: (B, *t) float32 tiles → (B, channels, *t) float32 outputs.
        image: (*S) array (any dtype; ``prepare`` turns a tile into float32, e.g. normalisation).
        tile, overlap: per spatial axis; a tile larger than the image shrinks to it.
        channels: output channels per pixel.
        batch: tiles per ``predict`` call.
        align: tile starts are multiples of this per axis (the network's input multiple).
    Returns:
        (channels, *S) float32.
    """
    shape = image.shape
    align = align or (1,) * image.ndim
    sizes = [min(t, s) for s, t in zip(shape, tile)]
    windows_1d = [ramp(n, min(o, n // 2)) for n, o in zip(sizes, overlap)]
    window = windows_1d[0]
    for w in windows_1d[1:]:
        window = np.multiply.outer(window, w)
    out = np.zeros((channels, *shape), np.float32)
    pending: list[tuple[slice, ...]] = []

    def flush() -> None:
        crops = np.stack([image[w] if prepare is None else prepare(image[w]) for w in pending]).astype(np.float32)
        for w, pred in zip(pending, predict(crops)):
            out[(slice(None), *w)] += pred * window
        pending.clear()

    for w in tiles(shape, tile, overlap, align):
        pending.append(w)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    # Sum of weights = outer product of the per-axis sums of the 1D ramps over tile starts.
    norm = None
    for axis, (s, n, w1) in enumerate(zip(shape, sizes, windows_1d)):
        total = np.zeros(s, np.float32)
        for a in tile_starts(s, n, overlap[axis], align[axis]):
            total[a:a + n] += w1
        norm = total if norm is None else np.multiply.outer(norm, total)
    out /= norm
    return out
