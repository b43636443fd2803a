"""What a training run is told: its configuration (stored in the model file) and its data sources."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import LossName, LRSchedule, ModelConfig, NormConfig, PostConfig
from ..files.sources import Layout, Source
from .augment import AugmentConfig


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained (stored in the model file)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossName = LossName.nfl
    gamma: float = 2.0
    # nfl: gradient through the normalizer Σw too (makes training collapse; see loss.py)
    nfl_normalizer_grad: bool = False
    crop: int | None = None  # None: about the largest object, rounded to 16
    batch: int = 2
    lr: float = 1e-3
    lr_schedule: LRSchedule = LRSchedule.constant
    # Largest global gradient norm a step applies (larger ones are scaled down to it; 0: off, the
    # paper's). The GRU is unrolled over nine steps, the classic case of exploding gradients.
    clip_grad: float = 0.0
    iterations: int = 10_000
    val_interval: int = 100
    patience: int = 10  # validations without a better SEG before stopping
    clean_fraction: float = 0.1  # last fraction of iterations on un-augmented crops
    background_crops: float = 0.0  # share of crops centred anywhere, not on an object (paper: 0)
    val_fraction: float = 0.25  # held out per source when no validation sequence is given
    scale_to: float | None = None  # resize each training frame so its median object diameter is this (px)
    # partial CTC GT: cells with a TRA marker but no SEG label are left out of the loss (not background)
    ignore_unannotated: bool = True
    # unlabelled bright specks are left out of the loss: annotators label only some (spots.py)
    ignore_spots: bool = False
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint_interval: int = 500
    # Before each validation, BN running statistics are recomputed over this many whole training
    # frames (`bnstats.py`; 0: keep the running averages of the crops, as plain BN does).
    precise_bn_frames: int = 8
    ema: float = 0.0  # decay of the weights' moving average that is validated and saved (0: off; ema.py)
    threads: int | None = None  # CPU threads (None: the free cores)
    init: str | None = None  # model file whose weights start the run (fine-tuning)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    post: PostConfig = field(default_factory=PostConfig)


@dataclass(frozen=True)
class TrainData:
    """Where the frames come from (recorded in the model file): training sources, and validation
    sources (none: ``val_fraction`` of each training source is held out)."""

    sources: tuple[Source, ...]
    val: tuple[Source, ...] = ()

    @classmethod
    def ctc(cls, images: Path, gt: Path, st: Path | None = None, val_images: Path | None = None,
            val_gt: Path | None = None) -> TrainData:
        """One CTC sequence (and optionally a validation sequence)."""
        val = () if val_images is None else (Source(Layout.ctc, Path(val_images), Path(val_gt)),)
        return cls((Source(Layout.ctc, Path(images), Path(gt), None if st is None else Path(st)),), val)

    def describe(self) -> dict[str, Any]:
        return {"sources": [s.describe() for s in self.sources], "val": [s.describe() for s in self.val]}


def learning_rate(cfg: TrainConfig, iteration: int) -> float:
    """The learning rate of step ``iteration`` (0-based): a function of the iteration alone, so a
    resumed run continues the same curve.

    >>> cfg = TrainConfig(lr=1e-3, iterations=100, lr_schedule=LRSchedule.cosine)
    >>> [round(learning_rate(cfg, i), 6) for i in (0, 50, 100)]
    [0.001, 0.0005, 0.0]
    """
    if cfg.lr_schedule == LRSchedule.cosine:
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(iteration / cfg.iterations, 1.0)))
    return cfg.lr


def default_lr(fine_tuning: bool) -> float:
    """The paper's 1e-3 from scratch. Fine-tuning restarts AMSGrad, and at 1e-3 that wrecked the
    shipped GRUU-Net within 700 iterations (validation SEG 0.83 → 0); 1e-4 stays stable."""
    return 1e-4 if fine_tuning else 1e-3
