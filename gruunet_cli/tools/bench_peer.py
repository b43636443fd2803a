"""`gruunet bench peer`: gruunet against Cellpose's 2D network on the same images, threads and
device, interleaved in one process (never asserted in tests).

Cellpose (Stringer et al. 2021, the `cellpose` package, version 3: the CPnet of its `nuclei` and
`cyto3` models) is built without its weights, which cannot be downloaded here; its speed does not
depend on them. Timed: its `eval` up to the flows (`compute_masks=False`: normalisation, resizing
to its 17 px nuclei diameter, its 224² tiles in batches of 8, resampling back), because the
mask step of an untrained network follows random flows and would time nothing real. gruunet is
timed for the whole `segment` of the image (network and post-processing), so the ratio counts
more work on gruunet's side than on Cellpose's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from ..inference import scale, segment
from ..inference.runtime import precision
from . import bench_stages

CELLPOSE_NUCLEI_DIAMETER = 17.0  # Cellpose's `nuclei` model resizes objects to this diameter


def cellpose_version() -> str | None:
    """The installed Cellpose version, None when it is not installed."""
    try:
        from importlib.metadata import version

        return version("cellpose")
    except Exception:
        return None


def sample_images(sizes: list[int]) -> list[tuple[str, np.ndarray, float]]:
    """(name, image, median object diameter) for each size: the bundled StarDist 02 image at
    256² as it is, other sizes the bundled 01 image tiled to ``size``²; the diameter is that of
    the image's own ground truth (02_GT or 01_GT)."""
    from .demo import SAMPLE

    def diameter(seq: str) -> float:
        return float(scale.object_diameter([tifffile.imread(SAMPLE / f"{seq}_GT" / "SEG" / "man_seg000.tif")]) or 0.0)

    out = []
    for size in sizes:
        if size == 256:
            out.append(("StarDist 02 (256²)", tifffile.imread(SAMPLE / "02" / "t000.tif"), diameter("02")))
        else:
            out.append((f"01 tiled ({size}²)", bench_stages.tiled_sample(size), diameter("01")))
    return out


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_peer(sizes: list[int], weights: Path, threads: int, device: str = "cpu", repeats: int = 2,
               amp: bool = True) -> list[dict]:
    """Seconds per image, best of ``repeats`` after a warm-up: gruunet `segment` with
    ``--diameter auto`` and with the true diameter given (``amp`` as `segment --amp`; where that
    is not fp32, the given-diameter run in fp32 too), and Cellpose's network (fp32, its CPU default)
    given the same diameter, all interleaved per image."""
    from cellpose import models  # optional: pip install 'gruunet[bench]'

    torch.set_num_threads(threads)
    options = dict(device=device, threads=threads, amp=amp)
    auto = segment.Predictor(weights, segment.SegmentOptions(diameter="auto", **options))
    cellpose = models.CellposeModel(gpu=device.startswith("cuda"), pretrained_model=False,
                                    diam_mean=CELLPOSE_NUCLEI_DIAMETER)
    mixed = precision(auto.device, amp) != "fp32"
    rows = []
    for name, image, diameter in sample_images(sizes):
        given = segment.Predictor(weights, segment.SegmentOptions(diameter=diameter, **options))
        given32 = segment.Predictor(weights, segment.SegmentOptions(diameter=diameter, **{**options, "amp": False}))
        runs = {
            "gruunet auto": lambda: auto.labels(image),
            "gruunet given": lambda: given.labels(image),
            **({"gruunet given fp32": lambda: given32.labels(image)} if mixed else {}),
            "cellpose": lambda: cellpose.eval(image, diameter=diameter, channels=[0, 0], compute_masks=False),
        }
        for fn in runs.values():  # warm-up
            fn()
        times = {k: _best(fn, repeats) for k, fn in runs.items()}
        rows.append({"image": name, "pixels": int(image.size), "diameter": diameter, "threads": threads,
                     "precision": precision(auto.device, amp),
                     **{f"{k} s": v for k, v in times.items()},
                     "ratio auto": times["gruunet auto"] / times["cellpose"],
                     "ratio given": times["gruunet given"] / times["cellpose"]})
    return rows
