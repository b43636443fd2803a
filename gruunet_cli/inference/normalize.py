"""Percentile intensity normalisation, applied identically by `train` and `segment`."""

from __future__ import annotations

import numpy as np

from ..config import NormConfig

# Percentiles of huge images are estimated on a regular subsample of at most this many pixels.
_MAX_SAMPLES = 1 << 22


def percentiles(image: np.ndarray, cfg: NormConfig) -> tuple[float, float]:
    """(low, high) intensity percentiles of an image's finite pixels (deterministic subsample
    above 4M pixels). NaN and ±inf pixels (float images) are left out; none finite gives (0, 0).

    >>> percentiles(np.array([0.0, np.nan, 1.0, np.inf, 2.0]), NormConfig(0, 100))
    (0.0, 2.0)
    """
    flat = image.reshape(-1)
    step = max(1, flat.size // _MAX_SAMPLES)
    sample = flat[::step]
    if sample.dtype.kind == "f":
        sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(sample, [cfg.p_low, cfg.p_high])
    return float(lo), float(hi)


def apply(image: np.ndarray, lo: float, hi: float, gamma: float = 1.0) -> np.ndarray:
    """(image − lo) / (hi − lo) as float32, then sign(x)·|x|^gamma (a constant image maps to 0;
    NaN/inf pixels to 0, the low percentile, so one bad pixel cannot spread through the network).

    >>> apply(np.array([0.0, 1.0, 2.0, 5.0]), 1.0, 5.0, gamma=0.5).tolist()
    [-0.5, 0.0, 0.5, 1.0]
    """
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    out = ((image.astype(np.float32) - np.float32(lo)) * np.float32(scale)).astype(np.float32, copy=False)
    if image.dtype.kind == "f":
        out[~np.isfinite(out)] = 0.0
    if gamma != 1.0:
        out = np.copysign(np.abs(out) ** np.float32(gamma), out)
    return out


def normalize(image: np.ndarray, cfg: NormConfig) -> np.ndarray:
    """Percentile-normalise one image: ``p_low`` → 0, ``p_high`` → 1, float32, same shape.

    >>> normalize(np.arange(101, dtype=np.uint16), NormConfig(0, 100))[[0, 50, 100]].tolist()
    [0.0, 0.5, 1.0]
    """
    return apply(image, *percentiles(image, cfg), cfg.gamma)
