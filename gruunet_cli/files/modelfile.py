"""The model file: ``NAME.safetensors`` (plain tensors, never pickled code) whose metadata holds the
frozen `ModelMeta` as JSON, plus a human-readable copy ``NAME.json`` beside it.

The file alone rebuilds the network: `load` reads the metadata, builds the architecture it
names (``members`` of them, as one `Ensemble`, when it holds several) and loads the weights into it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..config import ModelMeta, dumps, from_dict
from ..errors import UserError
from ..nets.ensemble import Ensemble
from ..nets.model import build_model
from .atomic import atomic_path, write_text

META_KEY = "gruunet"
SUFFIX = ".safetensors"


def weights_path(path: Path | str) -> Path:
    """``weights/NAME``, ``weights/NAME.safetensors`` or ``weights/NAME.json`` → the
    ``.safetensors`` path; a folder holding exactly one model file → that file."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*" + SUFFIX))
        if len(found) != 1:
            raise UserError(f"a folder with {len(found)} model files (*{SUFFIX}); name one", path)
        return found[0]
    if path.suffix == SUFFIX:
        return path
    if path.suffix == ".json":
        return path.with_suffix(SUFFIX)
    return path.with_name(path.name + SUFFIX)


def plain_module(model: nn.Module) -> nn.Module:
    """The underlying module of a DDP or ``torch.compile`` wrapper (checkpoints hold only this)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save(path: Path | str, model: nn.Module, meta: ModelMeta) -> Path:
    """Write weights + metadata atomically; returns the ``.safetensors`` path."""
    from safetensors.torch import save_file

    target = weights_path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in plain_module(model).state_dict().items()}
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: dumps(meta)})
    write_text(target.with_suffix(".json"), dumps(meta) + "\n")
    return target


def read_meta(path: Path | str) -> ModelMeta:
    """The `ModelMeta` stored in a model file."""
    from safetensors import safe_open

    target = weights_path(path)
    if not target.is_file():
        raise UserError("model file does not exist", target)
    try:
        with safe_open(str(target), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as exc:
        raise UserError(f"not a safetensors model file ({exc})".splitlines()[0], target) from None
    if raw is None:
        raise UserError("no gruunet configuration in the file's metadata", target)
    try:
        return from_dict(ModelMeta, json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise UserError(f"bad gruunet configuration ({exc})", target) from None


def load(path: Path | str, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Rebuild the network from the file's metadata and load its weights (in eval mode)."""
    meta = read_meta(path)
    model = build_model(meta.model) if meta.members == 1 else Ensemble([build_model(meta.model) for _ in range(meta.members)])
    load_weights_into(path, model, device)
    return model.to(device).eval(), meta


def load_weights_into(path: Path | str, model: nn.Module, device: str | torch.device = "cpu") -> None:
    """Copy a model file's tensors into ``model``, which must have the file's architecture."""
    from safetensors.torch import load_file

    state = load_file(str(weights_path(path)), device=str(device))
    try:
        plain_module(model).load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"weights do not fit the stored architecture ({str(exc).splitlines()[0]})", weights_path(path)) from None
