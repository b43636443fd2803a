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

import numpy as np

from ..config import Arch, LossName, PostConfig, default_model
from ..errors import UserError
from ..evaluation.evaluate import evaluate
from ..files import modelfile
from ..files.atomic import write_text
from ..files.sources import Source
from ..inference import segment
from ..progress import Progress
from ..training import data, train
from . import minsize, outline


@dataclass(frozen=True)
class Method:
    name: str
    arch: Arch
    loss: LossName
    ignore_unannotated: bool = True  # partial GT: unannotated cells left out of the loss

    @property
    def slug(self) -> str:
        return self.name.lower().replace(" ", "-").replace("(", "").replace(")", "")


METHODS = [Method("GRUU-Net", Arch.gruunet, LossName.nfl), Method("U-Net", Arch.unet, LossName.wce)]
ABLATION = [Method("GRUU-Net (focal loss)", Arch.gruunet, LossName.fl),
            Method("GRUU-Net (weighted CE)", Arch.gruunet, LossName.wce),
            Method("U-Net (normalized focal loss)", Arch.unet, LossName.nfl),
            Method("GRUU-Net (no ignore mask)", Arch.gruunet, LossName.nfl, ignore_unannotated=False)]
COLUMNS = ["method", "train", "test", "SEG", "DET", "Dice", "Hausdorff", "min_size", "outline", "split_h", "iterations", "train_s", "paper_SEG", "paper_Dice"]

# The paper's Table 4 (Wollmann et al. 2019), by (dataset, method, test video): (SEG, Dice).
PAPER = {
    ("Fluo-N2DH-GOWT1", "GRUU-Net", "01"): (0.888, 0.901),
    ("Fluo-N2DH-GOWT1", "GRUU-Net", "02"): (0.929, 0.956),
    ("Fluo-N2DH-GOWT1", "U-Net", "01"): (0.814, None),
    ("Fluo-N2DH-GOWT1", "U-Net", "02"): (0.832, None),
}


def sequences(dataset: Path) -> list[str]:
    """The two videos ('01', '02') that have images and GT."""
    seqs = [s for s in ("01", "02") if (dataset / s).is_dir() and (dataset / f"{s}_GT").is_dir()]
    if len(seqs) != 2:
        raise UserError("needs 01/, 01_GT/, 02/ and 02_GT/", dataset)
    return seqs


def run(dataset: Path, out: Path, base: train.TrainConfig, ablation: bool = False,
        seg_opts: segment.SegmentOptions = segment.SegmentOptions(),
        log: Callable[[str], None] = print, resume: bool = False,
        only: tuple[str, ...] = (), choose_min_size: bool = True,
        choose_outline: bool = True, choose_tta: bool = False) -> list[dict[str, object]]:
    """Train/test both ways per method; returns the table rows (also written to ``out/table.{md,csv}``).

    ``resume``: each model continues from its checkpoint under ``out/models`` (a finished one is
    just re-read), so the protocol can run across sessions. ``only``: run just these
    ``SLUG-TRAINSEQ`` models (e.g. ``gruu-net-01``); the table then holds the rows done so far.
    ``choose_min_size``: before testing, the smallest object kept is chosen on the training
    video's frames that have TRA markers but no SEG reference (`minsize`) and written into the
    model file. ``choose_outline``: then the level objects' outlines follow is chosen by SEG on its
    validation frames (`outline`) and written into the model file; ``choose_tta``: whether to average
    the 8 flips and rotations too (`outline.choose_tta`).
    """
    dataset, out = Path(dataset), Path(out)
    a, b = sequences(dataset)
    rows: list[dict[str, object]] = []
    for method in METHODS + (ABLATION if ablation else []):
        cfg = dataclasses.replace(base, loss=method.loss, ignore_unannotated=method.ignore_unannotated,
                                  model=dataclasses.replace(default_model(method.arch, base.model.dims),
                                                            unet_base=base.model.unet_base))
        for tr_seq, te_seq in ((a, b), (b, a)):
            key = f"{method.slug}-{tr_seq}"
            model_out = out / "models" / key
            if only and key not in only:
                continue
            log(f"{method.name}: train on {tr_seq}, test on {te_seq}")
            ckpt = train.output_paths(model_out)["checkpoint"]
            src = train.TrainData.ctc(dataset / tr_seq, dataset / f"{tr_seq}_GT")
            with Progress(f"training {key}", cfg.iterations, loss="loss {:.4f}") as bar:
                result = train.run(cfg, src, model_out, resume=resume and ckpt.is_file(),
                                   progress=lambda i, st: bar.update(completed=i, loss=st["loss"]))
            if result.interrupted:
                break
            opts = dataclasses.replace(seg_opts, overwrite=True)
            # The test video's cells have the training video's size (one CTC dataset): segmented at
            # that size, not re-estimated (at the model's own scale this is no resize at all).
            recorded = modelfile.read_meta(result.model_path).training.get("native_diameter")
            opts = dataclasses.replace(opts, diameter=recorded or native_diameter(src.sources[0], base.model.dims))
            if choose_min_size:
                choice = minsize.choose(segment.Predictor(result.model_path, opts), dataset / tr_seq,
                                        dataset / f"{tr_seq}_GT")
                if choice is not None:
                    minsize.record(result.model_path, choice)
                    log(f"min size {choice.min_size} px (DET on {len(choice.frames)} unannotated frames of {tr_seq}: "
                        + ", ".join(f"{k}: {v:.3f}" for k, v in choice.det.items()) + ")")
            if choose_outline:
                level = outline.choose_tta(result.model_path, opts, outline.validation_pairs(result.model_path), choose_tta)
                if level is not None:
                    outline.record(result.model_path, level)
                    log(outline.describe(level))
            res_dir = out / "results" / key / f"{te_seq}_RES"
            segment.run(dataset / te_seq, res_dir, result.model_path, opts)
            report = evaluate(res_dir, dataset / f"{te_seq}_GT")
            paper = PAPER.get((dataset.name, method.name, te_seq), (None, None))
            post = modelfile.read_meta(result.model_path).post
            rows.append({"method": method.name, "train": tr_seq, "test": te_seq, "SEG": report.seg, "DET": report.det,
                         "Dice": report.dice, "Hausdorff": report.hausdorff,
                         "min_size": post.min_size, "outline": outline_cell(post), "split_h": post.split_h, "iterations": result.iterations,
                         "train_s": round(result.rows[-1]["elapsed_s"], 1) if result.rows else None,
                         "paper_SEG": paper[0], "paper_Dice": paper[1]})
    write_tables(out, dataset.name, rows)
    return rows


def native_diameter(source: Source, dims: int) -> float:
    """Median cell diameter (px) of a source's references at their own scale."""
    return float(np.median(np.concatenate([st.diameters for st in data.scan(source, dims).stats])))


def _number(v: str | None) -> object:
    """A CSV cell back as a number where it is one."""
    if v in (None, ""):
        return None
    try:
        return float(v) if any(c in v for c in ".eE") or v in ("nan", "inf") else int(v)
    except ValueError:
        return v


def outline_cell(post: PostConfig) -> float | str | None:
    """The table's outline column: the level, marked when it is a fraction of each object's peak.

    >>> outline_cell(PostConfig(outline=0.6)), outline_cell(PostConfig(outline=0.6, outline_peak=True))
    (0.6, '0.6 of peak')
    """
    return f"{post.outline} of peak" if post.outline_peak and post.outline is not None else post.outline


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else str(v)


def write_tables(out: Path, title: str, rows: list[dict[str, object]]) -> None:
    """``out/table.md`` and ``.csv``; rows of models not run this time are kept from the old CSV."""
    old = out / "table.csv"
    if old.is_file():
        done = {(r["method"], r["train"]) for r in rows}
        kept = [r for r in csv.DictReader(io.StringIO(old.read_text())) if (r["method"], r["train"]) not in done]
        for r in kept:
            for k in COLUMNS[3:]:  # the measured columns; method, train and test stay text
                r[k] = _number(r.get(k))
        rows = sorted(kept + rows, key=lambda r: ([m.name for m in METHODS + ABLATION].index(r["method"])
                                                  if r["method"] in [m.name for m in METHODS + ABLATION] else 99,
                                                  str(r["train"])))
    lines = [f"# {title}: train on one video, test on the other", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    write_text(out / "table.md", "\n".join(lines) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    write_text(out / "table.csv", buf.getvalue())
