"""Frozen configuration dataclasses, stored as JSON inside (and beside) every model file.

A model file therefore always says how it was made: the architecture to rebuild, the intensity
normalisation that `segment` must repeat, the post-processing defaults and the training record.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar


class Arch(str, Enum):
    gruunet = "gruunet"
    unet = "unet"


class LRSchedule(str, Enum):
    constant = "constant"  # the paper's
    cosine = "cosine"  # half a cosine from lr down to 0 at the last iteration


class LossName(str, Enum):
    nfl = "nfl"  # normalized focal loss, paper eq. 14
    fl = "fl"  # original focal loss, paper eq. 9-10
    wce = "wce"  # U-Net pixel-weighted cross-entropy (Ronneberger 2015)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. ``dims`` 2 → (B, C, H, W) inputs, 3 → (B, C, Z, H, W)."""

    arch: Arch = Arch.gruunet
    dims: int = 2
    in_channels: int = 1
    classes: int = 2
    width: int = 32  # GRU state / stem channels (paper: 32)
    frdu_widths: tuple[int, ...] = (32, 64, 128, 256, 512, 256, 128, 64, 32)  # c_t, Table 1
    dense_layers: tuple[int, ...] = (3, 3, 6, 12, 12, 12, 6, 3, 3)  # k_t, Table 1
    growth: int = 10  # dense-block growth rate (ours: gives 0.67M parameters, paper ~0.7M)
    shared_gru: bool = True  # one GRU unfolded over all nine steps (ours: default)
    head_bn: bool = True  # BN after the final 1x1 conv, as in Table 1
    # σ_h of the GRU candidate state: the paper's LReLU(0.2) leaves the state unbounded (measured:
    # |h| up to 6,000 after 1,500 iterations, BN running statistics unusable, validation SEG → 0);
    # tanh, as in the standard GRU, keeps it in [-1, 1]. Files without the field used LReLU.
    gru_activation: str = "lrelu"
    z_pool_levels: int = 4  # 3D only: how many of the 4 poolings also halve Z (anisotropic stacks)
    unet_base: int = 64  # U-Net baseline: channels of the first level (Ronneberger: 64)
    unet_depth: int = 4  # U-Net baseline: number of poolings

    def __post_init__(self) -> None:
        counts = (self.in_channels, self.classes, self.width, self.growth, self.unet_base, self.unet_depth)
        if self.dims not in (2, 3) or min(counts) < 1 or self.z_pool_levels < 0:
            raise ValueError("dims must be 2 or 3 and channel counts and depths positive")
        if self.gru_activation not in ("lrelu", "tanh"):
            raise ValueError("gru_activation must be lrelu or tanh")
        if len(self.frdu_widths) != len(self.dense_layers) or len(self.frdu_widths) % 2 != 1 or \
                min(self.frdu_widths + self.dense_layers) < 1:
            raise ValueError("frdu_widths and dense_layers must be positive and of the same odd length")

    @property
    def levels(self) -> int:
        """Poolings on the way down (scale 1/2**levels at the bottom)."""
        return self.unet_depth if self.arch == Arch.unet else len(self.frdu_widths) // 2

    def pool(self, level: int) -> tuple[int, ...]:
        """Total pooling factor per spatial axis from full resolution to ``level`` (scale 1/2**level
        in-plane). The one place of the 3D rule: Z is halved only by the first ``z_pool_levels``
        poolings (anisotropic stacks).

        >>> ModelConfig(dims=3, z_pool_levels=1).pool(3)
        (2, 8, 8)
        """
        xy = 2**level
        return (xy, xy) if self.dims == 2 else (2 ** min(level, self.z_pool_levels), xy, xy)

    @property
    def multiple(self) -> tuple[int, ...]:
        """Input size multiple per spatial axis (inputs are padded to it and cropped back)."""
        return self.pool(self.levels)


def default_model(arch: Arch, dims: int) -> ModelConfig:
    """The paper's GRUU-Net (or the U-Net baseline) for 2D or 3D data, as `train` builds it."""
    return ModelConfig(arch=arch, dims=dims, z_pool_levels=4 if dims == 2 else 1, gru_activation="tanh")


@dataclass(frozen=True)
class NormConfig:
    """Percentile intensity normalisation: (x - p_low) / (p_high - p_low), per image, then
    raised to ``gamma`` (sign kept): below 1 it lifts dim objects towards bright ones."""

    p_low: float = 1.0
    p_high: float = 99.8
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if not 0.1 <= self.gamma <= 10:
            raise ValueError(f"gamma must be in 0.1..10, not {self.gamma!r}")


@dataclass(frozen=True)
class PostConfig:
    """How `segment` gets the foreground probability (``tta``) and turns it into instances (see `instances.py`)."""

    threshold: float = 0.5
    min_size: int = 15  # pixels (voxels in 3D); smaller objects are dropped
    # Split objects the network left joined where the distance to the background has two
    # peaks (distance-transform watershed); chosen on StarDist-2D 01 validation rows, also
    # at 0.6x and 0.4x scale, where it raised SEG for GRUU-Net and U-Net alike.
    split: bool = True
    split_h: float = 0.5  # px: how much deeper than the neck between them two peaks must be
    split_sigma: float = 1.0  # px: Gaussian smoothing of the distance map before finding peaks
    grow: int = 0  # pixels to grow labels back over the separating ring (and where p_fg > grow_threshold)
    grow_threshold: float = 0.5  # = threshold: grow only into the ring (a lower value inflated objects on validation)
    # Where objects end: the level of the probability, resampled to the image's own grid, that
    # their outlines follow (`instances.outline`); None: the threshold's outline at the network's
    # scale. `reproduce` chooses it on the training video's validation frames.
    outline: float | None = None
    # The level for images `segment` enlarged to the model's cell size (None: ``outline``): the
    # network draws an enlarged image's blurrier edges wider, so these want a higher level (the
    # same DSB images shrunk 5x, so that segment enlarges them 1.6-1.8x, moved from 0.45 to 0.5).
    outline_enlarged: float | None = None
    # Levels are fractions of each object's own peak probability (`instances.outline`): a dim
    # cell the network gives 0.6 is outlined at the same fraction of its height as a bright one.
    outline_peak: bool = False
    # Average the probability over the 8 flips and 90° rotations of the image plane (8x the
    # time; `segment --tta`): chosen per model file on its validation frames, with the outline.
    tta: bool = False
    # Fill each object's holes (background it encloses, in-plane for a 2D model's stack): a nucleus'
    # dark nucleoli otherwise leave holes or rings, and reference cells have none (GOWT1, DSB).
    fill_holes: bool = True
    # With --diameter auto, rejoin the cells the chosen probe cut into pieces that the next smaller
    # probe finds whole and convex (`scale.rejoined`). Per model file: it helps one that cuts large
    # textured cells (`gruunet-nuclei`) and hurts one whose smaller probes merge dense cells, so
    # `train` chooses it at its end on the validation frames (`tools.rejoin`).
    rejoin: bool = False

    def __post_init__(self) -> None:
        levels = (self.threshold, self.grow_threshold, *(self.threshold if v is None else v for v in (self.outline, self.outline_enlarged)))
        if not all(-1.0 <= v <= 1.0 for v in levels):  # below 0: all foreground
            raise ValueError("thresholds must lie in -1..1")
        if self.min_size < 0 or self.grow < 0 or self.split_h < 0 or self.split_sigma < 0:
            raise ValueError("min_size, grow, split_h and split_sigma must not be negative")

    def outline_at(self, f: float) -> float | None:
        """The outline level for an image resized in-plane by ``f`` before the network saw it.

        >>> PostConfig(outline=0.45, outline_enlarged=0.55).outline_at(1.8), PostConfig(outline=0.45).outline_at(1.8)
        (0.55, 0.45)
        """
        return self.outline_enlarged if f > 1.0 and self.outline_enlarged is not None else self.outline


MAX_MEMBERS = 16  # networks in one model file (an ensemble): beyond it inference time, not quality, grows


@dataclass(frozen=True)
class ModelMeta:
    """Everything stored with the weights."""

    model: ModelConfig = field(default_factory=ModelConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    post: PostConfig = field(default_factory=PostConfig)
    # Median in-plane equivalent diameter (px) of the training objects: the cell size the model
    # knows, for `segment --diameter` (None in files that predate it or had no objects).
    object_diameter: float | None = None
    # How this model measures cells larger than its own (`tools.sizing`): the median ratio, on
    # validation images, of the diameter the first pass of `--diameter auto` found to the
    # reference's; that pass's larger diameters are divided by it. None: taken as measured.
    large_cell_ratio: float | None = None
    training: dict[str, Any] = field(default_factory=dict)  # provenance: data, iterations, scores, command
    # Networks in the file: more than one is an ensemble whose class probabilities are averaged
    # (`nets.ensemble`, `gruunet ensemble`; ``training.ensemble`` names the member files).
    members: int = 1

    def __post_init__(self) -> None:
        d = self.object_diameter
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d < 1e6):
            raise ValueError(f"object_diameter must be a positive number of pixels, not {d!r}")
        r = self.large_cell_ratio
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.25 <= r <= 4):
            raise ValueError(f"large_cell_ratio must be a number in 0.25..4, not {r!r}")
        if isinstance(self.members, bool) or not isinstance(self.members, int) or not 1 <= self.members <= MAX_MEMBERS:
            raise ValueError(f"members must be a whole number in 1..{MAX_MEMBERS}, not {self.members!r}")


T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) → JSON-ready dict; Enums become their values, tuples lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Inverse of `to_dict` for our dataclasses; unknown keys are an error, missing ones default."""
    hints = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(hints)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name) if name in hints else None  # type: ignore[call-arg]
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"{cls.__name__}.{name}: expected an object, got {value!r}")
            value = from_dict(type(default), value)
        elif isinstance(default, Enum):
            value = type(default)(value)
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not all(_same_kind(v, d) for v, d in zip(value, default)):
                raise ValueError(f"{cls.__name__}.{name}: expected a list like {list(default)}, got {value!r}")
            value = tuple(value)
        elif default is not None and not _same_kind(value, default):
            raise ValueError(f"{cls.__name__}.{name}: expected {type(default).__name__}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a JSON value fits a field whose default is ``default`` (ints pass for floats)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (str, dict)):
        return isinstance(value, type(default))
    return True


def dumps(obj: Any) -> str:
    return json.dumps(to_dict(obj), indent=2, sort_keys=True)
