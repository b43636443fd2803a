"""Training data: annotated frames of any number of sources, listed once, loaded when needed.

A `FrameRef` names one annotated frame on disk (an image, its instance labels, optionally one
slice of a stack, a row range, a resize factor, and TRA markers for partial annotations). It is
loaded into a `Frame` (normalised image, labels, ignore mask) by the augmentation workers, through
a small per-process cache, so a training set need not fit in memory. `scan` reads each mask once
to list the frames and measure their objects; `split` holds out validation frames per source.

Shapes: images and labels (H, W) for a 2D model or (Z, H, W) for a 3D one; labels int32,
0 = background; ``ignore`` bool, True where the loss must not look (unannotated cells).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..config import NormConfig
from ..errors import UserError
from ..evaluation import metrics
from ..files import ctc, images
from ..files.sources import Layout, Source, folder_pairs
from ..inference import normalize, scale
from .spots import unlabelled_spots

# Resize factors of ``--scale-to`` are kept within this (and its inverse).
MAX_FACTOR = 4.0


@dataclass
class Frame:
    """A normalised image (*S) float32 with instance labels (*S) int32, their bounding boxes and
    an optional ignore mask (*S) bool (pixels the loss does not see)."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    boxes: list[tuple[slice, ...]] = field(default_factory=list)
    ignore: np.ndarray | None = None
    ignored_cells: int = 0  # unannotated cells behind ``ignore``
    ignored_spots: int = 0  # unlabelled bright specks behind ``ignore`` (spots.py)

    def __post_init__(self) -> None:
        if not self.boxes:
            self.boxes = [b for b in ndi.find_objects(self.labels) if b is not None]

    @property
    def nbytes(self) -> int:
        return self.image.nbytes + self.labels.nbytes + (0 if self.ignore is None else self.ignore.nbytes)


@dataclass(frozen=True)
class FrameRef:
    """One annotated frame on disk; `load` reads and prepares it."""

    name: str
    image: Path
    labels: Path
    z: int | None = None  # one slice of a stack (2D model on 3D data, or a man_seg_T_Z reference)
    factor: float = 1.0  # in-plane resize (``--scale-to``)
    rows: tuple[float, float] = (0.0, 1.0)  # fraction of rows kept (a single frame split in space)
    markers: Path | None = None  # TRA markers: marked cells without a label are unknown (partial GT)
    st: Path | None = None  # silver truth giving the extent of those cells
    ignore_radius: float = 0.0  # px around a marker that are unknown when there is no silver truth
    ignore_spots: bool = False  # unlabelled bright specks are unknown (``--ignore-spots``, spots.py)

    def load(self, norm: NormConfig) -> Frame:
        raw, _ = images.read_grey(self.image)  # RGB pictures become grey, as in `segment`
        labels = images.read_labels(self.labels)
        lo, hi = normalize.percentiles(raw, norm)  # over the whole stack, as `segment` does
        markers = None if self.markers is None else ctc.read_labels(self.markers)
        st = None if self.st is None else ctc.read_labels(self.st)
        if self.z is not None:
            raw = raw[self.z]
            labels, markers, st = (a if a is None or a.ndim == raw.ndim else a[self.z] for a in (labels, markers, st))
        if raw.shape != labels.shape:
            raise UserError(f"shape {labels.shape} differs from its image {raw.shape} ({self.image.name})", self.labels)
        image = normalize.apply(raw, lo, hi, norm.gamma)
        labels = labels.astype(np.int32, copy=False)
        ignore, missing = None, 0
        if markers is not None:
            missing = metrics.unannotated_markers(labels, markers).size
            ignore = unannotated_region(labels, markers, self.ignore_radius, st)
        spots = 0
        if self.ignore_spots:
            found = unlabelled_spots(raw, labels)
            if found is not None:
                spots = int(ndi.label(found)[1])
                ignore = found if ignore is None else ignore | found
        cut = slice(int(round(self.rows[0] * raw.shape[-2])), int(round(self.rows[1] * raw.shape[-2])))
        image, labels = image[..., cut, :], labels[..., cut, :]
        ignore = None if ignore is None else ignore[..., cut, :]
        if self.factor != 1.0:
            image = scale.resize_plane(image, self.factor)
            labels = scale.labels_to_shape(labels, image.shape)
            ignore = None if ignore is None else scale.labels_to_shape(ignore.astype(np.uint8), image.shape) > 0
        return Frame(self.name, np.ascontiguousarray(image), np.ascontiguousarray(labels), ignore=ignore,
                     ignored_cells=missing, ignored_spots=spots)



def unannotated_region(labels: np.ndarray, markers: np.ndarray, radius: float,
                       st: np.ndarray | None = None) -> np.ndarray | None:
    """Pixels of cells that have a tracking marker but no reference label: unknown, not background.

    A marker counts as unannotated when less than half of it lies on labels. Its cell's extent is
    its silver-truth object (grown by 2 px) when ``st`` is given, else every pixel within
    ``radius`` of the marker. Labelled pixels are never ignored. None when every marker is labelled.

    >>> lab = np.zeros((1, 9), int); lab[0, :3] = 5
    >>> mk = np.zeros((1, 9), int); mk[0, 1] = 1; mk[0, 7] = 2
    >>> unannotated_region(lab, mk, 1.0).astype(int).tolist()
    [[0, 0, 0, 0, 0, 0, 1, 1, 1]]
    """
    missing = metrics.unannotated_markers(labels, markers)
    if missing.size == 0:
        return None
    seeds = np.isin(markers, missing)
    if st is not None:
        st_ids = np.unique(st[seeds & (st > 0)])
        seeds |= np.isin(st, st_ids)
        radius = 2.0
    # in-plane distance: stacks are often anisotropic
    dist = (np.stack([ndi.distance_transform_edt(~s) for s in seeds]) if seeds.ndim == 3
            else ndi.distance_transform_edt(~seeds))
    return (dist <= radius) & (labels == 0)


@dataclass(frozen=True)
class FrameStats:
    """What `scan` measures of a frame's reference (at the frame's own scale)."""

    diameters: np.ndarray  # equivalent in-plane diameter of each object (px)
    max_side: int  # longest in-plane bounding-box side (px)


def _stats(labels: np.ndarray) -> FrameStats:
    d = scale.object_diameters(labels)
    boxes = [b for b in ndi.find_objects(labels) if b is not None]
    side = max((max(s.stop - s.start for s in b[-2:]) for b in boxes), default=0)
    return FrameStats(d, int(side))


def _check_ndim(labels: np.ndarray, path: Path) -> None:
    if labels.ndim not in (2, 3):
        raise UserError(f"a reference of shape {labels.shape}: expected (H, W) or (Z, H, W)", path)


def _ctc_refs(source: Source, dims: int, partial: bool = True) -> list[tuple[FrameRef, np.ndarray]]:
    """(ref, labels) of every annotated frame (and slice, for a 2D model on stacks) of a CTC source.
    With ``partial``, GT frames carry their TRA markers, so unannotated cells are ignored."""
    frames = {f.frame: f for f in ctc.list_images(source.path)}
    seg_dir, tra_dir = ctc.resolve_gt_dir(source.gt)
    markers = ctc.list_markers(tra_dir) if tra_dir is not None and partial else {}
    gt = ctc.list_gt(seg_dir)
    covered = {g.frame for g in gt}
    st_files: dict[int, ctc.GTFile] = {}
    if source.st is not None:
        st_seg, _ = ctc.resolve_gt_dir(source.st)
        st_files = {g.frame: g for g in ctc.list_gt(st_seg) if g.slice is None}
    todo = [(g, "GT") for g in gt] + [(g, "ST") for g in st_files.values() if g.frame not in covered]
    out = []
    for g, tag in todo:
        if g.frame not in frames:
            raise UserError(f"reference {g.path.name} has no input frame t{g.frame:03d}.tif", g.path.parent)
        labels = ctc.read_labels(g.path)
        _check_ndim(labels, g.path)
        shape = images.image_shape(frames[g.frame].path)
        if g.slice is not None:
            if len(shape) != 3 or g.slice >= shape[0]:
                raise UserError(f"{g.path.name} names slice {g.slice} of an image of shape {shape}", frames[g.frame].path)
            if dims == 3:
                raise UserError("single-slice references need a 2D model (--dims 2)", g.path)
        elif tuple(shape) != labels.shape:
            raise UserError(f"shape {labels.shape} differs from its image {tuple(shape)}", g.path)
        mk = markers.get(g.frame) if tag == "GT" else None
        st = st_files.get(g.frame) if tag == "GT" and mk is not None else None
        base = FrameRef(f"{source.path.name}:{tag}:{g.path.name}", frames[g.frame].path, g.path, g.slice,
                        markers=None if mk is None else mk.path, st=None if st is None else st.path)
        if labels.ndim == 3 and dims == 2:  # a 2D model learns from the annotated slices
            out += [(dataclasses.replace(base, name=f"{base.name}[z={z}]", z=z), labels[z])
                    for z in range(labels.shape[0]) if labels[z].any()]
        else:
            out.append((base, labels))
    return out


def _folder_refs(source: Source, dims: int) -> list[tuple[FrameRef, np.ndarray]]:
    out = []
    for name, image, mask in folder_pairs(source):
        labels = images.read_labels(mask)
        _check_ndim(labels, mask)
        shape = tuple(images.image_shape(image))
        if shape != labels.shape and labels.shape not in (shape[:2], shape[1:]):  # (H, W, 3) and (3, H, W) RGB pass
            raise UserError(f"mask of shape {labels.shape} for an image of shape {shape} ({image})", mask)
        if labels.ndim != dims:
            raise UserError(f"a {labels.ndim}D mask for a {dims}D model", mask)
        out.append((FrameRef(f"{source.path.name}:{name}", image, mask), labels))
    return out


@dataclass
class SourceFrames:
    """The frames of one source with their measurements (at the scale they will be loaded)."""

    source: Source
    refs: list[FrameRef]
    stats: list[FrameStats]


def scan(source: Source, dims: int, scale_to: float | None = None, partial: bool = True,
         spots: bool = False) -> SourceFrames:
    """List a source's annotated frames, reading each reference once.

    With ``scale_to``, every frame gets the resize factor that brings its median object diameter
    to ``scale_to`` px (within 1/4..4x). Partial CTC frames get an ignore radius of half the
    largest object diameter of the source (``partial=False``: unannotated cells count as background).
    ``spots``: unlabelled bright specks are left out of the loss (spots.py).
    """
    found = _ctc_refs(source, dims, partial) if source.layout == Layout.ctc else _folder_refs(source, dims)
    if not found:
        raise UserError("no annotated frames", source.gt or source.path)
    stats = [_stats(labels.astype(np.int32, copy=False)) for _, labels in found]
    all_d = np.concatenate([s.diameters for s in stats])
    if all_d.size == 0:
        raise UserError("the references hold no objects: nothing to learn from", source.gt or source.path)
    radius = 0.5 * float(all_d.max())
    refs, out_stats = [], []
    for (ref, _), st in zip(found, stats):
        f = 1.0
        if scale_to and st.diameters.size:
            f = float(np.clip(scale_to / np.median(st.diameters), 1 / MAX_FACTOR, MAX_FACTOR))
        refs.append(dataclasses.replace(ref, factor=f, ignore_radius=radius if ref.markers else 0.0, ignore_spots=spots))
        out_stats.append(FrameStats(st.diameters * f, int(np.ceil(st.max_side * f))))
    return SourceFrames(source, refs, out_stats)


def split(refs: list[FrameRef], val_fraction: float = 0.25) -> tuple[list[FrameRef], list[FrameRef]]:
    """Hold out every ``1/val_fraction``-th frame for validation (at least one frame each side).

    A single frame is split in space instead: its last ``val_fraction`` of rows validates.
    """
    if len(refs) >= 2:
        step = max(2, round(1 / val_fraction))
        val_idx = set(range(step - 1, len(refs), step)) or {len(refs) - 1}
        return [f for i, f in enumerate(refs) if i not in val_idx], [f for i, f in enumerate(refs) if i in val_idx]
    (f,) = refs
    cut = 1.0 - val_fraction
    return ([dataclasses.replace(f, name=f.name + "[train rows]", rows=(0.0, cut))],
            [dataclasses.replace(f, name=f.name + "[val rows]", rows=(cut, 1.0))])


def load_frames(image_dir: Path, gt_dir: Path, dims: int, norm: NormConfig, st_dir: Path | None = None) -> list[Frame]:
    """Every annotated frame of one CTC sequence, loaded (GT first; silver truth adds frames GT lacks)."""
    found = scan(Source(Layout.ctc, Path(image_dir), Path(gt_dir), None if st_dir is None else Path(st_dir)), dims)
    return [r.load(norm) for r in found.refs]


def auto_crop(stats: list[FrameStats], multiple: int = 16, lo: int = 64, hi: int = 256) -> int:
    """About the size of the largest object (its longest in-plane bounding-box side), rounded up to
    ``multiple`` and kept within [lo, hi] so the network's coarsest scale still has a few pixels."""
    side = max((s.max_side for s in stats), default=lo)
    return int(min(hi, max(lo, -(-side // multiple) * multiple)))


class FrameCache:
    """Loaded frames of this process, least recently used dropped past ``max_bytes``."""

    def __init__(self, norm: NormConfig, max_bytes: int = 512 << 20) -> None:
        self.norm, self.max_bytes = norm, max_bytes
        self._frames: OrderedDict[FrameRef, Frame] = OrderedDict()
        self._bytes = 0

    def get(self, item: FrameRef | Frame) -> Frame:
        if isinstance(item, Frame):
            return item
        frame = self._frames.get(item)
        if frame is not None:
            self._frames.move_to_end(item)
            return frame
        frame = item.load(self.norm)
        self._frames[item] = frame
        self._bytes += frame.nbytes
        while self._bytes > self.max_bytes and len(self._frames) > 1:
            _, old = self._frames.popitem(last=False)
            self._bytes -= old.nbytes
        return frame


def guess_dims(sources: list[Source]) -> int:
    """3 when the first source has (Z, H, W) stacks with full-volume references, else 2
    (2D images, or slice references)."""
    first = sources[0]
    if first.layout != Layout.ctc:
        _, image, mask = folder_pairs(first)[0]
        return 3 if len(images.image_shape(image)) == 3 and len(images.image_shape(mask)) == 3 else 2
    ndim = len(images.image_shape(ctc.list_images(first.path)[0].path))
    seg_dir, _ = ctc.resolve_gt_dir(first.gt)
    only_slices = all(g.slice is not None for g in ctc.list_gt(seg_dir))
    return 3 if ndim == 3 and not only_slices else 2
