"""The prefetcher: batches depend on the seed only, resume continues them, worker errors surface."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch
from synthetic import touching_discs

from gruunet_cli.training.augment import NO_AUGMENTATION, AugmentConfig
from gruunet_cli.training.data import Frame
from gruunet_cli.training.prefetch import SamplingConfig, batches, make_loader


def frames() -> list[Frame]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        labels = touching_discs(rng, (96, 96), 12).astype(np.int32)
        out.append(Frame(f"f{i}", rng.random(labels.shape).astype(np.float32), labels))
    return out


def take(loader, n: int) -> list[dict[str, torch.Tensor]]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def cfg(**kw) -> SamplingConfig:
    return SamplingConfig(**{"crop": 32, "batch": 3, "seed": 5, "augment": AugmentConfig(), "clean_from_batch": 10**9, **kw})


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_batches_do_not_depend_on_worker_count() -> None:
    fs = frames()
    inline = take(make_loader(fs, cfg(weight_maps=True), workers=0), 5)
    assert_same(inline, take(make_loader(fs, cfg(weight_maps=True), workers=2), 5))
    assert_same(inline, take(make_loader(fs, cfg(weight_maps=True), workers=3), 5))
    assert inline[0]["image"].shape == (3, 1, 32, 32) and inline[0]["target"].dtype == torch.int64
    assert inline[0]["weight"].shape == (3, 32, 32)
    other_seed = take(make_loader(fs, cfg(seed=6), workers=0), 1)
    assert not torch.equal(inline[0]["image"], other_seed[0]["image"])


def test_resume_continues_the_same_stream() -> None:
    fs = frames()
    full = take(make_loader(fs, cfg(), workers=0), 6)
    assert_same(full[4:], take(make_loader(fs, cfg(), workers=2, start_batch=4), 2))


def test_ranks_draw_different_samples() -> None:
    fs = frames()
    r0 = take(make_loader(fs, cfg(), workers=0, rank=0, world=2), 2)
    r1 = take(make_loader(fs, cfg(), workers=0, rank=1, world=2), 2)
    single = take(make_loader(fs, cfg(), workers=0), 4)
    assert_same([r0[0], r1[0], r0[1], r1[1]], single)  # ranks interleave one global stream


def test_last_phase_starts_at_the_same_iteration_on_every_rank() -> None:
    fs = frames()
    clean = take(make_loader(fs, cfg(augment=NO_AUGMENTATION), workers=0), 8)
    for rank in (0, 1):
        mixed = take(make_loader(fs, cfg(clean_from_batch=2, world=2), workers=0, rank=rank, world=2), 4)
        assert not torch.equal(mixed[1]["image"], clean[2 + rank]["image"])  # iteration 1: augmented
        assert_same(mixed[2:], [clean[4 + rank], clean[6 + rank]])  # iterations 2, 3: clean


def test_last_phase_is_not_augmented() -> None:
    fs = frames()
    mixed = take(make_loader(fs, cfg(clean_from_batch=2), workers=0), 4)
    clean = take(make_loader(fs, cfg(augment=NO_AUGMENTATION), workers=0), 4)
    assert not torch.equal(mixed[0]["image"], clean[0]["image"])
    assert_same(mixed[2:], clean[2:])


def test_worker_error_reaches_the_trainer() -> None:
    """A worker's exception (here a bug: a frame without two dimensions) reaches the training
    loop with the worker's traceback, and the workers are stopped then: the traceback holds the
    DataLoader's iterator, which stopped them only at exit, where each lived out its SIGTERM grace."""
    bad = [Frame("broken", np.zeros((4,), np.float32), np.zeros((4,), np.int32), boxes=[(slice(0, 1),)])]
    before = set(multiprocessing.active_children())
    with pytest.raises(Exception, match="DataLoader worker") as caught:
        next(batches(make_loader(bad, cfg(), workers=2)))
    assert "Original Traceback" in str(caught.value)
    assert not set(multiprocessing.active_children()) - before


def test_background_crops_show_what_object_crops_never_do() -> None:
    """One small cell in a large empty frame: object-centred crops always hold part of it;
    with ``background_fraction`` about that share of crops holds no foreground at all."""
    labels = np.zeros((400, 400), np.int32)
    labels[10:20, 10:20] = 1
    frame = [Frame("one cell", np.random.default_rng(1).random((400, 400)).astype(np.float32), labels)]
    plain = NO_AUGMENTATION

    def empty_share(fraction: float) -> float:
        batches = take(make_loader(frame, cfg(augment=plain, background_fraction=fraction), workers=0), 40)
        targets = torch.cat([b["target"] for b in batches])  # (120, 32, 32)
        return float((targets.flatten(1).sum(1) == 0).float().mean())

    assert empty_share(0.0) == 0.0
    assert 0.3 < empty_share(0.5) < 0.7  # ~½ drawn anywhere, nearly all of them miss the cell
