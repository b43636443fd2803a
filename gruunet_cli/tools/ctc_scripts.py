"""`gruunet ctc-scripts`: the per-dataset, per-sequence scripts of a CTC submission (``SW/``).

Each script runs with no arguments from inside ``SW/``, reads ``../<DS>/<SEQ>/`` and writes
``../<DS>/<SEQ>_RES/`` with the model file copied into ``SW/weights/``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..errors import UserError
from ..files import modelfile
from ..files.atomic import write_text

SCRIPT = """#!/usr/bin/env bash
# Cell Tracking Challenge submission: {dataset}, sequence {seq}.
# Segmentation by gruunet (GRUU-Net, Wollmann et al. 2019) with weights/{weights_name}
# ({arch}, trained on: {trained_on}).
# Run with no arguments from inside SW/: reads ../{dataset}/{seq}/, writes ../{dataset}/{seq}_RES/.
set -euo pipefail
cd "$(dirname "$0")"
GRUUNET="${{GRUUNET:-gruunet}}"
"$GRUUNET" segment "../{dataset}/{seq}" "../{dataset}/{seq}_RES" --weights "weights/{weights_name}" --overwrite{diameter}
"""

DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def parse_mapping(items: list[str]) -> dict[str, Path]:
    """``DATASET=weights/NAME`` pairs → mapping (one line errors for bad pairs)."""
    mapping: dict[str, Path] = {}
    for item in items:
        ds, sep, w = item.partition("=")
        if not sep or not DATASET_RE.match(ds) or not w:
            raise UserError(f"expected DATASET=WEIGHTS, got {item!r}")
        mapping[ds] = Path(w)
    return mapping


def diameter_option(training: dict) -> str:
    """A model trained with ``--scale-to`` on this dataset segments it at the training scale: its
    cells have the training frames' own median diameter (recorded as ``native_diameter``)."""
    native = training.get("native_diameter")
    if training.get("config", {}).get("scale_to") and native:
        return f" --diameter {native:.1f}"
    return ""


def write_scripts(mapping: dict[str, Path], sw: Path, seqs: tuple[str, ...] = ("01", "02")) -> list[Path]:
    """Write ``SW/<DS>-<SEQ>.sh`` for every dataset and sequence, copying the weights into ``SW/weights``."""
    written = []
    for ds, weights in mapping.items():
        meta = modelfile.read_meta(weights)  # also checks that the file is a model
        src = modelfile.weights_path(weights)
        dst = sw / "weights" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
            if src.with_suffix(".json").exists():
                shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
        trained_on = meta.training.get("data", {}).get("images", "unknown")
        for seq in seqs:
            path = sw / f"{ds}-{seq}.sh"
            write_text(path, SCRIPT.format(dataset=ds, seq=seq, weights_name=src.name, arch=meta.model.arch.value,
                                           trained_on=trained_on, diameter=diameter_option(meta.training)))
            os.chmod(path, 0o755)
            written.append(path)
    return written
