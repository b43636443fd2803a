"""Validation during training: whole frames through the tiled predictor, scored like `evaluate`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import metrics
from .config import NormConfig, PostConfig
from .data import Frame, FrameRef
from .instances import probability_to_labels
from .runtime import foreground_fn
from .tiling import plan_tile, predict_tiled


@dataclass(frozen=True)
class ValScores:
    loss: float  # normalized focal loss of the blended probabilities (annotated pixels only)
    dice: float  # foreground Dice, pooled over frames (annotated pixels only)
    seg: float  # SEG over all objects of all validation frames


def foreground_probability(model: nn.Module, image: np.ndarray, device: torch.device, amp: bool = True,
                           overlap: int = 64) -> np.ndarray:
    """(*S) normalised image → (*S) foreground probability with the model in eval mode, tiled
    in-plane as `segment` tiles (`tiling.plan_tile`); 3D frames whole in depth."""
    plane = plan_tile(image.shape[-2:], overlap, model.cfg.multiple[-1])
    tiles = plane if image.ndim == 2 else (image.shape[0], *plane)
    return predict_tiled(foreground_fn(model, device, amp), image, tiles, (overlap,) * image.ndim,
                         align=model.cfg.multiple)[0]


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
        p = foreground_probability(model, f.image, device, amp=amp)
        truth = f.labels > 0
        known = np.ones_like(truth) if f.ignore is None else ~f.ignore  # unannotated cells are not scored
        p_true = np.clip(np.where(truth, p, 1 - p), 1e-7, 1.0)
        w = (1 - p_true) ** gamma * known
        w_sum += float(w.sum())
        nll_sum += float((w * -np.log(p_true)).sum())
        pred = (p > post.threshold) & known
        inter += float(np.logical_and(pred, truth).sum())
        fg_total += float(pred.sum() + truth.sum())
        m = metrics.match_objects(f.labels, probability_to_labels(p, post, in_plane))
        jac_sum += float(m.jaccard.sum())
        objects += int(m.ref_labels.size)
    model.train(was_training)
    return ValScores(
        loss=nll_sum / max(w_sum, 1e-12),
        dice=2 * inter / fg_total if fg_total else 1.0,
        seg=jac_sum / objects if objects else float("nan"),
    )
