"""`gruunet bench stages`: where `segment`'s time goes, and how fast the network runs against the
machine's own plain 3×3 convolution, measured in one process, side by side (never asserted)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from ..files import ctc, images
from ..inference import segment
from ..inference.runtime import autocast, precision


def plain_conv_gflops(channels: int = 64, side: int = 256, repeats: int = 3, amp: bool = False) -> float:
    """GFLOP/s of one 3×3 convolution (``channels`` → ``channels``, ``side``² pixels, channels-last
    like the network's, inference mode, float32 or with ``amp`` the precision `segment` uses) on
    this machine with the current threads: the rate a convolutional network could at best reach
    here (2·C_in·C_out·9 FLOP per output pixel)."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(1, channels, side, side).to(memory_format=torch.channels_last)
    best = float("inf")
    with torch.inference_mode(), autocast(torch.device("cpu"), amp):
        for rep in range(repeats + 1):  # round 0 warms up
            t0 = time.perf_counter()
            conv(x)
            if rep:
                best = min(best, time.perf_counter() - t0)
    return 2 * channels * channels * 9 * side * side / best / 1e9


def network_flops_per_pixel(model: torch.nn.Module, side: int = 64, executed: bool = False) -> float:
    """FLOP per input pixel of one forward pass (torch's FLOP counter; convolutions and matmuls): the
    network's own (the GRU's W x on the upsampled input, as trained), or with ``executed`` what
    inference runs (W x at the dense unit's scale, `nets/upconv.py`). Both without the border rows
    `layers._ReflectRing` computes twice (at 64² they would add 6%)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..nets import layers, upconv

    counter = FlopCounterMode(display=False)
    saved = upconv.ENABLED, layers.REFLECT_RING
    upconv.ENABLED, layers.REFLECT_RING = executed and saved[0], False
    try:
        with torch.inference_mode(), counter:
            model(torch.zeros((1, 1) + (side,) * model.cfg.dims))
    finally:
        upconv.ENABLED, layers.REFLECT_RING = saved
    return counter.get_total_flops() / side**model.cfg.dims


def tiled_sample(size: int) -> np.ndarray:
    """The bundled 01 image (512² nuclei) repeated to ``size``² (real content for every stage)."""
    from .demo import SAMPLE

    base = tifffile.imread(SAMPLE / "01" / "t000.tif")
    reps = -(-size // base.shape[0])
    return np.ascontiguousarray(np.tile(base, (reps, reps))[:size, :size])


def stages(size: int, weights: Path, diameter: float | str | None = "auto", threads: int | None = None,
           one_pass: bool = False, amp: bool = True) -> dict:
    """Seconds of each stage of `segment` on one ``size``² image: read, size estimate (every pass
    but the final one: a window, probes, a first pass when the image is rescaled), network and
    post-processing of the final pass (the one whose labels are kept),
    write; plus achieved network GFLOP/s against `plain_conv_gflops` in the same process, for the
    first pass (a single image) and for the same pass again (warm, as every later frame); and with
    ``one_pass`` the final network pass again with the row bands off (`nets/bands.py`), and with them
    but the GRU's W x on the upsampled input (`nets/upconv.py` off). The GFLOP/s count the network's
    own FLOPs; ``executed_flops_per_pixel`` is what inference runs. ``amp``:
    as `segment --amp` (bf16 on a CPU with native bf16); the plain convolution runs in the same
    precision, and also in float32 (``plain_conv_fp32_gflops``)."""
    predictor = segment.Predictor(weights, segment.SegmentOptions(device="cpu", diameter=diameter, threads=threads, amp=amp))
    spent: list[tuple[str, float, tuple[int, ...]]] = []  # (stage, seconds, shape computed)
    inputs: dict[tuple[int, ...], np.ndarray] = {}  # the last input of each shape
    probabilities, labels_from = predictor.probabilities, predictor.labels_from

    def timed_probabilities(image: np.ndarray, iterations: bool = False,
                            norm: tuple[float, float] | None = None) -> np.ndarray:
        t0 = time.perf_counter()
        out = probabilities(image, iterations, norm)
        spent.append(("network", time.perf_counter() - t0, image.shape))
        inputs[image.shape] = image
        return out

    def timed_labels_from(p: np.ndarray, image: np.ndarray, f: float = 1.0) -> np.ndarray:
        t0 = time.perf_counter()
        out = labels_from(p, image, f)
        spent.append(("post", time.perf_counter() - t0, ()))
        return out

    predictor.probabilities, predictor.labels_from = timed_probabilities, timed_labels_from  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t000.tif"
        tifffile.imwrite(path, tiled_sample(size))
        t0 = time.perf_counter()
        image, _ = images.read_grey(path)
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        labels = predictor.labels(image)
        total_compute = time.perf_counter() - t0
        t0 = time.perf_counter()
        ctc.write_mask(Path(tmp) / "mask000.tif", labels)
        write_s = time.perf_counter() - t0
    # The final pass is the one whose labels are kept: at the factor used (probes at other scales,
    # or a window, may run after it or before it; they are the estimate).
    f = predictor.last_scale["factor"] or 1.0
    shape = (*image.shape[:-2], *(max(1, int(round(n * f))) for n in image.shape[-2:]))
    last_net = max(i for i, s in enumerate(spent) if s[0] == "network" and s[2] == shape)
    final_post = next(i for i in range(last_net, len(spent)) if spent[i][0] == "post")
    network_s, post_s = spent[last_net][1], spent[final_post][1]
    estimate_s = sum(s[1] for s in spent) - network_s - post_s
    pixels_final = int(np.prod(shape))
    flops = network_flops_per_pixel(predictor.model) * pixels_final
    achieved = flops / network_s / 1e9
    plain = plain_conv_gflops(amp=amp)
    plain32 = plain_conv_gflops() if precision(predictor.device, amp) != "fp32" else plain
    wall = read_s + total_compute + write_s
    # The final pass again, as the next frame of a sequence sees it: oneDNN has built its kernels
    # for these shapes, so this is the rate comparable with the (warmed-up) plain convolution.
    t0 = time.perf_counter()
    probabilities(inputs[shape])
    warm_s = time.perf_counter() - t0
    repeat = {"one_pass_network_s": float("nan"), "banded_network_s": float("nan"), "upsampled_wx_network_s": float("nan")}
    if one_pass:  # the final pass again without bands, then with them, then with W x on the upsampled input
        from ..nets import bands, upconv

        saved = bands.BAND_PIXELS
        try:
            for key, band, up in (("one_pass_network_s", 1 << 62, True), ("banded_network_s", saved, True),
                                  ("upsampled_wx_network_s", saved, False)):
                bands.BAND_PIXELS, upconv.ENABLED = band, up
                t0 = time.perf_counter()
                probabilities(inputs[shape])
                repeat[key] = time.perf_counter() - t0
        finally:
            bands.BAND_PIXELS, upconv.ENABLED = saved, True
    return {**repeat, "size": size, "threads": torch.get_num_threads(), "wall_s": wall, "read_s": read_s,
            "estimate_s": estimate_s, "network_s": network_s, "post_s": post_s, "write_s": write_s,
            "factor": predictor.last_scale["factor"], "pixels_final": pixels_final,
            "network_gflops": achieved, "plain_conv_gflops": plain, "plain_conv_fp32_gflops": plain32,
            "precision": precision(predictor.device, amp), "conv_rate_ratio": achieved / plain,
            "warm_network_s": warm_s, "warm_network_gflops": flops / warm_s / 1e9,
            "warm_conv_rate_ratio": flops / warm_s / 1e9 / plain,
            "executed_flops_per_pixel": network_flops_per_pixel(predictor.model, executed=True),
            "flops_per_pixel": flops / pixels_final}
