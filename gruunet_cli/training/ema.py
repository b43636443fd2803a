"""An exponential moving average of the weights (``--ema DECAY``), validated and saved instead of
the weights of the last step.

With batches of two crops, the weights after any one step are noisy: on DSB2018 consecutive
validations of one run scored 0.752, 0.741, 0.668, 0.766. Averaging the weights over the last
~1/(1 − decay) steps (Polyak averaging) removes most of that noise at no cost to training, which
still steps the raw weights. torch's `AveragedModel` keeps the average; BN statistics are not
averaged: the model's current ones are copied in and then recomputed (`bnstats`) before each
validation, as for the raw weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def decay_at(decay: float, n_averaged: int) -> float:
    """The decay used for the update after ``n_averaged`` earlier ones: ramped up as (1 + n)/(10 + n)
    so the random initial weights do not dominate the average of a short run.

    >>> [round(decay_at(0.999, n), 4) for n in (1, 10, 1000, 100_000)]
    [0.1818, 0.55, 0.9911, 0.999]
    """
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def ramp_steps(decay: float) -> int:
    """Steps after which `decay_at` reaches ``decay``: the least n with (1 + n)/(10 + n) ≥ decay.

    >>> [ramp_steps(d) for d in (0.1, 0.9, 0.99, 0.999, 0.9995)]
    [0, 80, 890, 8990, 17990]
    """
    n = max(0, math.ceil((10 * decay - 1) / (1 - decay)))  # exact but for rounding: settle it by the ramp itself
    while n > 0 and decay_at(decay, n - 1) >= decay:
        n -= 1
    while decay_at(decay, n) < decay:
        n += 1
    return n


def ramp_note(decay: float, iterations: int) -> str | None:
    """A line for runs too short for ``decay`` to matter: until `ramp_steps` the ramp alone sets the
    average, so such a run is the same with any larger DECAY (None when the run reaches it).

    >>> ramp_note(0.999, 9000) is None
    True
    >>> ramp_note(0.9995, 4000).split("; ")[1]
    'these 4,000 end at 0.9978, so any --ema from 0.9978 up gives this same average'
    """
    if not decay or (n := ramp_steps(decay)) < iterations:
        return None
    end = decay_at(decay, iterations - 1)
    return (f"--ema {decay:g}: the average's decay ramps up as (1 + n)/(10 + n) and reaches {decay:g} only after "
            f"{n:,} steps; these {iterations:,} end at {end:.4f}, so any --ema from {math.ceil(end * 1e4) / 1e4:.4f} "
            "up gives this same average")


def _update(decay: float) -> Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], torch.Tensor], None]:
    @torch.no_grad()
    def update(averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], n_averaged: torch.Tensor) -> None:
        weight = 1.0 - decay_at(decay, int(n_averaged))  # avg ← d·avg + (1 − d)·current
        for a, c in zip(averaged, current, strict=True):
            a.lerp_(c, weight)

    return update


def averaged(model: nn.Module, decay: float) -> AveragedModel:
    """A moving average of ``model``'s parameters (a copy; call ``update_parameters(model)`` after each step)."""
    return AveragedModel(model, multi_avg_fn=_update(decay), use_buffers=False)


@torch.no_grad()
def evaluated(model: nn.Module, ema: AveragedModel | None) -> nn.Module:
    """The module to validate and save: the model itself, or its average carrying the model's current
    BN statistics (the averaged parameters need them recomputed; `bnstats` does that)."""
    if ema is None:
        return model
    for mine, theirs in zip(ema.module.buffers(), model.buffers(), strict=True):
        mine.copy_(theirs)
    return ema.module
