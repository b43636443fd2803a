"""Percentile intensity normalisation, applied identically by `train` and `segment`."""

from __future__ import annotations

import numpy as np

from .config import NormConfig

# Percentiles of huge images are estimated on a regular subsample of at most this many pixels.
_MAX_SAMPLES = 1 << 22


def percentiles(image: np.ndarray, cfg: NormConfig) -> tuple[float, float]:
    """(low, high) intensity percentiles of an image (deterministic subsample above 4M pixels)."""
    flat = image.reshape(-1)
    step = max(1, flat.size // _MAX_SAMPLES)
    lo, hi = np.percentile(flat[::step], [cfg.p_low, cfg.p_high])
    return float(lo), float(hi)


def apply(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(image − lo) / (hi − lo) as float32 (a constant image maps to 0)."""
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    return ((image.astype(np.float32) - np.float32(lo)) * np.float32(scale)).astype(np.float32, copy=False)


def normalize(image: np.ndarray, cfg: NormConfig) -> np.ndarray:
    """Percentile-normalise one image: ``p_low`` → 0, ``p_high`` → 1, float32, same shape.

    >>> normalize(np.arange(101, dtype=np.uint16), NormConfig(0, 100))[[0, 50, 100]].tolist()
    [0.0, 0.5, 1.0]
    """
    return apply(image, *percentiles(image, cfg))
