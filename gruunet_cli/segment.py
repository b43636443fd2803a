"""`gruunet segment`: CTC masks (``maskNNN.tif``) for every frame of a sequence, 2D or 3D, any size.

Per frame: percentile normalisation (the model file's), tiled prediction of the foreground
probability, instances by `instances.probability_to_labels`, an atomic write. A 3D stack with a
2D model is predicted slice by slice and its labels are linked across slices by 3D connectivity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from . import ctc, instances, modelfile, normalize, png, scale
from .config import Arch, ModelMeta, PostConfig
from .errors import UserError
from .runtime import foreground_fn, resolve_device, set_threads
from .tiling import predict_tiled


@dataclass(frozen=True)
class SegmentOptions:
    """How to run inference. ``post`` overrides the model file's post-processing when given."""

    tile: int = 512  # tile side (px) along H and W
    tile_z: int = 64  # tile depth for 3D models
    overlap: int = 64  # overlap between tiles (px)
    batch: int | None = None  # tiles per forward pass (default: 1 on CPU, where bigger batches only thrash caches; 4 on GPU)
    device: str = "auto"
    amp: bool = True  # mixed precision on GPU
    threads: int | None = None  # CPU threads
    overwrite: bool = False
    post: PostConfig | None = None
    # Cell diameter in px of the images to segment, or "auto" (estimated by a first pass); the
    # image is resized so its cells have the training size (`scale.py`). None: as is.
    diameter: float | Literal["auto"] | None = "auto"


class Predictor:
    """A loaded model plus everything needed to turn an image into probabilities and labels."""

    def __init__(self, weights: Path, opts: SegmentOptions) -> None:
        set_threads(opts.threads)
        self.device = resolve_device(opts.device)
        self.model, self.meta = modelfile.load(weights, self.device)
        self.opts = opts
        self.post = opts.post or self.meta.post
        if opts.diameter not in (None, "auto") and not self.meta.object_diameter:
            raise UserError("this model file records no training cell size; segment with --diameter auto or off", weights)

    @property
    def batch(self) -> int:
        return self.opts.batch or (4 if self.device.type == "cuda" else 1)

    @property
    def dims(self) -> int:
        return self.meta.model.dims

    def _forward(self, iterations: bool) -> Callable[[np.ndarray], np.ndarray]:
        return foreground_fn(self.model, self.device, self.opts.amp, iterations)

    def probabilities(self, image: np.ndarray, iterations: bool = False) -> np.ndarray:
        """Foreground probability of a raw image: (K, *S) float32 (K = 1, or 9 per-step maps)."""
        lo, hi = normalize.percentiles(image, self.meta.norm)
        prepare = lambda tile: normalize.apply(tile, lo, hi)  # noqa: E731
        channels = 9 if iterations else 1
        o, t = self.opts.overlap, self.opts.tile
        if image.ndim == self.dims:
            tile = (t, t) if self.dims == 2 else (self.opts.tile_z, t, t)
            return predict_tiled(self._forward(iterations), image, tile, (o,) * image.ndim, channels,
                                 self.batch, prepare, self.meta.model.multiple)
        if image.ndim == 3 and self.dims == 2:  # slice-wise
            out = np.empty((channels, *image.shape), np.float32)
            for z in range(image.shape[0]):
                out[:, z] = predict_tiled(self._forward(iterations), image[z], (t, t), (o, o), channels,
                                          self.batch, prepare, self.meta.model.multiple)
            return out
        raise ValueError(f"a {self.dims}D model cannot segment an image of shape {image.shape}")

    def labels(self, image: np.ndarray, p_fg: np.ndarray | None = None) -> np.ndarray:
        """Instance labels (uint16, 0 = background) of the same shape as ``image``.

        ``p_fg`` (*S): the image's foreground probability when already computed. With
        ``opts.diameter`` the image is first resized in-plane so that its cells have the size
        the model was trained on; labels are found at that scale and resized back.
        """
        def as_is() -> np.ndarray:
            return self.labels_from(self.probabilities(image)[0] if p_fg is None else p_fg, image)

        if self.opts.diameter is None or not self.meta.object_diameter:  # auto needs the training size
            return as_is()
        auto = self.opts.diameter == "auto"
        first = as_is() if auto else None  # the first pass measures the cells
        diameter = scale.object_diameter([first]) if auto else float(self.opts.diameter)
        f = scale.factor(self.meta.object_diameter, diameter, auto)
        if f is None:  # already about the training size
            return first if first is not None else as_is()
        resized = scale.resize_plane(image, f)
        return scale.labels_to_shape(self.labels_from(self.probabilities(resized)[0], resized), image.shape)

    def labels_from(self, p_fg: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Instance labels from this image's foreground probability (*S)."""
        # A 2D model's slices are linked by 3D connectivity; growth stays in-plane there.
        return instances.probability_to_labels(p_fg, self.post, in_plane=image.ndim == 3 and self.dims == 2)


def check_image(path: Path, image: np.ndarray, dims: int) -> None:
    """One-line errors for images the model cannot take."""
    if image.dtype.kind not in "uif" or image.ndim not in (2, 3):
        raise UserError(f"expected a 2D or 3D grey image, got shape {image.shape} of {image.dtype}", path)
    if dims == 3 and image.ndim == 2:
        raise UserError("a 3D model needs (Z, H, W) stacks, this image is 2D", path)


def input_frames(source: Path) -> list[ctc.FrameFile]:
    """A sequence folder's ``tNNN.tif`` files, or a single such file."""
    if source.is_file():
        m = ctc.IMAGE_RE.match(source.name)
        if m is None:
            raise UserError("expected an input frame named tNNN.tif", source)
        return [ctc.FrameFile(source, int(m.group(1)), len(m.group(1)))]
    return ctc.list_images(source)


def write_iterations(out_dir: Path, image: np.ndarray, maps: np.ndarray) -> None:
    """The nine per-step foreground maps (Fig. 7) as ``iterations.tif`` (9, *S) and ``iteration_K.png``
    (the middle slice for 3D)."""
    ctc.write_tiff_atomic(out_dir / "iterations.tif", maps.astype(np.float32))
    mid = (lambda a: a[a.shape[0] // 2]) if image.ndim == 3 else (lambda a: a)
    for k, m in enumerate(maps, start=1):
        png.save_png(out_dir / f"iteration_{k}.png", png.to_uint8(mid(m)))


def write_overlay(path: Path, image: np.ndarray, labels: np.ndarray, norm) -> None:
    """Contours of ``labels`` on the normalised image (the middle slice for 3D) as PNG."""
    if image.ndim == 3:
        z = image.shape[0] // 2
        image, labels = image[z], labels[z]
    png.save_png(path, png.overlay(normalize.normalize(image, norm), labels))


def run(
    source: Path,
    out_dir: Path,
    weights: Path,
    opts: SegmentOptions = SegmentOptions(),
    iterations_dir: Path | None = None,
    overlay_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Segment ``source`` (a folder of ``tNNN.tif`` or one such file) into ``out_dir/maskNNN.tif``.

    Frames whose mask exists are skipped unless ``opts.overwrite``. ``iterations_dir`` receives
    the per-step maps of the first segmented frame; ``overlay_dir`` one PNG per frame.
    ``progress(name)`` is called after each frame. Returns the masks written.
    """
    frames = input_frames(Path(source))
    predictor = Predictor(Path(weights), opts)
    written: list[Path] = []
    want_iterations = iterations_dir is not None
    for f in frames:
        target = ctc.mask_path(out_dir, f.frame, f.digits)
        if target.exists() and not opts.overwrite:
            if progress:
                progress(f"{f.path.name} (kept)")
            continue
        image = ctc.read_tiff(f.path)
        check_image(f.path, image, predictor.dims)
        if want_iterations:
            if predictor.meta.model.arch != Arch.gruunet:
                raise UserError("--iterations needs a GRUU-Net model file", weights)
            maps = predictor.probabilities(image, iterations=True)
            write_iterations(Path(iterations_dir), image, maps)
            labels = predictor.labels(image, maps[-1])  # the last step is the normal output
            want_iterations = False
        else:
            labels = predictor.labels(image)
        ctc.write_mask(target, labels)
        written.append(target)
        if overlay_dir is not None:
            write_overlay(Path(overlay_dir) / f"overlay{f.frame:0{f.digits}d}.png", image, labels, predictor.meta.norm)
        if progress:
            progress(f.path.name)
    return written


def with_post_overrides(meta_post: PostConfig, **overrides) -> PostConfig:
    """The model file's post-processing with the user's non-None overrides."""
    return dataclasses.replace(meta_post, **{k: v for k, v in overrides.items() if v is not None})


def read_post(weights: Path) -> PostConfig:
    """The post-processing stored in a model file."""
    meta: ModelMeta = modelfile.read_meta(weights)
    return meta.post
