"""One network pass per input for predictors of one model file that differ only in what they do
with its probabilities (`tools.rejoin` segments each validation frame with rejoining off and on:
the same passes, probes included, only `scale.whole_probe` differs).

The network is deterministic for a given input on one device, so reusing a pass changes no label;
it halves the time of such a comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from .segment import Predictor


def signature(predictor: Predictor) -> tuple:
    """Everything `Predictor.probabilities` depends on besides its input: the weights (hashed),
    normalisation, flip/rotation averaging, device and tiling. Predictors share a pass only when
    these are equal, so one that averages flips never gets another's plain pass."""
    h = hashlib.blake2b()
    for name, t in predictor.model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    o = predictor.opts
    return (h.digest(), repr(predictor.meta.norm), predictor.post.tta, str(predictor.device), o.tile, o.tile_z,
            o.overlap, predictor.batch, o.amp)


class SharedPasses:
    """Wraps ``predictors``' `Predictor.probabilities` with one cache keyed by the predictor's
    `signature`, the input's content, ``iterations`` and ``norm``; `clear` it between images to
    bound memory."""

    def __init__(self, predictors: Sequence[Predictor]) -> None:
        self.cache: dict[tuple, np.ndarray] = {}
        self.runs = 0  # network passes actually run
        self.add(predictors)

    def add(self, predictors: Sequence[Predictor]) -> None:
        """Let more predictors (made later, e.g. from a file rewritten since) share the cache."""
        for predictor in predictors:
            predictor.probabilities = self.wrap(predictor.probabilities, signature(predictor))  # type: ignore[method-assign]

    def wrap(self, run, sig: tuple):  # noqa: ANN001, ANN202 - the bound method and its stand-in
        def probabilities(image: np.ndarray, iterations: bool = False,
                          norm: tuple[float, float] | None = None) -> np.ndarray:
            data = np.ascontiguousarray(image)
            key = (sig, data.shape, data.dtype.str, iterations, norm, hashlib.blake2b(data).digest())
            if key not in self.cache:
                self.runs += 1
                self.cache[key] = run(image, iterations=iterations, norm=norm)
            return self.cache[key].copy()  # callers own what they get, as from the network
        return probabilities

    def clear(self) -> None:
        self.cache.clear()
