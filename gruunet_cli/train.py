"""`gruunet train`: the paper's training procedure (Section 2.3), as an outline of small steps.

AMSGrad (Adam, amsgrad=True, β = 0.9/0.999), batches of augmented crops centred on ground-truth
objects from the prefetcher, validation every ``val_interval`` iterations (loss, Dice, SEG),
early stopping on a plateau, the best model kept, un-augmented crops in the last phase,
atomic checkpoints, bit-for-bit ``--resume``, Ctrl-C saves and stops. Under `torchrun` each
rank trains a DistributedDataParallel replica with its own augmentation workers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import curves, data, distributed, modelfile
from .augment import AugmentConfig
from .atomic import atomic_path, writable_dir
from .config import Arch, LossName, ModelConfig, ModelMeta, NormConfig, PostConfig, to_dict
from .errors import UserError
from .loss import compute_loss
from .model import build_model, count_parameters
from .prefetch import SamplingConfig, make_loader
from .runtime import autocast, resolve_device, set_threads
from .sources import Layout, Source
from .validation import ValScores, validate


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained (stored in the model file)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossName = LossName.nfl
    gamma: float = 2.0
    # nfl: gradient through the normalizer Σw too (makes training collapse; see loss.py)
    nfl_normalizer_grad: bool = False
    crop: int | None = None  # None: about the largest object, rounded to 16
    batch: int = 2
    lr: float = 1e-3
    iterations: int = 10_000
    val_interval: int = 100
    patience: int = 10  # validations without a better SEG before stopping
    clean_fraction: float = 0.1  # last fraction of iterations on un-augmented crops
    val_fraction: float = 0.25  # held out per source when no validation sequence is given
    scale_to: float | None = None  # resize each training frame so its median object diameter is this (px)
    # partial CTC GT: cells with a TRA marker but no SEG label are left out of the loss (not background)
    ignore_unannotated: bool = True
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    checkpoint_interval: int = 500
    threads: int | None = None  # CPU threads (None: the free cores)
    init: str | None = None  # model file whose weights start the run (fine-tuning)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    post: PostConfig = field(default_factory=PostConfig)


@dataclass(frozen=True)
class TrainData:
    """Where the frames come from (recorded in the model file): training sources, and validation
    sources (none: ``val_fraction`` of each training source is held out)."""

    sources: tuple[Source, ...]
    val: tuple[Source, ...] = ()

    @classmethod
    def ctc(cls, images: Path, gt: Path, st: Path | None = None, val_images: Path | None = None,
            val_gt: Path | None = None) -> TrainData:
        """One CTC sequence (and optionally a validation sequence)."""
        val = () if val_images is None else (Source(Layout.ctc, Path(val_images), Path(val_gt)),)
        return cls((Source(Layout.ctc, Path(images), Path(gt), None if st is None else Path(st)),), val)

    def describe(self) -> dict[str, Any]:
        return {"sources": [s.describe() for s in self.sources], "val": [s.describe() for s in self.val]}


@dataclass
class Prepared:
    """The frames a run trains and validates on, and what the model file says about them."""

    train: list[list[data.FrameRef]]  # per source, loaded lazily by the workers
    val: list[data.FrameRef]  # loaded one at a time at each validation, so memory does not grow with them
    crop: int
    object_diameter: float | None
    ignored: dict[str, int]  # unannotated cells / pixels left out of the loss (partial GT)


@dataclass
class TrainState:
    """What a checkpoint restores besides weights and optimizer."""

    iteration: int = 0
    best_seg: float = -math.inf
    best_iteration: int = 0
    bad_validations: int = 0
    elapsed_s: float = 0.0
    rows: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class TrainResult:
    model_path: Path
    iterations: int
    best_iteration: int
    best_seg: float
    stopped_early: bool
    interrupted: bool
    rows: list[dict[str, float]]
    signal: int = 0  # 2 (SIGINT) or 15 (SIGTERM) when interrupted


def output_paths(out: Path) -> dict[str, Path]:
    base = modelfile.weights_path(out)
    stem = base.with_suffix("")
    return {
        "model": base,
        "checkpoint": stem.with_name(stem.name + ".ckpt.pt"),
        "log": stem.with_name(stem.name + ".train_log.csv"),
        "curves": stem.with_name(stem.name + ".curves.png"),
    }


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: TrainState, cfg: TrainConfig) -> None:
    """Model, optimizer and loop state in one file, written atomically (plain tensors and numbers)."""
    blob = {
        "model": modelfile.plain_module(model).state_dict(),
        "optimizer": opt.state_dict(),
        "state": dataclasses.asdict(state),
        "config": to_dict(cfg),
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


# Options a resumed run may change: it may run longer, wait longer for a better validation,
# score validations with other post-processing (which re-scores the best model so far), or use
# another number of augmentation workers (batches do not depend on it).
EXTENDABLE = ("iterations", "patience", "post", "workers", "threads")


def load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                    cfg: TrainConfig) -> tuple[TrainState, dict[str, Any]]:
    """Restore weights and optimizer; returns the loop state and the checkpoint's configuration."""
    if not path.is_file():
        raise UserError("no checkpoint to resume from", path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as exc:
        why = ("it holds pickled objects other than tensors, refused (weights_only)"
               if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__ else
               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'truncated or not a checkpoint'}")
        raise UserError(f"cannot resume from this checkpoint: {why}", path) from None
    if not isinstance(blob, dict) or not {"model", "optimizer", "state", "config"} <= set(blob):
        raise UserError("cannot resume from this checkpoint: not a gruunet checkpoint", path)
    # A checkpoint of an older version lacks newer fields: they must have their default values.
    defaults = to_dict(TrainConfig())
    saved = {**{k: v for k, v in defaults.items() if k not in blob["config"]}, **blob["config"]}
    fixed = lambda c: {k: v for k, v in c.items() if k not in EXTENDABLE}  # noqa: E731
    if fixed(saved) != fixed(to_dict(cfg)):
        changed = sorted(k for k in fixed(saved) if saved.get(k) != to_dict(cfg).get(k))
        raise UserError(f"checkpoint was made with other options ({', '.join(changed)}); resume with the same "
                        "options (only --iterations, --patience, --workers, --threads and the post-processing "
                        "may change)", path)
    modelfile.plain_module(model).load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    return TrainState(**blob["state"]), blob["config"]


def default_lr(fine_tuning: bool) -> float:
    """The paper's 1e-3 from scratch. Fine-tuning restarts AMSGrad, and at 1e-3 that wrecked the
    shipped GRUU-Net within 700 iterations (validation SEG 0.83 → 0); 1e-4 stays stable."""
    return 1e-4 if fine_tuning else 1e-3


def init_model_config(path: Path, arch: Arch, dims: int) -> ModelConfig:
    """The architecture of a model file to fine-tune, checked against ``--model`` and the data's dims."""
    meta = modelfile.read_meta(path)
    if meta.model.arch != arch:
        raise UserError(f"is a {meta.model.arch.value} model file; train it with --model {meta.model.arch.value}", path)
    if meta.model.dims != dims:
        raise UserError(f"is a {meta.model.dims}D model, the training data is {dims}D", path)
    return meta.model


def _load_init(path: Path, model: nn.Module, model_cfg: ModelConfig) -> None:
    """Copy a model file's weights into ``model`` (same architecture; safetensors, no code runs)."""
    if modelfile.read_meta(path).model != model_cfg:
        raise UserError("its architecture differs from the one being trained", path)
    modelfile.load_weights_into(path, model)


def _meta(cfg: TrainConfig, data_src: TrainData, state: TrainState, crop: int, extra: dict[str, Any]) -> ModelMeta:
    training = {
        "config": to_dict(cfg),
        "crop": crop,
        "data": data_src.describe(),
        "best_iteration": state.best_iteration,
        "best_val_seg": state.best_seg if math.isfinite(state.best_seg) else None,
        "iterations_run": state.iteration,
        "wall_time_s": round(state.elapsed_s, 1),
        **{k: v for k, v in extra.items() if k != "object_diameter"},
    }
    return ModelMeta(model=cfg.model, norm=cfg.norm, post=cfg.post, object_diameter=extra.get("object_diameter"),
                     training=training)


def prepare(cfg: TrainConfig, src: TrainData) -> Prepared:
    """Scan every source, split each into training and validation frames (or use ``src.val``),
    load the validation frames, measure crop size and cell size, count what partial GT ignores."""
    dims = cfg.model.dims
    scanned = [data.scan(s, dims, cfg.scale_to, cfg.ignore_unannotated) for s in src.sources]
    if src.val:
        train = [sf.refs for sf in scanned]
        val_refs = [r for s in src.val for r in data.scan(s, dims, cfg.scale_to, cfg.ignore_unannotated).refs]
    else:
        parts = [data.split(sf.refs, cfg.val_fraction) for sf in scanned]
        train, val_refs = [p[0] for p in parts], [r for p in parts for r in p[1]]
    kept = {r for refs in train for r in refs}
    stats = [st for sf in scanned for r, st in zip(sf.refs, sf.stats) if r in kept]
    diameters = np.concatenate([st.diameters for st in stats] or [np.zeros(0)])
    ignored = {"cells": 0, "pixels": 0, "frames": 0}
    for ref in (r for r in kept if r.markers is not None):
        frame = ref.load(cfg.norm)
        if frame.ignore is not None:
            ignored["cells"] += frame.ignored_cells
            ignored["pixels"] += int(frame.ignore.sum())
            ignored["frames"] += 1
    return Prepared(train, val_refs, cfg.crop or data.auto_crop(stats),
                    float(np.median(diameters)) if diameters.size else None, ignored)


def run(cfg: TrainConfig, src: TrainData, out: Path, resume: bool = False,
        progress: Callable[[int, dict[str, float]], None] | None = None,
        on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train and write the best model to ``out`` (``NAME.safetensors`` + ``.json``), with
    ``NAME.train_log.csv``, ``NAME.curves.png`` and ``NAME.ckpt.pt`` beside it.

    ``progress(iteration, stats)`` is called after every step on the main rank; ``on_step(i)``
    before step i (a hook; tests raise KeyboardInterrupt there to simulate Ctrl-C).
    """
    threads = set_threads(cfg.threads)  # first: the denormal flush below must reach every torch thread
    device = resolve_device(cfg.device)
    dinfo = distributed.init_from_env(device.type)
    if dinfo.enabled and device.type == "cuda":
        device = torch.device("cuda", dinfo.local_rank)
        torch.cuda.set_device(device)
    paths = output_paths(out)
    writable_dir(paths["model"].parent)  # before any data is read or iteration spent
    prep = prepare(cfg, src)
    val_frames, crop = prep.val, prep.crop
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
    model = build_model(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), amsgrad=True)
    state = TrainState()
    if cfg.init is not None and not resume:
        _load_init(Path(cfg.init), model, cfg.model)
    if resume:
        state, before = load_checkpoint(paths["checkpoint"], model, opt, cfg)
        if before["post"] != to_dict(cfg.post) and state.best_iteration and dinfo.main:
            # The best SEG so far was scored with other post-processing: score it again.
            best, _ = modelfile.load(paths["model"], device)
            state.best_seg = validate(best, val_frames, device, cfg.post, cfg.gamma, cfg.amp, cfg.norm).seg
    net: nn.Module = model
    if dinfo.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampling = SamplingConfig(
        crop=crop, batch=cfg.batch, seed=cfg.seed, augment=cfg.augment,
        clean_from_batch=int(cfg.iterations * (1 - cfg.clean_fraction)),
        weight_maps=cfg.loss == LossName.wce, world=dinfo.world,
    )
    loader = make_loader(prep.train, sampling, cfg.workers, start_batch=state.iteration, rank=dinfo.rank,
                         world=dinfo.world, pin_memory=device.type == "cuda", norm=cfg.norm)
    use_fp16 = cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
    extra = {"parameters": count_parameters(model), "device": str(device), "world_size": dinfo.world, "threads": threads,
             "object_diameter": prep.object_diameter, "ignored": prep.ignored,
             "train_frames": [r.name for refs in prep.train for r in refs], "val_frames": [f.name for f in val_frames]}

    interval = {"loss": 0.0, "steps": 0, "wait": 0.0, "time": 0.0}
    stopped_early = interrupted = False
    signum = 2  # SIGINT, unless SIGTERM asked
    batches = iter(loader)
    t_start = time.perf_counter() - state.elapsed_s
    try:
        with _deferred_stop() as stop_signal:
            while state.iteration < cfg.iterations:
                if on_step is not None:
                    on_step(state.iteration)
                if stop_signal.received:  # Ctrl-C or SIGTERM between steps: a consistent state to save
                    signum = stop_signal.received
                    raise KeyboardInterrupt
                t0 = time.perf_counter()
                batch = next(batches)
                x = batch["image"].to(device, non_blocking=True)  # (B, 1, *c)
                y = batch["target"].to(device, non_blocking=True)  # (B, *c)
                v = batch["valid"].to(device, non_blocking=True)  # (B, *c)
                w = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None
                t_data = time.perf_counter() - t0
                loss = train_step(net, opt, scaler, x, y, w, cfg, device, v)
                state.iteration += 1
                interval["loss"] += loss
                interval["steps"] += 1
                interval["wait"] += t_data
                interval["time"] += time.perf_counter() - t0
                if dinfo.main and progress is not None:
                    progress(state.iteration, {"loss": loss, "wait": interval["wait"] / max(interval["time"], 1e-9)})
                last = state.iteration == cfg.iterations
                if state.iteration % cfg.val_interval == 0 or last:
                    stop = False
                    if dinfo.main:
                        state.elapsed_s = time.perf_counter() - t_start
                        scores = validate(model, val_frames, device, cfg.post, cfg.gamma, cfg.amp, cfg.norm)
                        stop = _record(state, scores, interval, cfg, model, paths, src, crop, extra)
                        interval = {"loss": 0.0, "steps": 0, "wait": 0.0, "time": 0.0}
                    if distributed.broadcast_flag(stop, dinfo, device):
                        stopped_early = True
                        break
                if dinfo.main and (state.iteration % cfg.checkpoint_interval == 0 or last):
                    save_checkpoint(paths["checkpoint"], model, opt, state, cfg)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        del batches  # stops the worker processes
    state.elapsed_s = time.perf_counter() - t_start
    if dinfo.main:
        save_checkpoint(paths["checkpoint"], model, opt, state, cfg)
        if state.best_iteration == 0:  # no validation yet: keep the current weights
            modelfile.save(paths["model"], model, _meta(cfg, src, state, crop, extra))
        curves.write_csv(paths["log"], state.rows)
        if state.rows:
            curves.plot(paths["curves"], state.rows, title=f"{cfg.model.arch.value}, loss {cfg.loss.value}")
    distributed.barrier(dinfo)
    distributed.shutdown(dinfo)
    return TrainResult(paths["model"], state.iteration, state.best_iteration, state.best_seg, stopped_early,
                       interrupted, state.rows, signum if interrupted else 0)


class _StopFlag:
    received: int = 0  # the signal number that asked to stop (0: none)


class _deferred_stop:
    """While active, Ctrl-C (SIGINT) and SIGTERM (timeout, SLURM, Kubernetes, docker stop) only set
    a flag that the loop checks between steps, so the run saves a checkpoint and exits cleanly
    (main thread only)."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __enter__(self) -> _StopFlag:
        import signal
        import threading

        self.flag = _StopFlag()
        self.previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                num = getattr(signal, name)
                self.previous[num] = signal.signal(num, lambda signum, _: setattr(self.flag, "received", signum))
        return self.flag

    def __exit__(self, *exc) -> None:
        import signal

        for num, handler in self.previous.items():
            signal.signal(num, handler)


def train_step(net: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, x: torch.Tensor,
               y: torch.Tensor, w: torch.Tensor | None, cfg: TrainConfig, device: torch.device,
               valid: torch.Tensor | None = None) -> float:
    """One optimisation step on images x (B, 1, *c), targets y (B, *c); returns the loss."""
    net.train()
    opt.zero_grad(set_to_none=True)
    with autocast(device, cfg.amp):
        logits = net(x)  # (B, 2, *c)
    loss = compute_loss(cfg.loss, logits.float(), y, w, cfg.gamma, valid, cfg.nfl_normalizer_grad)
    if not torch.isfinite(loss):  # before the step: the weights and the files on disk stay as they were
        raise UserError(f"training loss became {float(loss.detach())}: stopped (check the images for NaN/inf pixels; "
                        "the model file and checkpoint keep the last good state)")
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return float(loss.detach())


def _record(state: TrainState, scores: ValScores, interval: dict[str, float], cfg: TrainConfig, model: nn.Module,
            paths: dict[str, Path], src: TrainData, crop: int, extra: dict[str, Any]) -> bool:
    """Log a validation, keep the best model, and say whether the plateau has lasted long enough."""
    steps = max(interval["steps"], 1)
    state.rows.append({
        "iteration": state.iteration,
        "train_loss": interval["loss"] / steps,
        "val_loss": scores.loss,
        "val_dice": scores.dice,
        "val_seg": scores.seg,
        "data_wait_fraction": interval["wait"] / max(interval["time"], 1e-9),
        "it_per_s": steps / max(interval["time"], 1e-9),
        "elapsed_s": state.elapsed_s,
    })
    seg = scores.seg if math.isfinite(scores.seg) else -1.0
    if seg > state.best_seg:
        state.best_seg, state.best_iteration, state.bad_validations = seg, state.iteration, 0
        modelfile.save(paths["model"], model, _meta(cfg, src, state, crop, {**extra, "val_dice": scores.dice}))
    else:
        state.bad_validations += 1
    curves.write_csv(paths["log"], state.rows)
    return state.bad_validations >= cfg.patience


def default_model(arch: Arch, dims: int) -> ModelConfig:
    """The paper's GRUU-Net (or the U-Net baseline) for 2D or 3D data."""
    return ModelConfig(arch=arch, dims=dims, z_pool_levels=4 if dims == 2 else 1)


def guess_dims(sources: list[Source]) -> int:
    """3 when the first source has (Z, H, W) stacks with full-volume references, else 2
    (2D images, or slice references)."""
    from . import ctc, images
    from .sources import folder_pairs

    first = sources[0]
    if first.layout != Layout.ctc:
        _, image, mask = folder_pairs(first)[0]
        return 3 if len(images.image_shape(image)) == 3 and len(images.image_shape(mask)) == 3 else 2
    ndim = len(images.image_shape(ctc.list_images(first.path)[0].path))
    seg_dir, _ = ctc.resolve_gt_dir(first.gt)
    only_slices = all(g.slice is not None for g in ctc.list_gt(seg_dir))
    return 3 if ndim == 3 and not only_slices else 2
