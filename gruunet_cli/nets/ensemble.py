"""Several networks of one architecture as one: their class probabilities averaged.

Cellpose's first published models averaged four networks trained from different seeds: one seed's
network draws outlines and seeds that wobble from run to run (GOWT1 02 moved by 0.049 SEG between
two seeds of `gruunet-nuclei`, history "Session 18"), and the mean of several is steadier. A model
file holding ``members > 1`` networks (`files.modelfile`) loads as this module; everything after
the network (`inference`, the end-step choices) sees one model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# The floor under averaged probabilities before their log: float32's softmax is never exactly 0
# where it matters, and log(0) would turn a certain pixel into -inf logits.
P_FLOOR = 1e-12


def mean_probability_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Logits whose softmax is the mean of the members' softmaxes.

    Args:
        logits: one (B, classes, *S) tensor per member.

    Returns:
        (B, classes, *S) float32: log of the mean class probability.

    >>> a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0 * torch.log(torch.tensor(3.0))]])
    >>> mean_probability_logits([a, b]).softmax(1)  # (0.5, 0.5) and (0.1, 0.9)
    tensor([[0.3000, 0.7000]])
    """
    total = None
    for z in logits:
        p = z.float().softmax(1)
        total = p if total is None else total.add_(p)
    return total.div_(len(logits)).clamp_min_(P_FLOOR).log_()


class Ensemble(nn.Module):
    """Members of one `ModelConfig`, called as one network: ``forward`` gives logits whose softmax
    is the mean of the members' class probabilities (with ``return_iterations``, one such per
    step). The members run one after the other, so memory is one member's."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        cfgs = {repr(m.cfg) for m in members}
        if len(cfgs) != 1:
            raise ValueError("ensemble members must share one architecture")
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg

    def forward(self, x: torch.Tensor, return_iterations: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """x: (B, in_channels, *S) → (B, classes, *S) logits, or a list of nine (GRUU-Net's steps)."""
        if not return_iterations:
            return mean_probability_logits([m(x) for m in self.members])
        runs = [m(x, return_iterations=True) for m in self.members]  # members × steps × (B, classes, *S)
        return [mean_probability_logits(step) for step in zip(*runs)]
