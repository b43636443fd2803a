"""Losses against hand-computed values and their stated relations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gruunet_cli.config import LossName
from gruunet_cli.training.loss import (
    compute_loss,
    focal_loss,
    focal_terms,
    normalized_focal_loss,
    unet_weight_map,
    weighted_cross_entropy,
)


def two_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    # pixel 0: p = (0.25, 0.75), true class 1; pixel 1: p = (0.8, 0.2), true class 0
    logits = torch.tensor([[[0.0, math.log(4.0)], [math.log(3.0), 0.0]]])  # (B=1, C=2, W=2)
    target = torch.tensor([[1, 0]])
    return logits, target


def test_normalized_focal_loss_hand_computed() -> None:
    logits, target = two_pixels()
    w0, w1 = 0.25**2, 0.2**2  # (1 − x_true)^2
    expected = (w0 * -math.log(0.75) + w1 * -math.log(0.8)) / (w0 + w1)
    assert normalized_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert focal_loss(logits, target).item() == pytest.approx(w0 * -math.log(0.75) + w1 * -math.log(0.8), rel=1e-6)


def test_gamma_zero_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 7, 9)
    target = torch.randint(0, 2, (2, 7, 9))
    ce = F.cross_entropy(logits, target)
    torch.testing.assert_close(normalized_focal_loss(logits, target, gamma=0.0), ce)
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), ce * target.numel())


def test_normalized_and_plain_differ_by_batch_weight_sum() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 2, 11, 5, dtype=torch.float64)
    target = torch.randint(0, 2, (3, 11, 5))
    w, _ = focal_terms(logits, target)
    torch.testing.assert_close(normalized_focal_loss(logits, target) * w.sum(), focal_loss(logits, target))


def test_normalized_focal_gradient_never_makes_a_pixel_worse() -> None:
    """One hard pixel (p_true 0.2) and one easy pixel (p_true 0.95). With Σw a constant, every
    pixel's gradient step raises its true-class logit margin; with the gradient through Σw the
    easy pixel is pushed *down* (its loss is below the weighted mean), the drift that made
    training collapse. Hand-computed: dL/dp_easy ∝ −w/p + γ(1−p)^(γ−1)·(L − ℓ)."""
    logits = torch.tensor([[[0.0, math.log(0.2 / 0.8)], [0.0, math.log(0.95 / 0.05)]]], dtype=torch.float64)
    logits = logits.permute(0, 2, 1).contiguous().requires_grad_(True)  # (B=1, C=2, W=2)
    target = torch.tensor([[1, 1]])

    def margin_grad(normalizer_grad: bool) -> torch.Tensor:
        logits.grad = None
        normalized_focal_loss(logits, target, normalizer_grad=normalizer_grad).backward()
        return (logits.grad[0, 1] - logits.grad[0, 0]) / 2  # d loss / d (fg − bg logit), per pixel

    assert (margin_grad(False) < 0).all()  # descent raises both pixels' true-class margin
    g = margin_grad(True)
    assert g[0] < 0 and g[1] > 0  # the easy pixel is pushed towards the wrong class
    p = torch.tensor([0.2, 0.95], dtype=torch.float64)
    w, nll = (1 - p) ** 2, -torch.log(p)
    big_l = (w * nll).sum() / w.sum()
    dp = (-w / p + 2 * (1 - p) * (big_l - nll)) / w.sum()  # dL/dp through both numerator and Σw
    torch.testing.assert_close(g, dp * p * (1 - p))  # dp/dmargin = p(1 − p)


def test_stable_for_extreme_logits() -> None:
    logits = torch.tensor([[[1e4, -1e4], [-1e4, 1e4]]], requires_grad=True)
    target = torch.tensor([[1, 0]])  # confidently wrong everywhere
    loss = normalized_focal_loss(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(2e4)


def test_weighted_ce_with_unit_weights_is_ce() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 2, 6, 6)
    target = torch.randint(0, 2, (2, 6, 6))
    torch.testing.assert_close(weighted_cross_entropy(logits, target, torch.ones(2, 6, 6)), F.cross_entropy(logits, target))
    torch.testing.assert_close(compute_loss(LossName.wce, logits, target, torch.ones(2, 6, 6)), F.cross_entropy(logits, target))


def test_unet_weight_map_hand_computed() -> None:
    labels = np.zeros((1, 11), np.int32)
    labels[0, 0:2] = 3
    labels[0, 9:11] = 7
    w = unet_weight_map(labels, w0=10, sigma=5)
    wc_bg, wc_fg = 11 / (2 * 7), 11 / (2 * 4)
    # x = 5: nearest objects at distances 4 (x=1) and 4 (x=9)
    assert w[0, 5] == pytest.approx(wc_bg + 10 * math.exp(-(4 + 4) ** 2 / 50), rel=1e-6)
    # x = 3: distances 2 and 6
    assert w[0, 3] == pytest.approx(wc_bg + 10 * math.exp(-(2 + 6) ** 2 / 50), rel=1e-6)
    # x = 1, inside object 3: d1 = 0, d2 = 8 (to x=9)
    assert w[0, 1] == pytest.approx(wc_fg + 10 * math.exp(-(0 + 8) ** 2 / 50), rel=1e-6)
