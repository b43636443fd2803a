"""Validation during training: whole frames through `segment`'s image → probability → labels path
(`inference.predict`, `inference.instances`), scored like `evaluate`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..config import NormConfig, PostConfig
from ..evaluation import metrics
from ..inference.instances import filled, probability_to_labels
from ..inference.predict import probability
from .data import Frame, FrameRef


@dataclass(frozen=True)
class ValScores:
    loss: float  # normalized focal loss of the blended probabilities (annotated pixels only)
    dice: float  # foreground Dice, pooled over frames (annotated pixels only)
    seg: float  # SEG over all objects of all validation frames


def validate(model: nn.Module, frames: list[Frame | FrameRef], device: torch.device, post: PostConfig,
             gamma: float = 2.0, amp: bool = True, norm: NormConfig = NormConfig()) -> ValScores:
    """Scores of ``model`` on whole validation frames (restores the model's train/eval mode).
    `FrameRef`s are loaded one at a time (with ``norm``) and let go after scoring."""
    was_training = model.training
    model.eval()
    w_sum = nll_sum = inter = fg_total = jac_sum = 0.0
    objects = 0
    in_plane = False
    for item in frames:
        f = item.load(norm) if isinstance(item, FrameRef) else item
        p = probability(model, f.image, device, amp=amp)[0]  # `segment`'s path, its default tiling
        truth = f.labels > 0
        known = np.ones_like(truth) if f.ignore is None else ~f.ignore  # unannotated cells are not scored
        p_true = np.clip(np.where(truth, p, 1 - p), 1e-7, 1.0)
        w = (1 - p_true) ** gamma * known
        w_sum += float(w.sum())
        nll_sum += float((w * -np.log(p_true)).sum())
        pred = (p > post.threshold) & known
        inter += float(np.logical_and(pred, truth).sum())
        fg_total += float(pred.sum() + truth.sum())
        m = metrics.match_objects(f.labels, filled(probability_to_labels(p, post, in_plane), post, in_plane))  # as `segment` writes
        jac_sum += float(m.jaccard.sum())
        objects += int(m.ref_labels.size)
    model.train(was_training)
    return ValScores(
        loss=nll_sum / max(w_sum, 1e-12),
        dice=2 * inter / fg_total if fg_total else 1.0,
        seg=jac_sum / objects if objects else float("nan"),
    )
