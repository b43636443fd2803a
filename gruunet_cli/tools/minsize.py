"""The smallest object size kept, chosen on the training video's own unannotated frames.

A model trained on partial CTC gold truth learns the annotated cells well but leaves small
false positives in far background, and DET counts each of them. The training video has frames
that no SEG reference annotates but whose cells all carry a TRA marker; they were never in the
loss, so segmenting them and scoring DET against the markers is a fair validation of
``min_size``. Candidates stay below the smallest annotated cell of the training video, so no
size that would drop a real cell of the training data can be chosen.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import PostConfig
from ..evaluation import metrics
from ..files import ctc, modelfile
from ..inference import instances, scale
from ..inference.segment import Predictor

CANDIDATES = (15, 25, 50, 100, 200, 400, 800, 1600, 3200)


@dataclass(frozen=True)
class MinSizeChoice:
    min_size: int  # chosen (pixels of the original frames)
    det: dict[int, float]  # DET against the markers, by candidate
    frames: tuple[int, ...]  # the frames scored
    ceiling: int | None  # smallest annotated cell of the training video (px); candidates stay below


def unannotated_frames(images: Path, gt: Path, count: int = 9) -> list[int]:
    """Up to ``count`` evenly spaced frames with TRA markers and no SEG reference."""
    seg_dir, tra_dir = ctc.resolve_gt_dir(gt)
    if tra_dir is None:
        return []
    annotated = {g.frame for g in ctc.list_gt(seg_dir)}
    have = {f.frame for f in ctc.list_images(images)}
    free = sorted(set(ctc.list_markers(tra_dir)) - annotated & have)
    if len(free) <= count:
        return free
    return [free[int(i)] for i in np.linspace(0, len(free) - 1, count).round()]


def smallest_annotated(gt: Path) -> int | None:
    """Size (px) of the smallest object in the SEG references, None without any."""
    seg_dir, _ = ctc.resolve_gt_dir(gt)
    sizes = [metrics.label_sizes(ctc.read_tiff(g.path))[1][1:] for g in ctc.list_gt(seg_dir)]
    sizes = [s[s > 0] for s in sizes if s.size]
    return int(min(s.min() for s in sizes if s.size)) if any(s.size for s in sizes) else None


def det_by_min_size(probs: list[tuple[np.ndarray, float]], markers: list[np.ndarray], post: PostConfig,
                    sizes: tuple[int, ...], in_plane: bool = False) -> dict[int, float]:
    """DET of the labels each candidate ``min_size`` gives.

    Args:
        probs: per frame, (foreground probability (*s) at the model's scale, the in-plane factor
            the frame was resized by); markers: per frame, TRA markers (*S) at the original size.
        post: the model's post-processing; only ``min_size`` changes (in original pixels).
        in_plane: 3D frames labelled by a 2D model (growth stays in-plane).
    """
    out = {}
    for size in sizes:
        total = metrics.DetErrors(0, 0, 0, 0)
        for (p, f), mk in zip(probs, markers):
            cfg = dataclasses.replace(post, min_size=int(round(size * f * f)))
            labels = scale.labels_to_shape(instances.probability_to_labels(p, cfg, in_plane), mk.shape)
            labels = instances.filled(labels, cfg, in_plane)  # as `segment` writes it: a marker may lie in a hole
            total = total + metrics.detection_errors(mk, labels)
        out[size] = metrics.det_score(total)
    return out


def pick(det: dict[int, float]) -> int:
    """The candidate with the best DET; the smallest among equals (drops the fewest objects).

    >>> pick({15: 0.77, 100: 0.86, 400: 0.93, 800: 0.93})
    400
    """
    best = max(det.values())
    return min(s for s, d in det.items() if d == best)


def segment_factor(predictor: Predictor, image: np.ndarray) -> float:
    """The in-plane factor `segment` resizes ``image`` by with the predictor's options."""
    d, model_d = predictor.opts.diameter, predictor.meta.object_diameter
    if d is None or not model_d:
        return 1.0
    if d != "auto":
        return scale.factor(model_d, float(d), auto=False) or 1.0
    predictor.labels(image)  # the first pass (and probes) of --diameter auto find the factor
    return float(predictor.last_scale["factor"] or 1.0)


def choose(predictor: Predictor, images: Path, gt: Path, count: int = 9) -> MinSizeChoice | None:
    """Choose ``min_size`` for ``predictor`` on the unannotated frames of (images, gt), each frame
    resized as ``segment`` resizes it with the predictor's options (a given diameter, or the
    factor ``--diameter auto`` finds); None when the video has no such frames."""
    frames = unannotated_frames(images, gt, count)
    if not frames:
        return None
    ceiling = smallest_annotated(gt)
    sizes = tuple(s for s in CANDIDATES if ceiling is None or s < ceiling) or (predictor.post.min_size,)
    imgs = {x.frame: x.path for x in ctc.list_images(images)}
    tra = ctc.list_markers(ctc.resolve_gt_dir(gt)[1])
    probs, markers = [], []
    for t in frames:
        image = ctc.read_tiff(imgs[t])
        f = segment_factor(predictor, image)
        resized = scale.resize_plane(image, f) if f != 1.0 else image
        probs.append((predictor.probabilities(resized)[0], f))
        markers.append(ctc.read_tiff(tra[t].path))
    in_plane = probs[0][0].ndim == 3 and predictor.dims == 2
    det = det_by_min_size(probs, markers, predictor.post, sizes, in_plane)
    return MinSizeChoice(min_size=pick(det), det=det, frames=tuple(frames), ceiling=ceiling)


def record(weights: Path, choice: MinSizeChoice) -> None:
    """Make the choice the model file's ``min_size`` (so `segment` and CTC scripts use it) and
    record how it was made in the file's training provenance."""
    model, meta = modelfile.load(weights)
    why = {"min_size": choice.min_size, "det_by_min_size": {str(k): round(v, 4) for k, v in choice.det.items()},
           "frames": list(choice.frames), "smallest_annotated_px": choice.ceiling}
    modelfile.save(weights, model, dataclasses.replace(meta, post=dataclasses.replace(meta.post, min_size=choice.min_size),
                                                       training={**meta.training, "min_size_choice": why}))
