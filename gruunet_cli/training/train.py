"""`gruunet train`: the paper's training procedure (Section 2.3), as an outline of small steps.

AMSGrad (Adam, amsgrad=True, β = 0.9/0.999), batches of augmented crops centred on ground-truth
objects from the prefetcher, validation every ``val_interval`` iterations (loss, Dice, SEG) by
`segment`'s own path, early stopping on a plateau, the best model kept, un-augmented crops in the
last phase, atomic checkpoints, bit-for-bit ``--resume``, Ctrl-C saves and stops. Under `torchrun`
each rank trains a DistributedDataParallel replica with its own augmentation workers.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..config import LossName, ModelMeta, to_dict
from ..files import modelfile
from ..files.atomic import writable_dir
from ..inference.runtime import resolve_device, set_threads
from ..nets.model import build_model, count_parameters
from . import bnstats, curves
from .checkpoint import (
    TrainState,
    init_model_config,
    load_checkpoint,
    load_init,
    output_paths,
    save_checkpoint,
)
from .data import guess_dims
from .ema import averaged, evaluated, ramp_note
from .options import TrainConfig, TrainData, default_lr, learning_rate
from .prefetch import SamplingConfig, batches, make_loader
from .prepare import Prepared, prepare
from .step import Interval, train_step
from .stopping import deferred_stop
from .validation import ValScores, validate

__all__ = ["TrainConfig", "TrainData", "TrainResult", "default_lr", "guess_dims", "init_model_config", "output_paths",
           "prepare", "run"]


@dataclass(frozen=True)
class RunInfo:
    """What the model file records about how and on what the run trained."""

    parameters: int
    device: str
    world_size: int
    threads: int
    object_diameter: float | None
    native_diameter: float | None  # the same in the frames' own pixels (before --scale-to)
    ignored: dict[str, int]
    train_frames: list[str]
    val_frames: list[str]


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


@dataclass
class Run:
    """Everything the loop works with, made by `_setup`."""

    cfg: TrainConfig
    src: TrainData
    paths: dict[str, Path]
    device: torch.device
    dinfo: distributed.DistInfo
    prep: Prepared
    model: nn.Module
    net: nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: TrainState
    info: RunInfo
    ema: nn.Module | None  # the weights' moving average (--ema), main rank only
    interval: Interval = field(default_factory=Interval)


def _meta(run: Run, val_dice: float | None = None) -> ModelMeta:
    cfg, state = run.cfg, run.state
    info = {k: v for k, v in asdict(run.info).items() if k != "object_diameter"}
    training = {
        "config": to_dict(cfg), "crop": run.prep.crop, "data": run.src.describe(),
        "best_iteration": state.best_iteration,
        "best_val_seg": state.best_seg if math.isfinite(state.best_seg) else None,
        "iterations_run": state.iteration,
        "wall_time_s": round(state.elapsed_s, 1),
        **info,
        **({} if val_dice is None else {"val_dice": val_dice}),
    }
    return ModelMeta(model=cfg.model, norm=cfg.norm, post=cfg.post, object_diameter=run.info.object_diameter,
                     training=training)


def run(cfg: TrainConfig, src: TrainData, out: Path, resume: bool = False,
        progress: Callable[[int, dict[str, float]], None] | None = None,
        on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train and write the best model to ``out`` (``NAME.safetensors`` + ``.json``), with
    ``NAME.train_log.csv``, ``NAME.curves.png`` and ``NAME.ckpt.pt`` beside it.

    ``progress(iteration, stats)`` is called after every step on the main rank; ``on_step(i)``
    before step i (a hook; tests raise KeyboardInterrupt there to simulate Ctrl-C).
    """
    r = _setup(cfg, src, out, resume)
    stopped_early, signum = _loop(r, progress, on_step)
    return _finish(r, stopped_early, signum)


def _setup(cfg: TrainConfig, src: TrainData, out: Path, resume: bool) -> Run:
    """Device and ranks, output folder, data, model, optimizer, and the checkpoint when resuming."""
    threads = set_threads(cfg.threads)  # first: the denormal flush below must reach every torch thread
    device = resolve_device(cfg.device)
    dinfo = distributed.init_from_env(device.type)
    if dinfo.enabled and device.type == "cuda":
        device = torch.device("cuda", dinfo.local_rank)
        torch.cuda.set_device(device)
    paths = output_paths(out)
    writable_dir(paths["model"].parent)  # before any data is read or iteration spent
    prep = prepare(cfg, src)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
    model = build_model(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), amsgrad=True)
    state = TrainState()
    if cfg.init is not None and not resume:
        load_init(Path(cfg.init), model, cfg.model)
    avg = averaged(model, cfg.ema) if cfg.ema and dinfo.main else None
    if avg is not None and not resume and (note := ramp_note(cfg.ema, cfg.iterations)):
        print(note, file=sys.stderr, flush=True)  # a user comparing decays should know they cannot differ
    if resume:
        state, before = load_checkpoint(paths["checkpoint"], model, opt, cfg, avg)
        if before["post"] != to_dict(cfg.post) and state.best_iteration and dinfo.main:
            # The best SEG so far was scored with other post-processing: score it again.
            best, _ = modelfile.load(paths["model"], device)
            state.best_seg = validate(best, prep.val, device, cfg.post, cfg.gamma, cfg.amp, cfg.norm).seg
    net: nn.Module = model
    if dinfo.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_fp16 = cfg.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
    info = RunInfo(count_parameters(model), str(device), dinfo.world, threads, prep.object_diameter,
                   prep.native_diameter, prep.ignored,
                   [r.name for refs in prep.train for r in refs], [f.name for f in prep.val])
    return Run(cfg, src, paths, device, dinfo, prep, model, net, opt, torch.amp.GradScaler("cuda", enabled=use_fp16),
               state, info, avg)


def _batches(r: Run) -> Generator[dict[str, torch.Tensor], None, None]:
    """The prefetcher's batches from the run's current iteration on (augmented until the last phase)."""
    cfg = r.cfg
    sampling = SamplingConfig(
        crop=r.prep.crop, batch=cfg.batch, seed=cfg.seed, augment=cfg.augment,
        clean_from_batch=int(cfg.iterations * (1 - cfg.clean_fraction)),
        weight_maps=cfg.loss == LossName.wce, world=r.dinfo.world, background_fraction=cfg.background_crops,
    )
    loader = make_loader(r.prep.train, sampling, cfg.workers, start_batch=r.state.iteration, rank=r.dinfo.rank,
                         world=r.dinfo.world, pin_memory=r.device.type == "cuda", norm=cfg.norm)
    return batches(loader)


def _loop(r: Run, progress: Callable[[int, dict[str, float]], None] | None,
          on_step: Callable[[int], None] | None) -> tuple[bool, int]:
    """Steps until the last iteration, a plateau or a stop signal; returns (stopped early, signal
    number or 0)."""
    cfg, state = r.cfg, r.state
    batches = _batches(r)
    t_start = time.perf_counter() - state.elapsed_s
    try:
        with deferred_stop() as stop_signal:
            while state.iteration < cfg.iterations:
                if on_step is not None:
                    on_step(state.iteration)
                if stop_signal.received:  # Ctrl-C or SIGTERM between steps: a consistent state to save
                    return False, stop_signal.received
                t0 = time.perf_counter()
                batch = next(batches)
                t_data = time.perf_counter() - t0
                r.opt.param_groups[0]["lr"] = learning_rate(cfg, state.iteration)  # one group: all parameters
                loss, grad_norm = train_step(r.net, r.opt, r.scaler, batch, cfg, r.device)
                state.iteration += 1
                if r.ema is not None:
                    r.ema.update_parameters(r.model)
                r.interval.add(loss, grad_norm, t_data, time.perf_counter() - t0)
                if r.dinfo.main and progress is not None:
                    progress(state.iteration, {"loss": loss, "wait": r.interval.wait_fraction})
                last = state.iteration == cfg.iterations
                if (state.iteration % cfg.val_interval == 0 or last) and _validate(r, t_start):
                    return True, 0
                if r.dinfo.main and (state.iteration % cfg.checkpoint_interval == 0 or last):
                    save_checkpoint(r.paths["checkpoint"], r.model, r.opt, state, cfg, r.ema)
    except KeyboardInterrupt:
        return False, 2
    finally:
        batches.close()  # stops the worker processes now (`prefetch.batches`)
        state.elapsed_s = time.perf_counter() - t_start
    return False, 0


def _validate(r: Run, t_start: float) -> bool:
    """Validate on the main rank, log and keep the best model; whether every rank stops (plateau)."""
    stop = False
    if r.dinfo.main:
        r.state.elapsed_s = time.perf_counter() - t_start
        cfg, net = r.cfg, evaluated(r.model, r.ema)
        if cfg.precise_bn_frames:
            bnstats.recalibrate(net, [f for refs in r.prep.train for f in refs], r.device, cfg.norm,
                                cfg.precise_bn_frames)
        scores = validate(net, r.prep.val, r.device, cfg.post, cfg.gamma, cfg.amp, cfg.norm)
        stop = _record(r, scores, net)
        r.interval = Interval()
    return distributed.broadcast_flag(stop, r.dinfo, r.device)


def _record(r: Run, scores: ValScores, net: nn.Module) -> bool:
    """Log a validation, keep the best model (``net``, as validated), and say whether the plateau has lasted long enough."""
    state, iv = r.state, r.interval
    steps = max(iv.steps, 1)
    state.rows.append({
        "iteration": state.iteration,
        "train_loss": iv.loss / steps,
        "val_loss": scores.loss,
        "val_dice": scores.dice,
        "val_seg": scores.seg,
        "data_wait_fraction": iv.wait_fraction,
        "it_per_s": steps / max(iv.time_s, 1e-9),
        "elapsed_s": state.elapsed_s,
        "grad_norm": iv.grad_norm / steps,
        "grad_norm_max": iv.grad_norm_max,
    })
    seg = scores.seg if math.isfinite(scores.seg) else -1.0
    if seg > state.best_seg:
        state.best_seg, state.best_iteration, state.bad_validations = seg, state.iteration, 0
        modelfile.save(r.paths["model"], net, _meta(r, scores.dice))
    else:
        state.bad_validations += 1
    curves.write_csv(r.paths["log"], state.rows)
    return state.bad_validations >= r.cfg.patience


def _finish(r: Run, stopped_early: bool, signum: int) -> TrainResult:
    """Final checkpoint, log and curves (main rank); the model file when nothing was validated yet."""
    state, paths, cfg = r.state, r.paths, r.cfg
    if r.dinfo.main:
        save_checkpoint(paths["checkpoint"], r.model, r.opt, state, cfg, r.ema)
        if state.best_iteration == 0:  # no validation yet: keep the current weights
            modelfile.save(paths["model"], evaluated(r.model, r.ema), _meta(r))
        curves.write_csv(paths["log"], state.rows)
        if state.rows:
            curves.plot(paths["curves"], state.rows, title=f"{cfg.model.arch.value}, loss {cfg.loss.value}")
    distributed.barrier(r.dinfo)
    distributed.shutdown(r.dinfo)
    return TrainResult(paths["model"], state.iteration, state.best_iteration, state.best_seg, stopped_early,
                       signum != 0, state.rows, signum)
