"""One optimisation step (loss, backward, gradient clipping, AMSGrad) and the statistics logged
between validations."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError
from ..inference.runtime import autocast
from .loss import compute_loss
from .options import TrainConfig


@dataclass
class Interval:
    """Training statistics since the last validation."""

    loss: float = 0.0
    steps: int = 0
    grad_norm: float = 0.0  # sum, over the steps, of the gradients' global norm before clipping
    grad_norm_max: float = 0.0
    wait_s: float = 0.0  # waiting for the prefetcher
    time_s: float = 0.0

    def add(self, loss: float, grad_norm: float, wait_s: float, time_s: float) -> None:
        self.loss, self.steps = self.loss + loss, self.steps + 1
        self.grad_norm, self.grad_norm_max = self.grad_norm + grad_norm, max(self.grad_norm_max, grad_norm)
        self.wait_s, self.time_s = self.wait_s + wait_s, self.time_s + time_s

    @property
    def wait_fraction(self) -> float:
        return self.wait_s / max(self.time_s, 1e-9)


def train_step(net: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               batch: dict[str, torch.Tensor], cfg: TrainConfig, device: torch.device) -> tuple[float, float]:
    """One optimisation step on a prefetcher batch: image (B, 1, *c), target (B, *c), valid (B, *c)
    and, for weighted CE, weight (B, *c). Returns the loss and the gradients' global L2 norm before
    clipping (``cfg.clip_grad``; inf or NaN when the AMP scaler skips the step)."""
    x = batch["image"].to(device, non_blocking=True)
    y = batch["target"].to(device, non_blocking=True)
    valid = batch["valid"].to(device, non_blocking=True) if "valid" in batch else None
    w = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None
    net.train()
    opt.zero_grad(set_to_none=True)
    with autocast(device, cfg.amp, cpu=False):  # CPU training steps stay fp32
        logits = net(x)  # (B, 2, *c)
    loss = compute_loss(cfg.loss, logits.float(), y, w, cfg.gamma, valid, cfg.nfl_normalizer_grad)
    if not torch.isfinite(loss):  # before the step: the weights and the files on disk stay as they were
        raise UserError(f"training loss became {float(loss.detach())}: stopped (check the images for NaN/inf pixels; "
                        "the model file and checkpoint keep the last good state)")
    scaler.scale(loss).backward()
    scaler.unscale_(opt)  # true gradients for the norm and the clipping (a no-op without AMP)
    params = [p for p in net.parameters() if p.grad is not None]
    if cfg.clip_grad > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    scaler.step(opt)
    scaler.update()
    return float(loss.detach()), float(norm)
