"""Training crops with the paper's augmentation (Section 2.3), as pure functions of an explicit
``np.random.Generator``.

Every crop is one warp of the full frame: output pixel → source coordinate through flips,
90° and arbitrary rotation, zoom and a grid-based elastic deformation (normal displacements of
grid anchors, interpolated smoothly). The image is sampled bicubically and the *instance labels*
with nearest neighbour, with mirror reflection outside the frame, so each output pixel carries
exactly one source identity: objects never merge. The foreground target is then recomputed from
the warped labels so touching objects stay one pixel apart.

Images: (H, W) or (Z, H, W) float32, already normalised. Labels: same shape, integers, 0 = background.
3D stacks are transformed in-plane (Z is kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..inference.instances import separated_foreground


@dataclass(frozen=True)
class AugmentConfig:
    """Each augmentation is switchable (the paper's Table 2 ablation)."""

    flip: bool = True
    rotate90: bool = True
    rotate: bool = True  # arbitrary angle
    zoom: tuple[float, float] = (0.8, 1.25)  # (1, 1) switches zoom off
    brightness: float = 0.1  # additive offset range ±, on normalised intensities
    contrast: tuple[float, float] = (0.8, 1.25)
    elastic_sigma: float = 4.0  # px, std of grid-anchor displacements (0 switches it off)
    elastic_grid: int = 32  # px between grid anchors
    # Gaussian blur, sigma drawn uniformly from 0..blur px (0 switches it off): images of
    # another microscope, or upsampled by `segment --diameter`, are softer than the training data.
    blur: float = 0.0
    # Per-object brightness: each object's signal above the crop's background is scaled by a
    # factor drawn log-uniformly from this range (with probability 1/2 per object), so dim cells
    # are seen at their full extent; (1, 1) switches it off. Cells in one frame of a CTC video
    # span 10-20x in brightness.
    object_intensity: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def switched(cls, flip: bool = True, rotate90: bool = True, rotate: bool = True, zoom: bool = True,
                 zoom_range: tuple[float, float] | None = None, intensity: bool = True, elastic: bool = True,
                 blur: float | None = None,
                 object_intensity: tuple[float, float] | None = None) -> AugmentConfig:
        """The defaults above with whole augmentations switched off (the CLI's --no-X flags)."""
        d = cls()
        return cls(flip=flip, rotate90=rotate90, rotate=rotate,
                   zoom=(zoom_range or d.zoom) if zoom else (1.0, 1.0),
                   brightness=d.brightness if intensity else 0.0, contrast=d.contrast if intensity else (1.0, 1.0),
                   elastic_sigma=d.elastic_sigma if elastic else 0.0, blur=d.blur if blur is None else blur,
                   object_intensity=object_intensity or d.object_intensity)


NO_AUGMENTATION = AugmentConfig(flip=False, rotate90=False, rotate=False, zoom=(1.0, 1.0), brightness=0.0,
                                contrast=(1.0, 1.0), elastic_sigma=0.0)


@dataclass(frozen=True)
class Crop:
    """One training sample: image (1, *c) float32, target (*c) int64 in {0, 1}, labels (*c) int32,
    valid (*c) float32: 1 where the loss looks, 0 on unknown (unannotated) pixels."""

    image: np.ndarray
    target: np.ndarray
    labels: np.ndarray
    valid: np.ndarray


def choose_centre(rng: np.random.Generator, labels: np.ndarray, boxes: list[tuple[slice, ...]] | None = None) -> np.ndarray:
    """A crop centre inside the bounding box of a random ground-truth object (uniform in the
    frame when there is none, or when ``boxes`` is an empty list): crops are centred on objects,
    with background around them."""
    if boxes is None:
        boxes = [b for b in ndi.find_objects(labels.astype(np.int64)) if b is not None]
    if not boxes:
        return np.array([rng.uniform(0, s) for s in labels.shape])
    box = boxes[int(rng.integers(len(boxes)))]
    return np.array([rng.uniform(s.start, s.stop) for s in box])


def _elastic_field(rng: np.random.Generator, crop: tuple[int, int], grid: int, sigma: float) -> np.ndarray:
    """Smooth (2, h, w) displacement field: normal displacements at anchors every ``grid`` px,
    interpolated with cubic splines."""
    anchors = [max(2, int(np.ceil(c / grid)) + 1) for c in crop]
    coarse = rng.normal(0.0, sigma, size=(2, *anchors))
    zoom = [(c - 1) / (a - 1) if a > 1 else 1 for c, a in zip(crop, anchors)]
    field = np.stack([ndi.zoom(d, zoom, order=3, mode="nearest", grid_mode=False) for d in coarse])
    return field[:, : crop[0], : crop[1]]


def source_coordinates(rng: np.random.Generator, centre: np.ndarray, crop: tuple[int, int], cfg: AugmentConfig) -> np.ndarray:
    """Where each output pixel of a (h, w) crop reads from in the frame: (2, h, w) float (y, x)."""
    h, w = crop
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    pts = np.stack([yy, xx])  # (2, h, w) offsets from the crop centre
    if cfg.elastic_sigma > 0:
        pts = pts + _elastic_field(rng, crop, cfg.elastic_grid, cfg.elastic_sigma)
    m = np.eye(2)
    if cfg.flip and rng.random() < 0.5:
        m = m @ np.diag([1.0, -1.0])
    if cfg.rotate90:
        k = int(rng.integers(4))
        m = m @ np.linalg.matrix_power(np.array([[0.0, -1.0], [1.0, 0.0]]), k)
    if cfg.rotate:
        a = rng.uniform(0, 2 * np.pi)
        m = m @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lo, hi = cfg.zoom
    if hi > lo:
        m = m / np.exp(rng.uniform(np.log(lo), np.log(hi)))  # zoom in → read a smaller area
    return np.einsum("ij,jhw->ihw", m, pts) + centre[-2:, None, None]


def object_brightness(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray,
                      factors: tuple[float, float]) -> np.ndarray:
    """Scale each labelled object's signal above the background by its own random factor.

    Args:
        image: (*c) float32 crop; labels: (*c) instance labels of the same crop.
        factors: (lo, hi) range of the log-uniform factor; each object is scaled with probability 1/2.
    Returns:
        (*c) float32: background + (image - background) * factor map, where the background is the
        median of the unlabelled pixels and the factor map is blurred by 1 px in-plane so object
        borders taper instead of stepping.
    """
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return image
    lookup = np.ones(int(ids.max()) + 1, np.float32)
    draws = np.exp(rng.uniform(np.log(factors[0]), np.log(factors[1]), ids.size))
    lookup[ids] = np.where(rng.random(ids.size) < 0.5, draws, 1.0)
    fmap = ndi.gaussian_filter(lookup[labels], (0.0, 1.0, 1.0) if labels.ndim == 3 else 1.0, mode="nearest")
    outside = image[labels == 0]
    bg = np.float32(np.median(outside)) if outside.size else np.float32(image.min())
    return (bg + (image - bg) * fmap).astype(np.float32)


def _warp(array: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    """Sample a 2D array at (2, h, w) coordinates with mirror reflection outside."""
    return ndi.map_coordinates(array, coords, order=order, mode="mirror", prefilter=order > 1)


def augmented_crop(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    crop: int,
    cfg: AugmentConfig,
    boxes: list[tuple[slice, ...]] | None = None,
    in_plane: bool = False,
    ignore: np.ndarray | None = None,
) -> Crop:
    """Draw one (augmented) crop of side ``crop`` (3D: full depth) centred on a random object.

    Args:
        image: (*S) float32 normalised frame; labels: (*S) instance labels.
        boxes: precomputed ``ndi.find_objects`` of ``labels`` (speed).
        in_plane: separate touching objects within slices only (anisotropic 3D).
        ignore: (*S) bool, pixels the loss must not see (warped like the labels).
    """
    centre = choose_centre(rng, labels, boxes)
    # Snap to the pixel grid, so that an un-augmented crop copies pixels without interpolation.
    centre = np.floor(centre) + ((crop - 1) / 2) % 1
    coords = source_coordinates(rng, centre, (crop, crop), cfg)
    warp = lambda a, dtype, order: (_warp(a.astype(dtype, copy=False), coords, order) if a.ndim == 2  # noqa: E731
                                    else np.stack([_warp(s.astype(dtype, copy=False), coords, order) for s in a]))
    img = warp(image, np.float32, 3)
    lab = warp(labels, np.int32, 0)
    valid = np.ones(lab.shape, np.float32) if ignore is None else 1.0 - warp(ignore, np.float32, 0)
    if cfg.blur > 0:
        sigma = rng.uniform(0.0, cfg.blur)
        img = ndi.gaussian_filter(img, (0.0, sigma, sigma) if img.ndim == 3 else sigma, mode="mirror")
    if cfg.object_intensity[1] > cfg.object_intensity[0]:
        img = object_brightness(rng, img, lab, cfg.object_intensity)
    lo, hi = cfg.contrast
    if hi > lo:
        img = img * np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if cfg.brightness > 0:
        img = img + np.float32(rng.uniform(-cfg.brightness, cfg.brightness))
    target = separated_foreground(lab, in_plane).astype(np.int64)
    return Crop(image=img[None].astype(np.float32), target=target, labels=lab.astype(np.int32),
                valid=valid.astype(np.float32, copy=False))
