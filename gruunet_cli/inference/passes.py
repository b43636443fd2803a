"""One network pass per input for predictors of one model file that differ only in what they do
with its probabilities (`tools.rejoin` segments each validation frame with rejoining off and on:
the same passes, probes included, only `scale.whole_probe` differs), or that are made again from
the file after a choice was written into it (`train`'s end step: `tools.sizing.after_training`
runs the first passes, `tools.outline` those and the probes and final passes, `tools.rejoin` all
three again).

The network is deterministic for a given input on one device, so reusing a pass changes no label;
it halves the time of such a comparison. The cache holds at most `MAX_BYTES` of probabilities and
drops the least recently used first, so a long series of large stacks costs a bounded amount of
memory and still shares passes between calls close together (rejoin's two ways of one frame).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from .segment import Predictor

MAX_BYTES = 1 << 30  # of cached probabilities (1 GiB: every validation frame of a DSB-sized split, many times over)


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
    `signature`, the input's content, ``iterations`` and ``norm``, holding at most ``max_bytes``
    (least recently used dropped first; a pass larger than that is not kept)."""

    def __init__(self, predictors: Sequence[Predictor] = (), max_bytes: int = MAX_BYTES) -> None:
        self.cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.max_bytes = max_bytes
        self.bytes = 0  # held in the cache now
        self.runs = 0  # network passes actually run
        self.hits = 0  # passes answered from the cache
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
            if (p := self.cache.get(key)) is not None:
                self.hits += 1
                self.cache.move_to_end(key)
                return p.copy()  # callers own what they get, as from the network
            self.runs += 1
            p = run(image, iterations=iterations, norm=norm)
            self.keep(key, p)
            return p.copy()
        return probabilities

    def keep(self, key: tuple, p: np.ndarray) -> None:
        if p.nbytes > self.max_bytes:
            return
        self.cache[key] = p
        self.bytes += p.nbytes
        while self.bytes > self.max_bytes:
            self.bytes -= self.cache.popitem(last=False)[1].nbytes

    def clear(self) -> None:
        self.cache.clear()
        self.bytes = 0
