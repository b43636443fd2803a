"""`gruunet demo`: the bundled sample segmented with the bundled weights, scored, with an overlay."""

from __future__ import annotations

from pathlib import Path

from . import segment
from .atomic import writable_dir
from .errors import UserError
from .evaluate import Report, evaluate

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "ctc" / "sample" / "StarDist-nuclei-2D"
WEIGHTS = REPO / "weights" / "gruunet-stardist2d.safetensors"


def run(out: Path, sample: Path = SAMPLE, weights: Path = WEIGHTS, seq: str = "02",
        opts: segment.SegmentOptions = segment.SegmentOptions()) -> tuple[Report, Path, Path]:
    """Segment ``sample/<seq>`` into ``out/<seq>_RES`` (overlays in ``out/overlay``) and score it
    against ``sample/<seq>_GT``. Returns (report, result folder, overlay folder)."""
    images, gt = sample / seq, sample / f"{seq}_GT"
    if not images.is_dir() or not gt.is_dir():
        raise UserError(f"no bundled sample here (expected {seq}/ and {seq}_GT/; pass --sample)", sample)
    if not Path(weights).exists() and not Path(str(weights) + ".safetensors").exists():
        raise UserError("no bundled weights here (pass --weights)", weights)
    writable_dir(out)
    res, overlay = Path(out) / f"{seq}_RES", Path(out) / "overlay"
    segment.run(images, res, weights, opts, overlay_dir=overlay)
    return evaluate(res, gt), res, overlay

