"""The augmentation prefetcher: torch DataLoader worker processes produce augmented batches
several steps ahead, into pinned memory, so the training step does not wait for data.

Sampling is balanced: each sample picks a source with equal probability, then a frame of that
source uniformly, then a ground-truth object of that frame (`augment.choose_centre`). Frames are
`FrameRef`s loaded by each worker through its own `FrameCache`, so the training set does not have
to fit in memory (already loaded `Frame`s are accepted too).

Sample ``i`` is drawn with its own generator ``np.random.default_rng([seed, i])``, so a batch
is the same whatever the number of workers (0 = inline, for debugging) and a resumed run
continues with exactly the batches it would have seen. Read through `batches`, an unreadable
image in a worker (a `UserError`) reaches the training loop as that one-line error; any other
worker exception with the worker's traceback (DataLoader re-raises it); a killed worker raises too.
Either way the workers are stopped at once, not left to the SIGTERM grace at exit (20 s).
"""

from __future__ import annotations

import signal
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..config import NormConfig
from ..errors import UserError
from .augment import NO_AUGMENTATION, AugmentConfig, augmented_crop
from .data import Frame, FrameCache, FrameRef
from .loss import unet_weight_map


@dataclass(frozen=True)
class SamplingConfig:
    crop: int
    batch: int
    seed: int
    augment: AugmentConfig
    clean_from_batch: int  # batches from this index on are not augmented (the paper's last epoch)
    weight_maps: bool = False  # U-Net weighted CE needs them
    world: int = 1  # ranks drawing from the one sample stream (see BatchIndices)
    # Share of crops centred anywhere in the frame instead of on an object: background far from
    # cells is otherwise never seen (partial GT frames label only a few cells).
    background_fraction: float = 0.0


@dataclass(frozen=True)
class WorkerUserError:
    """A `UserError` met in a worker, sent as a batch: DataLoader would re-raise it with the
    worker's traceback as its message."""

    message: str


def collate(items: list) -> dict[str, torch.Tensor] | WorkerUserError:
    return next((i for i in items if isinstance(i, WorkerUserError)), None) or default_collate(items)


class CropDataset(Dataset):
    """Map-style dataset over an unbounded index: item ``i`` is sample ``i`` of the run.

    Returns dict(image (1, *c) float32, target (*c) int64, valid (*c) float32,
    weight (*c) float32 when asked).
    """

    def __init__(self, sources: list[list[Frame | FrameRef]], cfg: SamplingConfig, norm: NormConfig = NormConfig(),
                 cache_bytes: int = 512 << 20) -> None:
        if not sources or not all(sources):
            raise ValueError("no training frames")
        self.sources = sources
        self.cfg = cfg
        self.cache = FrameCache(norm, cache_bytes)  # each worker process fills its own copy

    def __len__(self) -> int:  # nominal; the batch sampler decides which indices are drawn
        return 1 << 62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | WorkerUserError:
        try:
            return self.sample(index)
        except UserError as exc:  # an unreadable image, read lazily here
            return WorkerUserError(str(exc))

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, index])
        source = self.sources[int(rng.integers(len(self.sources)))] if len(self.sources) > 1 else self.sources[0]
        frame = self.cache.get(source[int(rng.integers(len(source)))])
        iteration = index // cfg.batch // cfg.world
        aug = cfg.augment if iteration < cfg.clean_from_batch else NO_AUGMENTATION
        # Drawn only when asked, so runs without background crops keep their sample stream.
        anywhere = cfg.background_fraction > 0 and rng.random() < cfg.background_fraction
        crop = augmented_crop(rng, frame.image, frame.labels, cfg.crop, aug, [] if anywhere else frame.boxes,
                              ignore=frame.ignore)
        item = {"image": torch.from_numpy(crop.image), "target": torch.from_numpy(crop.target),
                "valid": torch.from_numpy(crop.valid)}
        if cfg.weight_maps:
            item["weight"] = torch.from_numpy(unet_weight_map(crop.labels))
        return item


class BatchIndices:
    """Batch ``b`` of rank ``r`` among ``world`` ranks holds samples ``(b·world + r)·B … + B − 1``,
    for b = start, start + 1, … (unbounded)."""

    def __init__(self, batch: int, start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.batch, self.start, self.rank, self.world = batch, start, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        b = self.start
        while True:
            first = (b * self.world + self.rank) * self.batch
            yield list(range(first, first + self.batch))
            b += 1


# After a SIGTERM, a worker lives on this long (s) before it ends itself.
SIGTERM_GRACE_S = 20


def _worker_init(_: int) -> None:
    # Ctrl-C goes to the whole process group: the main process saves and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # So may SIGTERM (`pkill -f`, docker stop, a scheduler): a worker that died at once would crash
    # the main process before it saves. It keeps working for a grace period instead and then ends
    # (SIGALRM's default action), so a SIGTERM still ends an orphaned worker.
    signal.signal(signal.SIGTERM, lambda *_: signal.alarm(SIGTERM_GRACE_S))
    torch.set_num_threads(1)


def make_loader(sources: list[list[Frame | FrameRef]] | list[Frame], cfg: SamplingConfig, workers: int,
                start_batch: int = 0, rank: int = 0, world: int = 1, pin_memory: bool = False,
                prefetch_batches: int = 4, norm: NormConfig = NormConfig()) -> DataLoader:
    """An endless DataLoader of batches ``start_batch, start_batch + 1, …`` for this rank.
    ``sources``: frames per source (a flat list of frames is one source)."""
    if sources and not isinstance(sources[0], list):
        sources = [sources]  # type: ignore[list-item]
    return DataLoader(
        CropDataset(sources, cfg, norm),  # type: ignore[arg-type]
        batch_sampler=BatchIndices(cfg.batch, start_batch, rank, world),
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        collate_fn=collate,
        prefetch_factor=prefetch_batches if workers else None,
        persistent_workers=False,
    )


def batches(loader: DataLoader) -> Generator[dict[str, torch.Tensor], None, None]:
    """The loader's batches, a worker's `UserError` raised as itself. However it ends (an error,
    or closed), the workers are stopped now: an exception's traceback would keep the iterator
    alive until exit, where each worker, sent SIGTERM, lives out its grace first."""
    it = iter(loader)
    try:
        while True:
            batch = next(it)
            if isinstance(batch, WorkerUserError):
                raise UserError(batch.message)
            yield batch
    finally:
        stop = getattr(it, "_shutdown_workers", None)  # what the iterator's __del__ calls (private in torch)
        if stop is not None:
            stop()
