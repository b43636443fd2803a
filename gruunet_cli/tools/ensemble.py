"""`gruunet ensemble`: several trained model files of one architecture as one model file.

The networks are stored side by side (``members``) and `segment` averages their class
probabilities (`nets.ensemble`). The members must agree on everything that shapes a pass: the
architecture, the normalisation and the training cell size; and on the validation frames, so
that the post-processing chosen afterwards on them (`sizing.after_training`, as `train` does at
its end) is chosen on images no member trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..config import ModelMeta
from ..errors import UserError
from ..files import modelfile
from ..nets.ensemble import Ensemble

INHERITED = ("data", "val_frames", "config", "native_diameter", "crop")  # training-record keys taken from the first member


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_members(paths: list[Path], metas: list[ModelMeta]) -> None:
    """One-line errors for members that cannot be averaged (naming the first member that differs)."""
    if len(paths) < 2:
        raise UserError("an ensemble needs at least two model files")
    if len({p.resolve() for p in paths}) < len(paths):
        raise UserError("the same model file is named twice (its mean with itself is itself)")
    first = metas[0]
    for path, meta in zip(paths, metas):
        if meta.members > 1:
            raise UserError(f"is itself an ensemble of {meta.members} networks; name its member files instead", path)
        if meta.model != first.model:
            raise UserError(f"its architecture differs from {paths[0].name}'s", path)
        if meta.norm != first.norm:
            raise UserError(f"its input normalisation differs from {paths[0].name}'s", path)
        if meta.object_diameter != first.object_diameter:
            raise UserError(f"was trained at another cell size ({meta.object_diameter} px, {paths[0].name}: "
                            f"{first.object_diameter} px)", path)
        if sorted(meta.training.get("val_frames", [])) != sorted(first.training.get("val_frames", [])):
            raise UserError(f"was validated on other frames than {paths[0].name}; choosing the ensemble's "
                            "post-processing needs frames no member trained on", path)


def combine(paths: list[Path], out: Path) -> Path:
    """Write ``out``: the members' networks in one model file, with the first member's normalisation,
    cell size, post-processing (to be chosen again, `sizing.after_training`) and `INHERITED` training
    record, and under ``training.ensemble`` each member's file name, SHA-256 and training record.
    Returns its path."""
    paths = [modelfile.weights_path(p) for p in paths]
    target = modelfile.weights_path(out)
    metas = [modelfile.read_meta(p) for p in paths]
    check_members(paths, metas)
    if target.resolve() in {p.resolve() for p in paths}:
        raise UserError("--out would overwrite one of the members", target)
    nets = [modelfile.load(p)[0] for p in paths]
    first = metas[0]
    # What tools read from a training record (data, validation frames, the training scale for
    # `ctc-scripts`) comes from the first member; every member's whole record is under "ensemble".
    record = {k: first.training[k] for k in INHERITED if k in first.training} | {
              "ensemble": [{"file": p.name, "sha256": sha256(p), "best_iteration": m.training.get("best_iteration"),
                            "best_val_seg": m.training.get("best_val_seg"), "training": m.training}
                           for p, m in zip(paths, metas)]}
    meta = ModelMeta(model=first.model, norm=first.norm, post=first.post, object_diameter=first.object_diameter,
                     large_cell_ratio=first.large_cell_ratio, training=record, members=len(nets))
    return modelfile.save(target, Ensemble(nets), meta)
