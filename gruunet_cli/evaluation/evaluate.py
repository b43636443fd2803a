"""`gruunet evaluate`: SEG (official CTC definition), DET, OP_CSB, Dice and Hausdorff of a result folder.

Frames are read lazily, one task per time point (its result volume is read once for all of its
reference files and its marker file), in a thread pool: TIFF decoding and the numpy kernels
release the GIL.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import ctc
from ..files.atomic import write_text
from . import metrics
from .losses import KINDS, SegLosses, seg_losses


@dataclass(frozen=True)
class FrameRow:
    """Scores of one reference file (a frame, or one slice of a 3D frame)."""

    gt_file: str
    frame: int
    slice: int | None
    objects: int
    matched: int
    jaccard_sum: float
    seg: float
    dice: float
    hausdorff: float
    missing_result: bool
    # every cell annotated: no TRA marker of the frame lacks a reference label (None: no TRA to tell)
    complete: bool | None = None
    losses: SegLosses = field(default_factory=SegLosses)  # where this file's SEG is lost (`losses`)


@dataclass(frozen=True)
class Report:
    """Everything `evaluate` measures. SEG is the mean over all reference objects of all files."""

    res_dir: str
    gt_dir: str
    seg: float
    det: float | None
    op_csb: float | None
    dice: float  # mean over fully annotated reference files only (see FrameRow.complete)
    hausdorff: float  # likewise
    objects: int
    det_errors: metrics.DetErrors | None
    missing_frames: list[int] = field(default_factory=list)
    dice_files: list[str] = field(default_factory=list)  # the reference files Dice and Hausdorff are over
    rows: list[FrameRow] = field(default_factory=list)
    seg_losses: SegLosses = field(default_factory=SegLosses)  # over all reference files


def _result_for(frame: int, masks: dict[int, ctc.FrameFile]) -> np.ndarray | None:
    f = masks.get(frame)
    return None if f is None else ctc.read_labels(f.path)


def _result_view(res: np.ndarray | None, ref: np.ndarray, gt: ctc.GTFile, res_path: Path | None) -> np.ndarray:
    """The part of the result volume that ``gt`` annotates (zeros when the result is missing)."""
    if res is None:
        return np.zeros_like(ref)
    if gt.slice is not None:
        if res.ndim != ref.ndim + 1 or gt.slice >= res.shape[0]:
            raise UserError(f"result of shape {res.shape} has no slice {gt.slice} for {gt.path.name}", res_path)
        res = res[gt.slice]
    if res.shape != ref.shape:
        raise UserError(f"shape {res.shape} differs from reference {gt.path.name} {ref.shape}", res_path)
    return res


def _score_frame(
    frame: int,
    gt_files: list[ctc.GTFile],
    marker: ctc.FrameFile | None,
    masks: dict[int, ctc.FrameFile],
) -> tuple[list[FrameRow], metrics.DetErrors | None]:
    res = _result_for(frame, masks)
    res_path = masks[frame].path if frame in masks else None
    markers = None if marker is None else ctc.read_labels(marker.path)
    rows = []
    for gt in gt_files:
        ref = ctc.read_labels(gt.path)
        view = _result_view(res, ref, gt, res_path)
        complete = None
        if markers is not None:
            mk = markers[gt.slice] if gt.slice is not None and markers.ndim == ref.ndim + 1 else markers
            complete = mk.shape == ref.shape and metrics.unannotated_markers(ref, mk).size == 0
        m = metrics.match_objects(ref, view)
        ref_fg, res_fg = ref != 0, view != 0
        rows.append(
            FrameRow(
                gt_file=gt.path.name,
                frame=frame,
                slice=gt.slice,
                objects=int(m.ref_labels.size),
                matched=int(np.count_nonzero(m.res_labels)),
                jaccard_sum=float(m.jaccard.sum()),
                seg=metrics.seg_score(m.jaccard),
                dice=metrics.dice(ref_fg, res_fg),
                hausdorff=metrics.hausdorff(ref_fg, res_fg),
                missing_result=res is None,
                complete=complete,
                losses=seg_losses(m),
            )
        )
    det = None
    if marker is not None:
        view = _result_view(res, markers, ctc.GTFile(marker.path, frame), res_path)
        det = metrics.detection_errors(markers, view)
    return rows, det


def evaluate(res_dir: Path, gt_dir: Path, workers: int | None = None, progress=None) -> Report:
    """Score the ``maskNNN.tif`` files of ``res_dir`` against ``gt_dir`` (``01_GT`` or ``01_GT/SEG``).

    A reference frame without a result file scores 0 for all of its objects and is listed in
    ``Report.missing_frames`` (the official tool refuses such a result; we score and warn).
    ``progress`` is called with no arguments after each time point.
    """
    seg_dir, tra_dir = ctc.resolve_gt_dir(Path(gt_dir))
    masks = ctc.list_masks(Path(res_dir))
    if not masks:
        raise UserError("no result masks named maskNNN.tif", res_dir)
    gt_by_frame: dict[int, list[ctc.GTFile]] = defaultdict(list)
    for g in ctc.list_gt(seg_dir):
        gt_by_frame[g.frame].append(g)
    markers = ctc.list_markers(tra_dir) if tra_dir is not None else {}
    frames = sorted(set(gt_by_frame) | set(markers))
    workers = workers or min(8, os.cpu_count() or 1)

    def task(frame: int):
        out = _score_frame(frame, gt_by_frame.get(frame, []), markers.get(frame), masks)
        if progress is not None:
            progress()
        return out

    rows: list[FrameRow] = []
    det_total = metrics.DetErrors(0, 0, 0, 0)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for frame_rows, det in pool.map(task, frames):
            rows.extend(frame_rows)
            if det is not None:
                det_total = det_total + det

    objects = sum(r.objects for r in rows)
    seg = sum(r.jaccard_sum for r in rows) / objects if objects else float("nan")
    full = [r for r in rows if r.complete is not False]  # Dice/Hausdorff only where every cell is annotated
    det = metrics.det_score(det_total) if markers else None
    return Report(
        res_dir=str(res_dir),
        gt_dir=str(gt_dir),
        seg=seg,
        det=det,
        op_csb=None if det is None else (seg + det) / 2,
        dice=float(np.mean([r.dice for r in full])) if full else float("nan"),
        hausdorff=float(np.mean([r.hausdorff for r in full])) if full else float("nan"),
        objects=objects,
        det_errors=det_total if markers else None,
        missing_frames=sorted({r.frame for r in rows if r.missing_result}),
        dice_files=[r.gt_file for r in full],
        rows=rows,
        seg_losses=sum((r.losses for r in rows), SegLosses()),
    )


def count_frames(gt_dir: Path) -> int:
    """Number of time points `evaluate` will visit (for a progress bar)."""
    seg_dir, tra_dir = ctc.resolve_gt_dir(Path(gt_dir))
    frames = {g.frame for g in ctc.list_gt(seg_dir)}
    if tra_dir is not None:
        frames |= set(ctc.list_markers(tra_dir))
    return len(frames)


def _finite_or_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite_or_none(v) for v in x]
    return x


def report_to_json(report: Report) -> str:
    """The report as strict JSON (non-finite numbers such as an infinite Hausdorff become null)."""
    return json.dumps(_finite_or_none(asdict(report)), indent=2)


def write_json(report: Report, path: Path) -> None:
    """Write the report as JSON atomically."""
    write_text(path, report_to_json(report))


def _fmt(x: float | None, digits: int = 6) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def print_report(report: Report, console, per_frame: bool = True) -> None:
    """Print the per-frame table (optional) and the summary with rich."""
    from rich import box
    from rich.table import Table

    if per_frame:
        # Compact enough for an 80-column terminal: short headers, no slice column for 2D GT.
        slices = any(r.slice is not None for r in report.rows)
        table = Table(title=f"{report.res_dir} vs {report.gt_dir}", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("reference file", no_wrap=True)
        for col in ("frame", *(("slice",) if slices else ()), "objects", "matched", "SEG", "Dice", "Hausdorff"):
            table.add_column(col, justify="right", no_wrap=True)
        for r in report.rows:
            name = r.gt_file + (" [yellow](no result)[/]" if r.missing_result else "")
            partial = r.complete is False  # its Dice/Hausdorff count unannotated cells as errors: shown dim
            dim = "[dim]" if partial else ""
            table.add_row(
                name, str(r.frame), *((("" if r.slice is None else str(r.slice)),) if slices else ()), str(r.objects),
                str(r.matched), _fmt(r.seg, 4), dim + _fmt(r.dice, 4), dim + _fmt(r.hausdorff, 2),
            )
        console.print(table)
    summary = Table(title="overall", show_header=True, box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("SEG", "DET", "OP_CSB", "Dice", "Hausdorff", "objects", "frames"):
        summary.add_column(col, justify="right")
    summary.add_row(
        _fmt(report.seg), _fmt(report.det), _fmt(report.op_csb), _fmt(report.dice, 4), _fmt(report.hausdorff, 2),
        str(report.objects), str(len({r.frame for r in report.rows})),
    )
    console.print(summary)
    if len(report.dice_files) < len(report.rows):
        console.print(f"Dice and Hausdorff over the {len(report.dice_files)} fully annotated reference file(s) of "
                      f"{len(report.rows)} (the others leave cells with a TRA marker unannotated): "
                      + (", ".join(report.dice_files) or "none"))
    if report.objects:
        lost, n = report.seg_losses.shares(), report.seg_losses
        console.print(f"1 − SEG = {sum(lost.values()):.3f} = " + " + ".join(f"{k} {lost[k]:.3f}" for k in KINDS))
        console.print("(reference objects: " + ", ".join(f"{getattr(n, k)} {k}" for k in KINDS) + ")")
    if report.det_errors is not None:
        e = report.det_errors
        console.print(f"DET errors: {e.fn} false negatives, {e.fp} false positives, {e.ns} splits, {e.markers} markers")
