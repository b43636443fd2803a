"""The training log: a CSV row per validation and a PNG of the curves beside it."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..files.atomic import atomic_path, write_text

COLUMNS = ["iteration", "train_loss", "val_loss", "val_dice", "val_seg", "data_wait_fraction", "it_per_s", "elapsed_s",
           "grad_norm", "grad_norm_max"]  # the gradients' global norm before clipping: mean and largest since the last row


def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
    write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(fh)]


def plot(path: Path, rows: list[dict[str, float]], title: str = "") -> None:
    """Loss (train, validation) and validation Dice / SEG against iterations, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax1.plot(it, [r["train_loss"] for r in rows], label="train loss")
    ax1.plot(it, [r["val_loss"] for r in rows], label="validation loss")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.plot(it, [r["val_dice"] for r in rows], label="validation Dice")
    ax2.plot(it, [r["val_seg"] for r in rows], label="validation SEG")
    ax2.set_xlabel("iteration")
    ax2.set_ylim(0, 1)
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
