"""`gruunet segment`: CTC masks (``maskNNN.tif``) for every frame of a sequence, 2D or 3D, any size.

Per frame: percentile normalisation (the model file's), tiled prediction of the foreground
probability, instances by `instances.probability_to_labels`, an atomic write. A 3D stack with a
2D model is predicted slice by slice and its labels are linked across slices by 3D connectivity.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .. import distributed
from ..config import Arch, PostConfig
from ..errors import UserError
from ..files import ctc, images, modelfile
from ..files.atomic import writable_dir
from . import instances, normalize, scale
from .jobs import Job, check_image, input_jobs, mask_is_done
from .outputs import SCALES_FILE, describe_scale, write_iterations, write_overlay, write_scales
from .predict import probability
from .runtime import resolve_device, set_threads


@dataclass(frozen=True)
class SegmentOptions:
    """How to run inference. ``post`` overrides the model file's post-processing when given."""

    tile: int | None = None  # tile side (px) along H and W; None: `tiling.plan_tile` (whole image when it fits)
    tile_z: int = 64  # tile depth for 3D models
    overlap: int = 64  # overlap between tiles (px)
    batch: int | None = None  # tiles per forward pass (default: 1 on CPU, where bigger batches only thrash caches; 4 on GPU)
    device: str = "auto"
    amp: bool = True  # mixed precision on GPU
    threads: int | None = None  # CPU threads
    overwrite: bool = False
    post: PostConfig | None = None
    # Or single post-processing fields (threshold=..., min_size=...) replacing the model file's.
    post_overrides: dict[str, object] = dataclasses.field(default_factory=dict)
    # Cell diameter in px of the images to segment, or "auto" (estimated by a first pass); the
    # image is resized so its cells have the training size (`scale.py`). None: as is.
    diameter: float | Literal["auto"] | None = "auto"
    channel: int | None = None  # colour / channel to segment (default: RGB → grey, others must choose)


# A given --diameter may resize images by at most this factor either way (beyond it a typo such as
# 0.01 would ask for hundreds of GiB, or shrink cells to nothing).
MAX_GIVEN_FACTOR = 8.0


class Predictor:
    """A loaded model plus everything needed to turn an image into probabilities and labels."""

    def __init__(self, weights: Path, opts: SegmentOptions) -> None:
        set_threads(opts.threads)
        self.device = resolve_device(opts.device)
        self.model, self.meta = modelfile.load(weights, self.device)
        self.opts = opts
        self.post = opts.post or dataclasses.replace(self.meta.post, **opts.post_overrides)
        if opts.diameter not in (None, "auto"):
            if not self.meta.object_diameter:
                raise UserError("this model file records no training cell size; segment with --diameter auto or off", weights)
            d, f = float(opts.diameter), self.meta.object_diameter / float(opts.diameter)
            if not 1 / MAX_GIVEN_FACTOR <= f <= MAX_GIVEN_FACTOR:
                lo, hi = self.meta.object_diameter / MAX_GIVEN_FACTOR, self.meta.object_diameter * MAX_GIVEN_FACTOR
                raise UserError(f"--diameter {d:g} would resize images {f:.3g}x (the model's cells are "
                                f"{self.meta.object_diameter:.1f} px); give a diameter between {lo:.1f} and {hi:.1f} px")

    @property
    def batch(self) -> int:
        return self.opts.batch or (4 if self.device.type == "cuda" else 1)

    @property
    def dims(self) -> int:
        return self.meta.model.dims

    def probabilities(self, image: np.ndarray, iterations: bool = False,
                      norm: tuple[float, float] | None = None) -> np.ndarray:
        """Foreground probability of a raw image: (K, *S) float32 (K = 1, or 9 per-step maps);
        ``norm``: the (low, high) percentiles to normalise with (default: the image's own)."""
        lo, hi = norm or normalize.percentiles(image, self.meta.norm)
        o = self.opts
        return probability(self.model, image, self.device, tile=o.tile, tile_z=o.tile_z, overlap=o.overlap,
                           batch=self.batch, amp=o.amp, prepare=lambda t: normalize.apply(t, lo, hi, self.meta.norm.gamma),
                           iterations=iterations, tta=self.post.tta)

    def labels(self, image: np.ndarray, p_fg: np.ndarray | None = None) -> np.ndarray:
        """Instance labels (uint16, 0 = background) of the same shape as ``image``.

        ``p_fg`` (*S): the image's foreground probability when already computed. With
        ``opts.diameter`` the image is first resized in-plane so that its cells have the size
        the model was trained on; labels are found at that scale and resized back. What was
        measured and used is left in ``self.last_scale`` (diameter, factor).
        """
        self.last_scale: dict[str, float | None] = {"diameter": None, "factor": 1.0}

        def as_is() -> tuple[np.ndarray, np.ndarray]:
            """(labels before `outlined`, which measure the cells; the probability)."""
            p = self.probabilities(image)[0] if p_fg is None else p_fg
            return self.labels_from(p, image), p

        model_d = self.meta.object_diameter
        if self.opts.diameter is None or not model_d:  # resizing needs the training size
            return self.outlined(*as_is(), 1.0)
        if self.opts.diameter == "auto":
            return self.auto_labels(image, *as_is()) if p_fg is not None else self.window_labels(image, as_is)
        diameter = float(self.opts.diameter)
        f = scale.factor(model_d, diameter, auto=False)
        self.last_scale = {"diameter": diameter, "factor": f}
        return self.labels_at(image, f)

    def labels_at(self, image: np.ndarray, f: float) -> np.ndarray:
        """Labels found on the image resized in-plane by ``f``, brought back to its shape."""
        resized = scale.resize_plane(image, f)
        p = self.probabilities(resized)[0]
        labels = scale.labels_to_shape(self.labels_from(p, resized, f), image.shape)
        return self.outlined(labels, p, f)

    def outlined(self, labels: np.ndarray, p_fg: np.ndarray, f: float) -> np.ndarray:
        """``labels`` (*S, the image's shape) re-outlined on the probability ``p_fg`` (*s, found on
        the image resized by ``f``) when the model file sets an outline level for such images
        (`PostConfig.outline_at`)."""
        level = self.post.outline_at(f)
        if level is None:
            return instances.filled(labels, self.post, labels.ndim == 3 and self.dims == 2)
        reach = int(np.ceil(1 / f)) + 1  # one pixel of the network's grid, and one more
        p = p_fg if p_fg.shape == labels.shape else scale.probability_to_shape(p_fg, labels.shape)
        return instances.outline(labels, p, level, reach, labels.ndim == 3 and self.dims == 2, self.post.outline_peak, self.post.fill_holes)

    def auto_labels(self, image: np.ndarray, first: np.ndarray, p_first: np.ndarray, fragments: bool = False) -> np.ndarray:
        """``--diameter auto``: the first pass's labels ``first`` (from ``p_first``, not yet
        `outlined`) measure the cells (`auto_scale`); the image is segmented again only when
        it must be resized, and a shrunk probe's labels are kept when the probes chose one."""
        d, f, chosen = self.auto_scale(image, first, fragments=fragments)
        self.last_scale = {"diameter": d, "factor": f or 1.0}
        if chosen is not None:
            return self.outlined(scale.labels_to_shape(chosen.labels, image.shape), chosen.p_fg, chosen.scale)
        return self.outlined(first, p_first, 1.0) if f is None else self.labels_at(image, f)

    def window_labels(self, image: np.ndarray, as_is: Callable[[], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """``--diameter auto``, measuring cells on a window of the image (`scale.window`, normalised
        as the whole image) when the cells it measures (at the chosen probe's scale) number `scale.MIN_CELLS`; then the whole
        image is segmented once, at the scale chosen (``as_is()`` when none). Otherwise, and for
        an image no larger than the window, the image's own first pass measures (`auto_labels`),
        probing it where the window's cells were fragments (its own pass may find specks)."""
        if (win := scale.window(image)) is not None:
            norm = normalize.percentiles(image, self.meta.norm)
            view = np.ascontiguousarray(image[(..., *win)])
            first = self.labels_from(self.probabilities(view, norm=norm)[0], view)
            d, f, chosen = self.auto_scale(view, first, norm)
            if scale.count(first if chosen is None else chosen.labels) >= scale.MIN_CELLS:  # the cells measured
                self.last_scale = {"diameter": d, "factor": f or 1.0}
                return self.outlined(*as_is(), 1.0) if f is None else self.labels_at(image, f)
        return self.auto_labels(image, *as_is(), fragments=win is not None and chosen is not None)  # window: fragments, too few

    def auto_scale(self, image: np.ndarray, first: np.ndarray, norm: tuple[float, float] | None = None,
                   fragments: bool = False) -> tuple[float | None, float | None, scale.Probe | None]:
        """(cell diameter, resize factor or None, probe whose labels to keep or None) from the labels ``first``
        of a pass at full size. Larger cells than the model's are brought to its size and checked there
        (`scale.LARGER`); smaller ones may be fragments, so shrunk probes (`scale.PROBE_SCALES`) decide
        (`scale.fragmented`, or ``fragments`` known; `scale.whole_probe`). ``norm``: a window's, as its image."""
        model_d = self.meta.object_diameter
        full = scale.Probe(1.0, first)
        d1 = full.diameter
        if d1 is None or d1 < model_d * scale.TOLERANCE:
            scales = [s for s in scale.PROBE_SCALES if min(image.shape[-2:]) * s >= scale.MIN_PROBE_SIDE]
            probes = [self.probe(image, s, norm) for s in scales[:1]]
            if probes and (fragments or scale.fragmented(full, probes[0])):
                probes += [self.probe(image, s, norm) for s in scales[1:]]
                chosen = scale.whole_probe(probes, self.post.rejoin)
                return chosen.diameter, chosen.scale, chosen
            if d1 is None:
                return None, None, None
        if d1 >= model_d * scale.TOLERANCE:  # cells larger than the model's come out narrower (`tools.sizing`)
            d1 /= self.meta.large_cell_ratio or 1.0
            if (f := scale.factor(model_d, d1, auto=True)) is not None:
                check = self.probe(image, f, norm)
                if (d2 := check.diameter) is None or d2 <= d1 * scale.LARGER:
                    return d1, f, None if norm else check  # the whole image's labels at f (a window's count whole cells)
                d1 = d2  # the first pass measured pieces of larger cells
        return d1, scale.factor(model_d, d1, auto=True), None

    def probe(self, image: np.ndarray, s: float, norm: tuple[float, float] | None = None) -> scale.Probe:
        """Labels of the image resized in-plane by ``s``, at that scale, with their probability
        (``norm`` given: normalised with it)."""
        resized = scale.resize_plane(image, s)
        p = self.probabilities(resized, norm=norm)[0]
        labels = self.labels_from(p, resized, s)
        return scale.Probe(s, labels, p)

    def labels_from(self, p_fg: np.ndarray, image: np.ndarray, f: float = 1.0) -> np.ndarray:
        """Instance labels from this image's foreground probability (*S); ``f``: how much the image
        was resized in-plane, so that ``min_size`` stays in the original image's pixels."""
        post = self.post
        if f != 1.0:
            post = dataclasses.replace(post, min_size=int(round(post.min_size * f * f)))
        # A 2D model's slices are linked by 3D connectivity; growth stays in-plane there.
        return instances.probability_to_labels(p_fg, post, in_plane=image.ndim == 3 and self.dims == 2)


def run(
    source: Path,
    out_dir: Path,
    weights: Path,
    opts: SegmentOptions = SegmentOptions(),
    iterations_dir: Path | None = None,
    overlay_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    on_scale: Callable[[str, dict], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> list[Path]:
    """Segment ``source`` (see `input_jobs`) into ``out_dir`` (``maskNNN.tif`` or ``NAME_masks.tif``).

    Frames whose mask exists (readable, of the input's size) are skipped unless ``opts.overwrite``.
    ``on_note(text)`` hears how channels were handled (once per kind); ``on_scale(name, info)``
    the cell diameter measured and the resize factor used for each image (also written to
    ``out_dir/scales.csv`` when rescaling is on). ``iterations_dir`` receives
    the per-step maps of the first segmented frame; ``overlay_dir`` one PNG per frame.
    ``on_start(n)`` hears how many images there are, ``progress(name)`` is called after each.
    Returns the masks written.
    """
    jobs = input_jobs(Path(source), Path(out_dir))
    writable_dir(out_dir)  # before any model is loaded or image computed
    for folder in (iterations_dir, overlay_dir):
        if folder is not None:
            writable_dir(folder)
    dinfo = distributed.init_from_env(resolve_device(opts.device).type)
    if dinfo.enabled:  # under torchrun: every rank takes every world-th frame, on its own device or cores
        jobs = jobs[dinfo.rank::dinfo.world]
        if resolve_device(opts.device).type == "cuda":
            opts = dataclasses.replace(opts, device=f"cuda:{dinfo.local_rank}")
        elif opts.threads is None:
            opts = dataclasses.replace(opts, threads=max(1, (os.cpu_count() or 1) // dinfo.world))
    if on_start is not None:
        on_start(len(jobs))
    todo = []
    for job in jobs:
        if not opts.overwrite and job.target.exists() and mask_is_done(job.target, job.path):
            if progress:
                progress(f"{job.name} (kept)")
        else:
            todo.append(job)
    predictor = Predictor(Path(weights), opts)
    if predictor.post.tta and on_note is not None and dinfo.main and todo:
        on_note("tta: each image's probability is averaged over its 8 flips and rotations (8x the time; --no-tta to skip)")
    written: list[Path] = []
    scales: list[dict[str, object]] = []
    notes: set[str] = set()
    want_iterations = iterations_dir is not None
    # Reading the next image and writing masks run in threads while the network works.
    with ThreadPoolExecutor(max_workers=2) as pool:
        read = lambda j: images.read_grey(j.path, opts.channel)  # noqa: E731
        upcoming = pool.submit(read, todo[0]) if todo else None
        writes: list[tuple[Future, Job, dict]] = []

        def finished(write: Future, job: Job, scale_info: dict) -> None:
            """A mask is on disk: count it and report it (only then)."""
            write.result()
            written.append(job.target)
            scales.append({"image": job.name, "mask": job.target.name, **scale_info})
            if on_scale is not None and opts.diameter is not None:
                on_scale(job.name, scale_info)
            if progress:
                progress(job.name)

        for i, job in enumerate(todo):
            image, note = upcoming.result()
            upcoming = pool.submit(read, todo[i + 1]) if i + 1 < len(todo) else None
            if note is not None and note.split(":", 1)[1] not in notes:  # each kind of note once per run
                notes.add(note.split(":", 1)[1])
                if on_note is not None:
                    on_note(note)
            check_image(job.path, image, predictor.dims)
            if want_iterations:
                if predictor.meta.model.arch != Arch.gruunet:
                    raise UserError("--iterations needs a GRUU-Net model file", weights)
                maps = predictor.probabilities(image, iterations=True)
                write_iterations(Path(iterations_dir), image, maps)
                labels = predictor.labels(image, maps[-1])  # the last step is the normal output
                want_iterations = False
            else:
                labels = predictor.labels(image)
            while writes and (writes[0][0].done() or len(writes) > 2):  # a failed write stops the run here
                finished(*writes.pop(0))
            writes.append((pool.submit(ctc.write_mask, job.target, labels), job, dict(predictor.last_scale)))
            if overlay_dir is not None:
                stem = job.target.stem.replace("mask", "overlay", 1) if job.target.stem.startswith("mask") else job.path.stem
                write_overlay(Path(overlay_dir) / f"{stem}.png", image, labels, predictor.meta.norm)
        for w in writes:
            finished(*w)
    written = sorted(p for part in distributed.gather(written, dinfo) for p in part)
    scales = [row for part in distributed.gather(scales, dinfo) for row in part]
    if scales and opts.diameter is not None and dinfo.main:
        write_scales(Path(out_dir) / SCALES_FILE, scales)
    distributed.barrier(dinfo)
    # Leave the process group before exit: a rank that exits with it alive can abort in gloo's
    # teardown ("terminate called without an active exception", seen once under load).
    distributed.shutdown(dinfo)
    return written


__all__ = ["Predictor", "SegmentOptions", "describe_scale", "input_jobs", "mask_is_done", "run", "SCALES_FILE"]
