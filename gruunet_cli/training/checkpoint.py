"""Checkpoints: model, optimizer and loop state in one atomic file, the rules of ``--resume``, and
the weights ``--init`` starts from.

Loaded with ``weights_only=True``: a checkpoint never runs code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Arch, ModelConfig, to_dict
from ..errors import UserError
from ..files import modelfile
from ..files.atomic import atomic_path
from .options import TrainConfig


@dataclass
class TrainState:
    """What a checkpoint restores besides weights and optimizer."""

    iteration: int = 0
    best_seg: float = -math.inf
    best_iteration: int = 0
    bad_validations: int = 0
    elapsed_s: float = 0.0
    rows: list[dict[str, float]] = field(default_factory=list)


def output_paths(out: Path) -> dict[str, Path]:
    base = modelfile.weights_path(out)
    stem = base.with_suffix("")
    return {
        "model": base,
        "checkpoint": stem.with_name(stem.name + ".ckpt.pt"),
        "log": stem.with_name(stem.name + ".train_log.csv"),
        "curves": stem.with_name(stem.name + ".curves.png"),
    }


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: TrainState, cfg: TrainConfig,
                    ema: nn.Module | None = None) -> None:
    """Model, optimizer, loop state and the weights' moving average (``--ema``) in one file, written
    atomically (plain tensors and numbers)."""
    blob = {
        "model": modelfile.plain_module(model).state_dict(),
        "optimizer": opt.state_dict(),
        "state": dataclasses.asdict(state),
        "config": to_dict(cfg),
        **({} if ema is None else {"ema": ema.state_dict()}),
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


# Options a resumed run may change: it may run longer, wait longer for a better validation,
# score validations with other post-processing (which re-scores the best model so far), or use
# another number of augmentation workers (batches do not depend on it).
EXTENDABLE = ("iterations", "patience", "post", "workers", "threads")


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                    cfg: TrainConfig, ema: nn.Module | None = None) -> tuple[TrainState, dict[str, Any]]:
    """Restore weights and optimizer; returns the loop state and the checkpoint's configuration."""
    if not path.is_file():
        raise UserError("no checkpoint to resume from", path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as exc:
        why = ("it holds pickled objects other than tensors, refused (weights_only)"
               if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__ else
               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'truncated or not a checkpoint'}")
        raise UserError(f"cannot resume from this checkpoint: {why}", path) from None
    if not isinstance(blob, dict) or not {"model", "optimizer", "state", "config"} <= set(blob):
        raise UserError("cannot resume from this checkpoint: not a gruunet checkpoint", path)
    # A checkpoint of an older version lacks newer fields: they must have their default values.
    defaults = to_dict(TrainConfig())
    saved = {**{k: v for k, v in defaults.items() if k not in blob["config"]}, **blob["config"]}
    fixed = lambda c: {k: v for k, v in c.items() if k not in EXTENDABLE}  # noqa: E731
    if fixed(saved) != fixed(to_dict(cfg)):
        changed = sorted(k for k in fixed(saved) if saved.get(k) != to_dict(cfg).get(k))
        raise UserError(f"checkpoint was made with other options ({', '.join(changed)}); resume with the same "
                        "options (only --iterations, --patience, --workers, --threads and the post-processing "
                        "may change)", path)
    modelfile.plain_module(model).load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    if ema is not None:
        if "ema" not in blob:
            raise UserError("cannot resume with --ema: this checkpoint holds no moving average", path)
        ema.load_state_dict(blob["ema"])
    return TrainState(**blob["state"]), blob["config"]


def init_model_config(path: Path, arch: Arch, dims: int) -> ModelConfig:
    """The architecture of a model file to fine-tune, checked against ``--model`` and the data's dims."""
    meta = modelfile.read_meta(path)
    if meta.members > 1:
        raise UserError(f"is an ensemble of {meta.members} networks; fine-tune one of its member files instead", path)
    if meta.model.arch != arch:
        raise UserError(f"is a {meta.model.arch.value} model file; train it with --model {meta.model.arch.value}", path)
    if meta.model.dims != dims:
        raise UserError(f"is a {meta.model.dims}D model, the training data is {dims}D", path)
    return meta.model


def load_init(path: Path, model: nn.Module, model_cfg: ModelConfig) -> None:
    """Copy a model file's weights into ``model`` (same architecture; safetensors, no code runs)."""
    if modelfile.read_meta(path).model != model_cfg:
        raise UserError("its architecture differs from the one being trained", path)
    modelfile.load_weights_into(path, model)
