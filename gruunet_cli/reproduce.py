"""`gruunet reproduce`: the paper's CTC protocol on one dataset folder (Section 3, Tables 4/5).

Train on one video, segment and evaluate the other, both ways, for GRUU-Net and U-Net (and the
loss variants with ``ablation``), and write the table as Markdown and CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import segment, train
from .atomic import write_text
from .config import Arch, LossName
from .errors import UserError
from .evaluate import evaluate


@dataclass(frozen=True)
class Method:
    name: str
    arch: Arch
    loss: LossName


METHODS = [Method("GRUU-Net", Arch.gruunet, LossName.nfl), Method("U-Net", Arch.unet, LossName.wce)]
ABLATION = [Method("GRUU-Net (focal loss)", Arch.gruunet, LossName.fl),
            Method("GRUU-Net (weighted CE)", Arch.gruunet, LossName.wce),
            Method("U-Net (normalized focal loss)", Arch.unet, LossName.nfl)]
COLUMNS = ["method", "train", "test", "SEG", "DET", "Dice", "Hausdorff", "iterations", "train_s"]


def sequences(dataset: Path) -> list[str]:
    """The two videos ('01', '02') that have images and GT."""
    seqs = [s for s in ("01", "02") if (dataset / s).is_dir() and (dataset / f"{s}_GT").is_dir()]
    if len(seqs) != 2:
        raise UserError("needs 01/, 01_GT/, 02/ and 02_GT/", dataset)
    return seqs


def run(dataset: Path, out: Path, base: train.TrainConfig, ablation: bool = False,
        seg_opts: segment.SegmentOptions = segment.SegmentOptions(),
        log: Callable[[str], None] = print) -> list[dict[str, object]]:
    """Train/test both ways per method; returns the table rows (also written to ``out/table.{md,csv}``)."""
    dataset, out = Path(dataset), Path(out)
    a, b = sequences(dataset)
    rows: list[dict[str, object]] = []
    for method in METHODS + (ABLATION if ablation else []):
        slug = method.name.lower().replace(" ", "-").replace("(", "").replace(")", "")
        cfg = dataclasses.replace(base, loss=method.loss, model=dataclasses.replace(train.default_model(method.arch, base.model.dims),
                                                                                     unet_base=base.model.unet_base))
        for tr_seq, te_seq in ((a, b), (b, a)):
            log(f"{method.name}: train on {tr_seq}, test on {te_seq}")
            model_out = out / "models" / f"{slug}-{tr_seq}"
            result = train.run(cfg, train.TrainData.ctc(dataset / tr_seq, dataset / f"{tr_seq}_GT"), model_out)
            res_dir = out / "results" / f"{slug}-{tr_seq}" / f"{te_seq}_RES"
            segment.run(dataset / te_seq, res_dir, result.model_path, dataclasses.replace(seg_opts, overwrite=True))
            report = evaluate(res_dir, dataset / f"{te_seq}_GT")
            rows.append({"method": method.name, "train": tr_seq, "test": te_seq, "SEG": report.seg, "DET": report.det,
                         "Dice": report.dice, "Hausdorff": report.hausdorff, "iterations": result.iterations,
                         "train_s": round(result.rows[-1]["elapsed_s"], 1) if result.rows else None})
    write_tables(out, dataset.name, rows)
    return rows


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else str(v)


def write_tables(out: Path, title: str, rows: list[dict[str, object]]) -> None:
    lines = [f"# {title}: train on one video, test on the other", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    write_text(out / "table.md", "\n".join(lines) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    write_text(out / "table.csv", buf.getvalue())
