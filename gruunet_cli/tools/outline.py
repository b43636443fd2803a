"""Where objects end and where joined ones are cut, chosen on the training video's validation frames.

A model that works on frames resized to its cell size finds its objects there, and the
outlines it draws are that coarse grid's, brought back by nearest neighbour. Its probabilities
are also not calibrated: a GOWT1 model trained with the normalized focal loss drew every cell
7–14% larger than the reference (median area ratio of matched cells), and no single threshold
fixed it, because the threshold also decides which objects exist. `instances.outline` keeps
the objects and moves only their outlines to a level of the probability resampled to the
image's own grid; this module picks that level by SEG on the validation frames, which the
loss never saw, exactly as `segment` would run on them.

The same frames choose how deep a neck must be before a blob is cut in two (``post.split_h``,
`instances.split_joined`): the default 0.5 px suits small round nuclei, but cut 11 of 121 GOWT1
cells in two along the shallow necks of their irregular outlines (the worst four then scored
Jaccard 0.53–0.64 instead of ~0.9). Each depth is scored with its best outline level; among equal
scores the shallowest depth wins.

Frames that `segment` enlarges to the model's cell size get a level of their own
(``post.outline_enlarged``) when at least `MIN_GROUP` of them and of the others are there to choose
on: the network draws an enlarged image's blurrier edges wider. On `gruunet-nuclei`'s 23 DSB
validation images the 6 enlarged ones scored best at 0.55 (SEG 0.816 against 0.781 at the single
level 0.45), the others at 0.4-0.45; six large-nucleus images shrunk 5x, so that `segment`
enlarged them 1.6-1.8x, moved from 0.45 to 0.5, the same annotations.

Every level is also tried as a fraction of each object's own peak probability
(``post.outline_peak``), kept when it scores higher: the network gives dim cells a lower peak, and
a fixed level cuts them small (`gruunet-gowt1-02` drew the dimmest quarter of GOWT1 01's cells at
0.85 of their area at 0.6, the brightest at 0.99; validation 0.939 → 0.944 at 0.6 of the peak).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import PostConfig
from ..evaluation import metrics
from ..files import ctc, images, modelfile
from ..files.sources import Layout, Source, folder_pairs
from ..inference import instances, scale
from ..inference.passes import SharedPasses
from ..inference.segment import Predictor, SegmentOptions
from .minsize import segment_factor

CANDIDATES = tuple(round(0.3 + 0.05 * i, 2) for i in range(13))  # 0.3 … 0.9
SPLIT_DEPTHS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)  # px at the network's scale
MIN_GROUP = 3  # frames, enlarged and not, before the enlarged ones get a level of their own
# Validation SEG that averaging the 8 flips and rotations (`predict.plane_mean`) must add to be kept:
# it costs 8x the time. GOWT1 01 frames, `gruunet-gowt1-01`: 0.905 → 0.921; DSB, `gruunet-nuclei`: +0.002.
TTA_GAIN = 0.005


@dataclass(frozen=True)
class OutlineChoice:
    outline: float | None  # chosen level; None: the threshold's outlines at the network's scale
    seg: dict[str, float]  # SEG on the frames by candidate ("none" for the threshold's outlines), at split_h
    frames: tuple[str, ...]  # the reference files scored
    split_h: float = 0.5  # chosen neck depth (px at the network's scale)
    seg_by_split_h: dict[str, float] = dataclasses.field(default_factory=dict)  # best SEG over levels, per depth
    # The enlarged frames' own level (None: ``outline`` for every frame), their SEG by level at
    # split_h, and how many there were; with a level of their own, ``seg`` is the other frames'.
    outline_enlarged: float | None = None
    seg_enlarged: dict[str, float] = dataclasses.field(default_factory=dict)
    enlarged_frames: int = 0
    tta: bool = False  # the probabilities averaged the 8 flips and rotations (`PostConfig.tta`)
    peak: bool = False  # levels are fractions of each object's peak probability (`PostConfig.outline_peak`)
    seg_by_peak: dict[str, float] = dataclasses.field(default_factory=dict)  # best SEG with plain / peak levels
    seg_by_tta: dict[str, float] = dataclasses.field(default_factory=dict)  # best SEG without / with, when both were tried


def validation_pairs(weights: Path) -> list[tuple[Path, Path]]:
    """(image, reference) files of the validation frames the model file names, found again in the
    sources it records (whole 2D or 3D references; single-slice ones are skipped). Names are
    those `training.data` gives: ``SEQ:GT:man_segNNN.tif`` for CTC, ``FOLDER:STEM`` for folders."""
    training = modelfile.read_meta(weights).training
    names = set(training.get("val_frames", []))
    recorded = training.get("data", {})
    out = []
    for d in recorded.get("sources", []) + recorded.get("val", []):
        src = Source(Layout(d["layout"]), Path(d["path"]), None if d.get("gt") is None else Path(d["gt"]))
        if not src.path.is_dir():
            continue
        if src.layout == Layout.ctc:
            frames = {x.frame: x.path for x in ctc.list_images(src.path)}
            out += [(frames[g.frame], g.path) for g in ctc.list_gt(ctc.resolve_gt_dir(src.gt)[0])
                    if g.slice is None and f"{src.path.name}:GT:{g.path.name}" in names and g.frame in frames]
        else:
            out += [(image, mask) for name, image, mask in folder_pairs(src) if f"{src.path.name}:{name}" in names]
    return out


def seg_by_outline(frames: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]], dims: int,
                   levels: tuple[float, ...], peak: bool = False) -> dict[str, float]:
    """SEG (mean Jaccard over all reference objects) with the threshold's outlines ("none") and
    with each level (with ``peak``: each a fraction of every object's peak probability).

    Args:
        frames: per frame, (foreground probability (*s) at the model's scale, its labels brought
            to the frame's shape (*S), the in-plane factor the frame was resized by, reference (*S)).
    """
    return {k: float(np.mean(v)) if v else 0.0 for k, v in jaccards_by_outline(frames, dims, levels, peak).items()}


def jaccards_by_outline(frames: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]], dims: int,
                        levels: tuple[float, ...], peak: bool = False) -> dict[str, list[float]]:
    """`seg_by_outline`'s Jaccard of every reference object, by candidate."""
    js: dict[str, list[float]] = {"none": [], **{str(v): [] for v in levels}}
    for p, labels, f, ref in frames:
        js["none"] += list(metrics.match_objects(ref, labels).jaccard)
        pu = p if p.shape == ref.shape else scale.probability_to_shape(p, ref.shape)
        in_plane = ref.ndim == 3 and dims == 2  # a 2D model's stack
        for v in levels:
            out = instances.outline(labels, pu, v, int(np.ceil(1 / f)) + 1, in_plane, peak)
            js[str(v)] += list(metrics.match_objects(ref, out).jaccard)
    return js


def pick(seg: dict[str, float]) -> float | None:
    """The best level; the threshold's outlines ("none") among equals, else the level nearest 0.5.

    >>> pick({"none": 0.86, "0.6": 0.90, "0.65": 0.91, "0.7": 0.91})
    0.65
    >>> pick({"none": 0.85, "0.5": 0.85}) is None
    True
    """
    best = max(seg.values())
    if seg.get("none") == best:
        return None
    return min((float(k) for k, v in seg.items() if k != "none" and v == best), key=lambda v: abs(v - 0.5))


def choose(predictor: Predictor, pairs: list[tuple[Path, Path]], levels: tuple[float, ...] = CANDIDATES,
           depths: tuple[float, ...] = SPLIT_DEPTHS) -> OutlineChoice | None:
    """Choose ``post.split_h`` and ``post.outline`` for ``predictor`` by SEG on (image, reference)
    files, each image resized as ``segment`` resizes it with the predictor's options (the network
    runs once per frame); None without pairs."""
    if not pairs:
        return None
    probs = []
    for image_path, ref_path in pairs:
        image, ref = images.read_grey(image_path)[0], images.read_labels(ref_path)
        f = segment_factor(predictor, image)
        probs.append((predictor.probabilities(scale.resize_plane(image, f) if f != 1.0 else image)[0], f, ref))
    choice = choose_from(probs, predictor.post, predictor.dims, levels, depths)
    return dataclasses.replace(choice, frames=tuple(ref.name for _, ref in pairs), tta=predictor.post.tta)


def choose_tta(weights: Path, opts: SegmentOptions, pairs: list[tuple[Path, Path]], try_tta: bool = True,
               passes: SharedPasses | None = None) -> OutlineChoice | None:
    """`choose` without averaging flips and rotations, and with ``try_tta`` also with it; the
    averaged choice is kept when its best SEG is at least `TTA_GAIN` higher. None without pairs.
    ``passes``: a cache the predictors share (`train`'s end step runs these frames' passes again)."""
    def run(tta: bool) -> OutlineChoice | None:
        predictor = Predictor(weights, dataclasses.replace(opts, post_overrides={**opts.post_overrides, "tta": tta}))
        if passes is not None:
            passes.add([predictor])
        return choose(predictor, pairs)

    plain = run(False)
    if not try_tta or plain is None:
        return plain
    averaged = run(True)
    assert averaged is not None
    best = {"off": max(plain.seg_by_split_h.values()), "on": max(averaged.seg_by_split_h.values())}
    return dataclasses.replace(averaged if best["on"] >= best["off"] + TTA_GAIN else plain, seg_by_tta=best)


def choose_from(probs: list[tuple[np.ndarray, float, np.ndarray]], post: PostConfig, dims: int,
                levels: tuple[float, ...] = CANDIDATES, depths: tuple[float, ...] = SPLIT_DEPTHS) -> OutlineChoice:
    """`choose` on probabilities already computed: per frame (foreground probability (*s) at the
    model's scale, the factor the frame was resized by, reference (*S)); ``post`` is the model's.
    Levels are tried as they are and as fractions of each object's peak (`instances.outline`)."""
    post = dataclasses.replace(post, outline=None, outline_enlarged=None, outline_peak=False)
    enlarged = [f > 1.0 for _, f, _ in probs]
    grouped = MIN_GROUP <= sum(enlarged) <= len(probs) - MIN_GROUP
    by_key: dict[tuple[float, bool], tuple[dict[str, float], dict[str, float]]] = {}
    best: dict[tuple[float, bool], float] = {}
    for h in depths if post.split else (post.split_h,):
        scored = []
        for p, f, ref in probs:
            cfg = dataclasses.replace(post, split_h=h, min_size=int(round(post.min_size * f * f)))
            in_plane = ref.ndim == 3 and dims == 2
            labels = scale.labels_to_shape(instances.probability_to_labels(p, cfg, in_plane), ref.shape)
            scored.append((p, instances.filled(labels, cfg, in_plane), f, ref))  # "none" as `segment` writes it
        for peak in (False, True):
            if not grouped:
                by_key[h, peak] = (seg_by_outline(scored, dims, levels, peak), {})
                best[h, peak] = max(by_key[h, peak][0].values())
                continue
            # Each group at its own best level; SEG over all objects of both. The enlarged frames'
            # level is a level: None there means "as the others".
            rest, big = (jaccards_by_outline([s for s, e in zip(scored, enlarged) if e == g], dims, levels, peak)
                         for g in (False, True))
            by_key[h, peak] = ({k: float(np.mean(v)) if v else 0.0 for k, v in rest.items()},
                               {k: float(np.mean(v)) if v else 0.0 for k, v in big.items() if k != "none"})
            n_rest, n_big = len(rest["none"]), len(big["none"])
            best[h, peak] = (max(by_key[h, peak][0].values()) * n_rest + max(by_key[h, peak][1].values()) * n_big) / max(n_rest + n_big, 1)
    h, peak = min(best, key=lambda k: (-best[k], k))  # the best; the shallowest, then plain levels, among equals
    by_h = {str(d): max(best[d, False], best[d, True]) for d in dict.fromkeys(d for d, _ in best)}
    by_peak = {m: max(v for (_, pk), v in best.items() if pk == (m == "peak")) for m in ("level", "peak")}
    seg, seg_big = by_key[h, peak]
    return OutlineChoice(outline=pick(seg), seg=seg, frames=(), split_h=h, seg_by_split_h=by_h,
                         outline_enlarged=pick(seg_big) if grouped else None, seg_enlarged=seg_big,
                         enlarged_frames=sum(enlarged) if grouped else 0, peak=peak,
                         seg_by_peak=by_peak)


def record(weights: Path, choice: OutlineChoice) -> None:
    """Make the choice the model file's ``post.outline`` and ``post.split_h``, and record how it was made."""
    model, meta = modelfile.load(weights)
    why = {"outline": choice.outline, "seg_by_outline": {k: round(v, 4) for k, v in choice.seg.items()},
           "split_h": choice.split_h, "seg_by_split_h": {k: round(v, 4) for k, v in choice.seg_by_split_h.items()},
           "frames": list(choice.frames), "outline_enlarged": choice.outline_enlarged,
           "seg_by_outline_enlarged": {k: round(v, 4) for k, v in choice.seg_enlarged.items()},
           "enlarged_frames": choice.enlarged_frames, "tta": choice.tta, "seg_by_tta": {k: round(v, 4) for k, v in choice.seg_by_tta.items()},
           "outline_peak": choice.peak, "seg_by_peak": {k: round(v, 4) for k, v in choice.seg_by_peak.items()}}
    post = dataclasses.replace(meta.post, outline=choice.outline, outline_enlarged=choice.outline_enlarged, split_h=choice.split_h,
                               tta=choice.tta, outline_peak=choice.peak)
    modelfile.save(weights, model, dataclasses.replace(meta, post=post, training={**meta.training, "outline_choice": why}))


def describe(choice: OutlineChoice) -> str:
    """One line for the user: the level and the SEG behind it."""
    depths = ", ".join(f"{k}: {v:.3f}" for k, v in choice.seg_by_split_h.items())
    return (f"outline {'off' if choice.outline is None else choice.outline}{' of each object’s peak' if choice.peak else ''} (SEG on {len(choice.frames)} validation "
            "frame(s)" + (f", {choice.enlarged_frames} enlarged ones apart" if choice.seg_enlarged else "") + ": "
            + ", ".join(f"{k}: {v:.3f}" for k, v in choice.seg.items()) + ")"
            + (f"; enlarged frames {choice.outline_enlarged} (" + ", ".join(f"{k}: {v:.3f}" for k, v in choice.seg_enlarged.items()) + ")"
               if choice.seg_enlarged else "") + f"; split depth {choice.split_h} px (best SEG by depth: {depths})"
            + (f"; flips and rotations averaged: {'yes' if choice.tta else 'no'} (best SEG without: {choice.seg_by_tta['off']:.3f}, "
               f"with: {choice.seg_by_tta['on']:.3f})" if choice.seg_by_tta else "")
            + (f"; best SEG with levels as they are: {choice.seg_by_peak['level']:.3f}, as fractions of each object’s peak: "
               f"{choice.seg_by_peak['peak']:.3f}" if choice.seg_by_peak else ""))


def choose_and_record(weights: Path, opts: SegmentOptions, try_tta: bool = False,
                      passes: SharedPasses | None = None) -> str:
    """After `train`: choose the outline on the model file's validation frames, segmented with
    ``opts`` (and with ``try_tta`` whether to average flips and rotations: `choose_tta`; sharing
    ``passes``), record it, and say what was done."""
    choice = choose_tta(weights, opts, validation_pairs(weights), try_tta, passes)
    if choice is None:
        return "outline: no whole validation frames found again to choose it on; left at the threshold's"
    record(weights, choice)
    return describe(choice)
