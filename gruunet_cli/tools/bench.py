"""Benchmarks (`gruunet bench ...`): speed measured side by side in one run, never asserted in tests."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import tifffile


def synthetic_frame(rng: np.random.Generator, size: int, objects: int) -> np.ndarray:
    """A ``(size, size)`` uint16 label image of ``objects`` random discs (radius 6–20 px), later ones on top."""
    labels = np.zeros((size, size), np.uint16)
    for k in range(1, objects + 1):
        cy, cx = rng.uniform(0, size, 2)
        r = rng.uniform(6, 20)
        y0, y1 = int(max(cy - r, 0)), int(min(cy + r + 1, size))
        x0, x1 = int(max(cx - r, 0)), int(min(cx + r + 1, size))
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        labels[y0:y1, x0:x1][disc] = k
    return labels


def make_evaluation_case(root: Path, frames: int, size: int, objects: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/01_GT`` (SEG on every frame, TRA markers) and a shifted ``root/01_RES`` with the
    track files py-ctcmetrics needs. Returns (res_dir, gt_dir)."""
    rng = np.random.default_rng(seed)
    gt, res = root / "01_GT", root / "01_RES"
    for d in (gt / "SEG", gt / "TRA", res):
        d.mkdir(parents=True, exist_ok=True)
    man, rt = [], []
    for t in range(frames):
        lab = synthetic_frame(rng, size, objects)
        tifffile.imwrite(gt / "SEG" / f"man_seg{t:03d}.tif", lab, compression="zlib")
        ids = np.unique(lab)[1:]
        # Labels unique over time (one-frame tracks) so both tools accept the track files.
        lut = np.zeros(int(lab.max()) + 1, np.uint16)
        lut[ids] = np.arange(1, ids.size + 1) + t * objects
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", lut[lab], compression="zlib")
        man += [f"{int(v)} {t} {t} 0" for v in lut[ids]]
        shifted = np.roll(lut[lab], (2, 1), axis=(0, 1))
        tifffile.imwrite(res / f"mask{t:03d}.tif", shifted, compression="zlib")
        rt += [f"{int(v)} {t} {t} 0" for v in np.unique(shifted)[1:]]
    (gt / "TRA" / "man_track.txt").write_text("\n".join(man) + "\n")
    (res / "res_track.txt").write_text("\n".join(rt) + "\n")
    return res, gt


def bench_evaluate(workdir: Path, frames: int = 92, size: int = 1024, objects: int = 150, repeats: int = 1) -> dict:
    """Time `gruunet evaluate` (SEG, DET, Dice, Hausdorff) against py-ctcmetrics (SEG, DET) on one case.

    The two run alternately ``repeats`` times; the best time of each is reported.
    """
    from ..evaluation.evaluate import evaluate

    res, gt = make_evaluation_case(workdir, frames, size, objects)
    try:
        from ctc_metrics.scripts.evaluate import evaluate_sequence
    except ImportError:
        evaluate_sequence = None
    ours, theirs, out = [], [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = evaluate(res, gt)
        ours.append(time.perf_counter() - t0)
        out["gruunet_seg"], out["gruunet_det"] = report.seg, report.det
        if evaluate_sequence is not None:
            t0 = time.perf_counter()
            ref = evaluate_sequence(str(res), str(gt), metrics=["SEG", "DET"])
            theirs.append(time.perf_counter() - t0)
            out["ctcmetrics_seg"], out["ctcmetrics_det"] = ref["SEG"], ref["DET"]
    out["gruunet_s"] = min(ours)
    if theirs:
        out["ctcmetrics_s"] = min(theirs)
        out["ratio"] = out["gruunet_s"] / out["ctcmetrics_s"]
    out.update(frames=frames, size=size, objects=objects)
    return out


def _forward(model, x) -> None:
    """One timed forward: eval mode, no gradients."""
    import torch

    model.eval()
    with torch.no_grad():
        model(x)


def _train_step(model, x, y) -> None:
    """One timed forward+backward: train mode, normalized focal loss (no optimiser step)."""
    from ..training.loss import normalized_focal_loss

    model.train()
    model.zero_grad(set_to_none=True)
    normalized_focal_loss(model(x), y).backward()


def bench_model(size: int = 256, batch: int = 1, repeats: int = 3, device: str = "cpu", unet_base: int = 64) -> list[dict]:
    """Parameters and seconds per crop for GRUU-Net and the U-Net baseline, interleaved in one run,
    each as built (channels-last weights) and with its weights made channels-first (contiguous),
    the layout before channels-last was adopted.

    Forward is timed in eval mode without gradients; forward+backward in train mode with the
    normalized focal loss. The best of ``repeats`` counts (after one warm-up each).
    """
    import torch

    from ..config import Arch, ModelConfig
    from ..nets.model import build_model, count_parameters

    torch.manual_seed(0)
    built = {
        "gruunet": build_model(ModelConfig()).to(device),
        f"unet (base {unet_base})": build_model(ModelConfig(arch=Arch.unet, unet_base=unet_base)).to(device),
    }
    models = {**built, **{f"{k}, channels-first": copy.deepcopy(m).to(memory_format=torch.contiguous_format)
                          for k, m in built.items()}}
    x = torch.randn(batch, 1, size, size, device=device)
    y = (torch.rand(batch, size, size, device=device) > 0.5).long()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times: dict[str, dict[str, list[float]]] = {k: {"fwd": [], "fwd_bwd": []} for k in models}
    for rep in range(repeats + 1):  # round 0 is the warm-up
        for name, m in models.items():
            for kind, fn in (("fwd", lambda: _forward(m, x)), ("fwd_bwd", lambda: _train_step(m, x, y))):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                if rep:
                    times[name][kind].append((time.perf_counter() - t0) / batch)
    return [
        {"model": name, "parameters": count_parameters(m), "fwd_s_per_crop": min(times[name]["fwd"]),
         "fwd_bwd_s_per_crop": min(times[name]["fwd_bwd"]), "size": size, "device": device}
        for name, m in models.items()
    ]


def bench_denormals_one(weights: Path, flush: bool, repeats: int = 3) -> dict:
    """Seconds of a trained model's forward and training step (train mode, normalized focal loss)
    on two real 96×96 crops of the bundled 01 image, with denormal floats flushed to zero or not;
    best of ``repeats``. Run it in a fresh process: the flag is per thread, and torch's worker
    threads take it from the thread that creates them."""
    import tifffile
    import torch

    torch.set_flush_denormal(flush)  # before any parallel work creates the worker threads
    from ..files import modelfile
    from ..inference import normalize
    from ..inference.instances import separated_foreground
    from .demo import SAMPLE

    model, meta = modelfile.load(weights, "cpu")
    image = normalize.normalize(tifffile.imread(SAMPLE / "01" / "t000.tif"), meta.norm)
    labels = tifffile.imread(SAMPLE / "01_GT" / "SEG" / "man_seg000.tif")
    windows = [np.s_[100:196, 100:196], np.s_[300:396, 200:296]]
    x = torch.from_numpy(np.stack([image[w] for w in windows])[:, None].astype(np.float32))  # (2, 1, 96, 96)
    y = torch.from_numpy(np.stack([separated_foreground(labels[w]) for w in windows]).astype(np.int64))

    times: dict[str, list[float]] = {"forward_s": [], "train_step_s": []}
    for rep in range(repeats + 1):  # round 0 is the warm-up
        for key, fn in (("forward_s", lambda: _forward(model, x)), ("train_step_s", lambda: _train_step(model, x, y))):
            t0 = time.perf_counter()
            fn()
            if rep:
                times[key].append(time.perf_counter() - t0)
    return {"flush_denormal": flush, **{k: min(v) for k, v in times.items()}, "threads": torch.get_num_threads()}


def bench_segment_one(size: int, weights: Path | None, tile: int | None = None, device: str = "cpu",
                      threads: int | None = None, amp: bool = True) -> dict:
    """Segment one random ``size``×``size`` uint16 image; seconds per megapixel and peak resident
    memory of this process (run each size in a fresh process for a clean peak)."""
    import resource

    from ..inference.runtime import precision
    from ..inference.segment import Predictor, SegmentOptions

    if weights is None:
        import tempfile

        import torch

        from ..config import ModelConfig, ModelMeta
        from ..files import modelfile
        from ..nets.model import build_model

        torch.manual_seed(0)
        weights = Path(tempfile.mkdtemp()) / "random"
        modelfile.save(weights, build_model(ModelConfig()), ModelMeta())
    predictor = Predictor(Path(weights), SegmentOptions(tile=tile, device=device, threads=threads, amp=amp))
    image = np.random.default_rng(0).integers(0, 4000, (size, size), dtype=np.uint16)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    labels = predictor.labels(image)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "megapixels": size * size / 1e6, "seconds": seconds, "s_per_mpx": seconds / (size * size / 1e6),
            "peak_rss_mib": peak, "rss_before_mib": base_rss, "objects": int(labels.max()), "tile": tile,
            "threads": __import__("torch").get_num_threads(), "precision": precision(predictor.device, amp)}


def bench_train(frames: list, crop: int = 96, batch: int = 2, workers: tuple[int, ...] = (2, 4), steps: int = 30,
                device: str = "cpu", seed: int = 0) -> list[dict]:
    """Prefetcher supply vs training-step demand, and how long the step waits for data.

    For each worker count: (a) crops/s the prefetcher produces alone, (b) crops/s the training
    step consumes on a fixed batch (no data loading), (c) the real loop: data-wait fraction of
    step time and crops/s. All in one process, one after another.
    """
    import torch

    from ..config import ModelConfig
    from ..nets.model import build_model
    from ..training.augment import AugmentConfig
    from ..training.loss import normalized_focal_loss
    from ..training.prefetch import SamplingConfig, make_loader

    dev = torch.device(device)
    torch.manual_seed(seed)
    model = build_model(ModelConfig()).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    cfg = SamplingConfig(crop=crop, batch=batch, seed=seed, augment=AugmentConfig(), clean_from_batch=1 << 40)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        normalized_focal_loss(model(x), y).backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    fixed = next(iter(make_loader(frames, cfg, 0)))
    x0, y0 = fixed["image"].to(dev), fixed["target"].to(dev)
    step(x0, y0)  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x0, y0)
    consume = steps * batch / (time.perf_counter() - t0)

    out = []
    for w in workers:
        it = iter(make_loader(frames, cfg, w, pin_memory=dev.type == "cuda"))
        next(it)  # start-up
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)
        produce = steps * batch / (time.perf_counter() - t0)
        del it
        it = iter(make_loader(frames, cfg, w, start_batch=10_000, pin_memory=dev.type == "cuda"))
        next(it)
        wait = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            t1 = time.perf_counter()
            b = next(it)
            x, y = b["image"].to(dev, non_blocking=True), b["target"].to(dev, non_blocking=True)
            wait += time.perf_counter() - t1
            step(x, y)
        total = time.perf_counter() - t0
        del it
        out.append({"workers": w, "produced_crops_per_s": produce, "consumed_crops_per_s": consume,
                    "loop_crops_per_s": steps * batch / total, "data_wait_fraction": wait / total,
                    "crop": crop, "batch": batch, "device": device})
    return out


def synthetic_frames(n: int = 4, size: int = 256, seed: int = 0) -> list:
    """Normalised synthetic nuclei frames (discs with noise) for benchmarks that need no data."""
    from ..training.data import Frame

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        labels = synthetic_frame(rng, size, 40).astype(np.int32)
        image = (labels > 0) + rng.normal(0, 0.3, labels.shape)
        frames.append(Frame(f"synthetic{i}", image.astype(np.float32), labels))
    return frames


def bench_post_one(size: int, split: bool, weights: Path) -> dict:
    """Post-processing alone (probability → labels) on a ``size``×``size`` map: the model's
    probability for the bundled 01 image, tiled. ``split`` on or off; seconds and the peak
    resident memory it adds (run each case in a fresh process for a clean peak)."""
    import dataclasses
    import resource

    import tifffile

    from ..inference.instances import probability_to_labels
    from ..inference.segment import Predictor, SegmentOptions
    from .demo import SAMPLE

    predictor = Predictor(Path(weights), SegmentOptions(device="cpu"))
    p01 = predictor.probabilities(tifffile.imread(SAMPLE / "01" / "t000.tif"))[0]  # (512, 512)
    reps = -(-size // p01.shape[0])
    p = np.ascontiguousarray(np.tile(p01, (reps, reps))[:size, :size])
    post = dataclasses.replace(predictor.post, split=split)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    labels = probability_to_labels(p, post)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "split": split, "seconds": seconds, "peak_rss_mib": peak, "rss_before_mib": before,
            "objects": int(labels.max())}
