"""Whether `--diameter auto` rejoins the cells its chosen probe cut (``post.rejoin``), chosen on
the validation frames.

The probe whose cells agree with the next smaller one overall can still cut a few cells far above
the network's size into pieces; `scale.rejoined` takes such a cell whole as the smaller probe
found it. Whether that helps depends on the model: `gruunet-nuclei` cuts large textured nuclei
(GOWT1 02: SEG 0.781 → 0.799 with it), while `gruunet-stardist2d`'s smaller probes merge touching
nuclei into convex blobs, and rejoining them cost it 0.02–0.09 on its enlarged validation rows.
So `train` segments its validation frames both ways, exactly as `segment` does by default, and
keeps the one with the higher SEG (off among equals: most frames never reach the probes). Both
ways share their network passes (`inference.passes`), so this costs one segmentation per frame.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..evaluation import metrics
from ..files import images, modelfile
from ..inference.passes import SharedPasses
from ..inference.segment import Predictor, SegmentOptions


@dataclass(frozen=True)
class RejoinChoice:
    rejoin: bool  # the chosen ``post.rejoin``
    seg: dict[str, float]  # "off" / "on": SEG over every reference object of the frames
    frames: tuple[str, ...]  # the reference files scored
    changed: tuple[str, ...]  # those whose labels rejoining changed


def choose(weights: Path, opts: SegmentOptions, pairs: list[tuple[Path, Path]],
           passes: SharedPasses | None = None) -> RejoinChoice | None:
    """Segment (image, reference) files with ``opts`` with rejoining off and on (``opts``'s other
    overrides kept) and compare SEG; None without pairs or without ``--diameter auto`` (only auto
    probes, so only there does ``post.rejoin`` do anything). ``passes``: a cache to share (`train`'s
    end step has run these frames' passes before); by default one of this choice's own."""
    if not pairs or opts.diameter != "auto":
        return None
    predictors = {k: Predictor(weights, dataclasses.replace(opts, post_overrides={**opts.post_overrides, "rejoin": k == "on"}))
                  for k in ("off", "on")}
    own = passes is None
    passes = SharedPasses() if passes is None else passes
    passes.add(list(predictors.values()))  # both ways run the same passes
    jaccards: dict[str, list[float]] = {"off": [], "on": []}
    changed = []
    for image_path, ref_path in pairs:
        image, ref = images.read_grey(image_path)[0], images.read_labels(ref_path)
        labels = {k: p.labels(image) for k, p in predictors.items()}
        if own:  # nothing later needs this frame's passes
            passes.clear()
        for k, lab in labels.items():
            jaccards[k] += list(metrics.match_objects(ref, lab).jaccard)
        if not np.array_equal(labels["off"], labels["on"]):
            changed.append(ref_path.name)
    seg = {k: float(np.mean(v)) if v else 0.0 for k, v in jaccards.items()}
    return RejoinChoice(seg["on"] > seg["off"], seg, tuple(ref.name for _, ref in pairs), tuple(changed))


def record(weights: Path, choice: RejoinChoice) -> None:
    """Make the choice the model file's ``post.rejoin`` and record how it was made."""
    model, meta = modelfile.load(weights)
    why = {"rejoin": choice.rejoin, "seg": {k: round(v, 4) for k, v in choice.seg.items()},
           "frames": list(choice.frames), "changed": list(choice.changed)}
    modelfile.save(weights, model, dataclasses.replace(meta, post=dataclasses.replace(meta.post, rejoin=choice.rejoin),
                                                      training={**meta.training, "rejoin_choice": why}))


def describe(choice: RejoinChoice) -> str:
    """One line for the user."""
    return (f"rejoin cut large cells: {'on' if choice.rejoin else 'off'} (SEG on {len(choice.frames)} validation frame(s) "
            f"without: {choice.seg['off']:.4f}, with: {choice.seg['on']:.4f}; {len(choice.changed)} frame(s) changed)")


def choose_and_record(weights: Path, opts: SegmentOptions, pairs: list[tuple[Path, Path]],
                      passes: SharedPasses | None = None) -> str:
    """After `train`'s outline choice: choose ``post.rejoin`` on ``pairs`` (sharing ``passes``), record
    it, say what was done."""
    choice = choose(weights, opts, pairs, passes)
    if choice is None:
        return "rejoin cut large cells: not chosen (no whole validation frames, or not --diameter auto); left as the file had it"
    record(weights, choice)
    return describe(choice)
