"""Where SEG is lost: each reference object's shortfall 1 − J, by what went wrong with it.

SEG is the mean Jaccard over reference objects, so 1 − SEG is the sum of 1 − J over them divided by
their number. Each reference object falls in exactly one class (CTC matching: a result object
matches a reference object when it covers more than half of it):

- ``missed``: matched by nothing, and result foreground covers at most half of it;
- ``split``: matched by nothing, though result foreground covers more than half of it (several
  result objects share it);
- ``merged``: matched by a result object that also matches another reference object;
- ``outline``: matched by a result object of its own; what it loses is the outline's inaccuracy.

The four shares add up to 1 − SEG exactly, which tells a user whether to work on detection
(missed), on cutting joined cells apart (merged), on over-splitting (split) or on boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import SegMatch

KINDS = ("missed", "split", "merged", "outline")


@dataclass(frozen=True)
class SegLosses:
    """Per kind (see the module): how many reference objects, and the sum of their 1 − J."""

    missed: int = 0
    split: int = 0
    merged: int = 0
    outline: int = 0
    missed_loss: float = 0.0
    split_loss: float = 0.0
    merged_loss: float = 0.0
    outline_loss: float = 0.0

    def __add__(self, other: SegLosses) -> SegLosses:
        return SegLosses(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> tuple:
        return (self.missed, self.split, self.merged, self.outline,
                self.missed_loss, self.split_loss, self.merged_loss, self.outline_loss)

    @property
    def objects(self) -> int:
        return self.missed + self.split + self.merged + self.outline

    def shares(self) -> dict[str, float]:
        """Per kind, its 1 − J summed and divided by all reference objects: they add up to 1 − SEG."""
        n = self.objects or 1
        return {k: getattr(self, f"{k}_loss") / n for k in KINDS}


def seg_losses(m: SegMatch) -> SegLosses:
    """Classify the reference objects of one frame's match (`metrics.match_objects`).

    >>> from gruunet_cli.evaluation.metrics import match_objects
    >>> ref = np.array([[1, 1, 0, 2, 2, 0, 3, 3, 3, 3, 0, 4, 4]])
    >>> res = np.array([[0, 0, 0, 5, 5, 5, 6, 6, 7, 7, 0, 8, 8]])  # 1 missed, 2 grown, 3 halved
    >>> [round(x, 4) for x in seg_losses(match_objects(ref, res)).as_tuple()]  # J: 0, 2/3, 0, 1
    [1, 1, 0, 2, 1.0, 1.0, 0.0, 0.3333]
    >>> one_for_two = seg_losses(match_objects(np.array([1, 1, 1, 2, 2, 2]), np.array([9, 9, 9, 9, 9, 0])))
    >>> [round(x, 4) for x in one_for_two.as_tuple()]  # J: 3/5 and 2/6
    [0, 0, 2, 0, 0.0, 0.0, 1.0667, 0.0]
    """
    matched = m.res_labels != 0
    ids, n = np.unique(m.res_labels[matched], return_counts=True)
    shared = np.isin(m.res_labels, ids[n > 1]) & matched
    split = ~matched & (2 * m.covered > m.ref_sizes)
    kinds = {"missed": ~matched & ~split, "split": split, "merged": shared, "outline": matched & ~shared}
    loss = 1.0 - m.jaccard
    return SegLosses(*(int(np.count_nonzero(kinds[k])) for k in KINDS),
                     *(float(loss[kinds[k]].sum()) for k in KINDS))
