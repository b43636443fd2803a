"""`gruunet demo`: the bundled sample segmented with the bundled weights, scored, with an overlay."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import UserError
from ..evaluation.evaluate import Report, evaluate
from ..files.atomic import writable_dir
from ..inference import segment

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "ctc" / "sample" / "StarDist-nuclei-2D"
# The default model of `demo`, `segment` and the benches: the generalist nuclei model (456 DSB
# images; weights/gruunet-nuclei.md), ahead of the single-image `gruunet-stardist2d` on four
# of the five sets both cards score.
WEIGHTS = REPO / "weights" / "gruunet-nuclei.safetensors"


# What the demo's scores mean, one line each.
EXPLAIN = (
    "SEG: the CTC's segmentation score, mean Jaccard (overlap) over the reference cells, 0..1, higher is better",
    "DET: the CTC's detection score (missed, spurious and merged cells), 0..1, higher is better",
    "Dice: pixel overlap of foreground and reference, 0..1, higher is better",
    "Hausdorff: the largest distance between the outlines, in pixels, lower is better",
)


def run(out: Path, sample: Path = SAMPLE, weights: Path = WEIGHTS, seq: str = "02",
        opts: segment.SegmentOptions = segment.SegmentOptions(),
        log: Callable[[str], None] | None = None) -> tuple[Report, Path, Path]:
    """Segment ``sample/<seq>`` into ``out/<seq>_RES`` (overlays in ``out/overlay``) and score it
    against ``sample/<seq>_GT``. Returns (report, result folder, overlay folder)."""
    images, gt = sample / seq, sample / f"{seq}_GT"
    if not images.is_dir() or not gt.is_dir():
        raise UserError(f"no bundled sample here (expected {seq}/ and {seq}_GT/; pass --sample)", sample)
    if not Path(weights).exists() and not Path(str(weights) + ".safetensors").exists():
        raise UserError("no bundled weights here (pass --weights)", weights)
    writable_dir(out)
    res, overlay = Path(out) / f"{seq}_RES", Path(out) / "overlay"
    segment.run(images, res, weights, opts, overlay_dir=overlay,
                on_scale=None if log is None else lambda name, sc: log(segment.describe_scale(name, sc)))
    return evaluate(res, gt), res, overlay

