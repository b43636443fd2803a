"""How a model measures cells larger than its own, calibrated on its validation frames.

`segment --diameter auto` measures an image's cells on a first pass at full size and resizes the
image so they get the model's size. Cells larger than the model's come out narrower on that pass
than they are: `gruunet-nuclei` (17-px nuclei) drew the larger nuclei of 7 DSB validation images
at a median 0.91 of the reference's diameter (0.61–0.98), so such images were shrunk too little:
on the bundled 01 image 7% too many pixels per side, which costs time (validation SEG is level
either way). This module measures that ratio on the validation frames (on which the network
was never trained) and records it in the model file (``ModelMeta.large_cell_ratio``); the first
pass's diameters of cells larger than the model's are divided by it (`Predictor.auto_scale`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import images, modelfile
from ..inference import scale
from ..inference.passes import SharedPasses
from ..inference.segment import Predictor, SegmentOptions
from . import outline, rejoin

MIN_FRAMES = 3  # fewer frames with large cells say too little: the ratio stays unset


@dataclass(frozen=True)
class Sizing:
    ratio: float | None  # median of ``ratios``; None with fewer than the frames asked for
    ratios: dict[str, float]  # per reference file with cells larger than the model's: measured / reference diameter


def first_pass_diameter(predictor: Predictor, image: np.ndarray) -> float | None:
    """The diameter the first pass of ``--diameter auto`` measures on the whole image when its cells
    are larger than the model's (by `scale.TOLERANCE`) and taken as measured, before calibration;
    None otherwise (cells about the model's size or smaller, or probed shrunk)."""
    model_d = predictor.meta.object_diameter
    if not model_d:  # no training size: auto takes images as they are
        return None
    first = predictor.labels_from(predictor.probabilities(image)[0], image)
    d = scale.Probe(1.0, first).diameter  # uncalibrated, and before `auto_scale` checks it again
    # `auto_scale` probes shrunk only below TOLERANCE times the model's size: above, this is its measure.
    return d if d is not None and d >= model_d * scale.TOLERANCE else None


def measure(predictor: Predictor, pairs: list[tuple[Path, Path]], min_frames: int = MIN_FRAMES) -> Sizing:
    """The ratio on (image, reference) files: per frame whose first pass finds cells larger than
    the model's, that pass's median diameter over the reference's; their median."""
    ratios = {}
    for image_path, ref_path in pairs:
        image, ref = images.read_grey(image_path)[0], images.read_labels(ref_path)
        d, d_ref = first_pass_diameter(predictor, image), scale.object_diameter([ref])
        if d is not None and d_ref:
            ratios[ref_path.name] = d / d_ref
    ratio = float(np.clip(np.median(list(ratios.values())), 0.25, 4.0)) if len(ratios) >= min_frames else None
    return Sizing(ratio, ratios)


def record(weights: Path, sizing: Sizing) -> None:
    """Make ``sizing.ratio`` the model file's ``large_cell_ratio`` and record how it was measured."""
    model, meta = modelfile.load(weights)
    why = {"ratio": sizing.ratio, "frames": {k: round(v, 4) for k, v in sizing.ratios.items()}}
    modelfile.save(weights, model, dataclasses.replace(meta, large_cell_ratio=sizing.ratio,
                                                      training={**meta.training, "large_cell_sizing": why}))


def describe(sizing: Sizing) -> str:
    """One line for the user."""
    n = len(sizing.ratios)
    if sizing.ratio is None:
        return f"large cells: {n} validation frame(s) with cells larger than the model's (< {MIN_FRAMES}); measured as they are"
    return (f"large cells: the first pass measures them at {sizing.ratio:.3f} of their diameter (median of {n} "
            "validation frames); --diameter auto corrects for it")


def after_training(weights: Path, opts: SegmentOptions, try_tta: bool = False) -> list[str]:
    """What `train` does at its end, on the model file's validation frames: measure how it sizes
    large cells (this first: it decides how `segment` resizes them), then choose the outline and
    split depth (`outline`; with ``try_tta`` also whether to average flips and rotations), and last,
    with those, whether to rejoin cells the chosen probe cut (`rejoin`); all are recorded in the
    file. Returns a line for each.

    Each step segments the same frames again with the file as the step before left it; none of
    those choices changes a network pass, so the steps share them (`inference.passes`): the first
    passes run here, the probes and final passes in the outline step, and the rejoin step runs none
    of its own (within the cache's bound)."""
    pairs = outline.validation_pairs(weights)
    passes = SharedPasses()
    predictor = Predictor(weights, opts)
    passes.add([predictor])
    sizing = measure(predictor, pairs)
    record(weights, sizing)
    return [describe(sizing), outline.choose_and_record(weights, opts, try_tta, passes),
            rejoin.choose_and_record(weights, opts, pairs, passes)]


def main(argv: list[str] | None = None) -> None:
    """``python -m gruunet_cli.tools.sizing weights/NAME [THREADS]``: measure and record the ratio for
    a model file trained before `train` did it (its validation frames must be where it recorded them)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    weights = modelfile.weights_path(args[0])
    threads = int(args[1]) if len(args) > 1 else None
    sizing = measure(Predictor(weights, SegmentOptions(threads=threads)), outline.validation_pairs(weights))
    record(weights, sizing)
    print(describe(sizing))


if __name__ == "__main__":
    main()
