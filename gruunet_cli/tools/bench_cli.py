"""`gruunet bench …`: speed benchmarks, measured side by side in one run (never asserted in tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError, user_errors
from ..options import Command, Device

bench_app = typer.Typer(help="Speed benchmarks, measured side by side in one run.", no_args_is_help=True,
                        rich_markup_mode=None)


@bench_app.command("evaluate", cls=Command)
@user_errors
def bench_evaluate(
    frames: Annotated[int, typer.Option(min=1, help="Frames in the synthetic sequence.")] = 92,
    size: Annotated[int, typer.Option(min=64, help="Frame side in pixels.")] = 1024,
    objects: Annotated[int, typer.Option(min=1, help="Objects per frame.")] = 150,
    repeats: Annotated[int, typer.Option(min=1, help="Alternating repetitions; the best time counts.")] = 1,
) -> None:
    """Time `evaluate` against py-ctcmetrics (when installed) on a synthetic sequence."""
    import tempfile

    from . import bench

    with tempfile.TemporaryDirectory() as tmp:
        out = bench.bench_evaluate(Path(tmp), frames=frames, size=size, objects=objects, repeats=repeats)
    for key, value in out.items():
        typer.echo(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")


@bench_app.command("model", cls=Command)
@user_errors
def bench_model(
    size: Annotated[int, typer.Option(min=16, help="Crop side in pixels.")] = 256,
    batch: Annotated[int, typer.Option(min=1, help="Crops per batch.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repetitions; the best counts.")] = 3,
    device: Device = "cpu",
    unet_base: Annotated[int, typer.Option(min=1, help="U-Net first-level channels (Ronneberger: 64).")] = 64,
) -> None:
    """Parameters and forward / forward+backward seconds per crop: GRUU-Net vs U-Net, side by side."""
    from rich.console import Console
    from rich.table import Table

    from . import bench

    rows = bench.bench_model(size=size, batch=batch, repeats=repeats, device=device, unet_base=unet_base)
    table = Table(title=f"{size}×{size} crops, batch {batch}, {device}")
    for col in ("model", "parameters", "forward s/crop", "forward+backward s/crop"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["model"], f"{r['parameters']:,}", f"{r['fwd_s_per_crop']:.4f}", f"{r['fwd_bwd_s_per_crop']:.4f}")
    Console().print(table)


@bench_app.command("train", cls=Command)
@user_errors
def bench_train(
    images: Annotated[Path | None, typer.Option(help="Sequence folder (default: synthetic touching nuclei).")] = None,
    gt: Annotated[Path | None, typer.Option(help="Its GT folder.")] = None,
    crop: Annotated[int, typer.Option(min=16, help="Crop side.")] = 96,
    batch: Annotated[int, typer.Option(min=1, help="Crops per step.")] = 2,
    workers: Annotated[list[int], typer.Option("--workers", help="Worker counts to compare.")] = [2, 4],
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per measurement.")] = 30,
    device: Device = "auto",
) -> None:
    """Prefetcher crops/s vs training-step crops/s, and the fraction of step time spent waiting for data."""
    from rich.console import Console
    from rich.table import Table

    from ..config import NormConfig
    from ..inference.runtime import resolve_device
    from ..training import data
    from . import bench

    dev = str(resolve_device(device))
    if images is not None:
        if gt is None:
            raise UserError("--images needs --gt")
        frames = data.load_frames(images, gt, 2, NormConfig())
    else:
        frames = bench.synthetic_frames()
    rows = bench.bench_train(frames, crop, batch, tuple(workers), steps, dev)
    table = Table(title=f"training input pipeline: {crop}×{crop} crops, batch {batch}, {dev}")
    for col in ("workers", "prefetcher crops/s", "train step crops/s", "loop crops/s", "data wait"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["workers"]), f"{r['produced_crops_per_s']:.1f}", f"{r['consumed_crops_per_s']:.1f}",
                      f"{r['loop_crops_per_s']:.1f}", f"{r['data_wait_fraction']:.1%}")
    Console().print(table)


@bench_app.command("denormals", cls=Command)
@user_errors
def bench_denormals(
    weights: Annotated[Path | None, typer.Option(help="Model file (default: the bundled GRUU-Net).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repetitions; the best counts.")] = 3,
    flush: Annotated[bool, typer.Option("--flush/--no-flush", help="With --inline: the case to measure.")] = True,
    inline: Annotated[bool, typer.Option("--inline", help="Measure one case in this process.")] = False,
) -> None:
    """CPU seconds of a trained model with denormal floats kept vs flushed to zero (gruunet flushes)."""
    import json

    from . import bench
    from .demo import WEIGHTS

    weights = weights or WEIGHTS
    if inline:
        typer.echo(json.dumps(bench.bench_denormals_one(weights, flush, repeats)))
        return
    runs = {case: _inline_run(["denormals", case, "--weights", str(weights), "--repeats", str(repeats)])
            for case in ("--no-flush", "--flush")}
    kept, flushed = runs["--no-flush"], runs["--flush"]
    for key, name in (("forward_s", "forward"), ("train_step_s", "training step")):
        typer.echo(f"{name}: {kept[key]:.3f} s with denormals, {flushed[key]:.3f} s flushed, "
                   f"{kept[key] / flushed[key]:.2f}x ({flushed['threads']} threads, two 96x96 crops)")


def _inline_run(args: list[str]) -> dict:
    """``gruunet bench ARGS --inline`` in a fresh process (a clean memory peak); its JSON line."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "gruunet_cli", "bench", *args, "--inline"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])


@bench_app.command("segment", cls=Command)
@user_errors
def bench_segment(
    sizes: Annotated[list[int], typer.Option("--size", help="Image side(s) in pixels; each runs in a fresh process.")] = [512, 2048],
    weights: Annotated[Path | None, typer.Option(help="Model file (default: a random GRUU-Net; speed is the same).")] = None,
    tile: Annotated[int | None, typer.Option(min=16, help="Tile side (default: as `segment` plans it).")] = None,
    device: Device = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: the free cores).")] = None,
    inline: Annotated[bool, typer.Option("--inline", help="Measure in this process (one size).")] = False,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="As for segment: mixed precision (bf16 on a CPU that has it).")] = True,
) -> None:
    """Seconds per megapixel and peak memory of `segment` for several image sizes."""
    import json

    from . import bench

    if inline:
        for size in sizes:
            typer.echo(json.dumps(bench.bench_segment_one(size, weights, tile, device, threads, amp)))
        return
    for size in sizes:
        r = _inline_run(["segment", "--size", str(size), "--device", device] + (["--tile", str(tile)] if tile else [])
                        + (["--weights", str(weights)] if weights else []) + (["--threads", str(threads)] if threads else [])
                        + ([] if amp else ["--no-amp"]))
        typer.echo(f"{r['size']}x{r['size']} ({r['precision']}): {r['seconds']:.1f} s, {r['s_per_mpx']:.2f} s/Mpx, "
                   f"peak RSS {r['peak_rss_mib']:.0f} MiB (before: {r['rss_before_mib']:.0f} MiB), {r['objects']} objects")


@bench_app.command("post", cls=Command)
@user_errors
def bench_post(
    sizes: Annotated[list[int], typer.Option("--size", help="Map side(s) in pixels; each case runs in a fresh process.")] = [2048],
    weights: Annotated[Path | None, typer.Option(help="Model file for the probability map (default: the bundled GRUU-Net).")] = None,
    split: Annotated[bool, typer.Option("--split/--no-split", help="With --inline: the case to measure.")] = True,
    inline: Annotated[bool, typer.Option("--inline", help="Measure one case in this process.")] = False,
) -> None:
    """Post-processing alone, plain components against the distance split, on tiled real probabilities."""
    import json

    from . import bench
    from .demo import WEIGHTS

    weights = weights or WEIGHTS
    if inline:
        for size in sizes:
            typer.echo(json.dumps(bench.bench_post_one(size, split, weights)))
        return
    for size in sizes:
        for case in ("--no-split", "--split"):
            r = _inline_run(["post", "--size", str(size), case, "--weights", str(weights)])
            typer.echo(f"{size}x{size} {'split' if r['split'] else 'components'}: {r['seconds']:.1f} s, peak RSS "
                       f"{r['peak_rss_mib']:.0f} MiB (before: {r['rss_before_mib']:.0f} MiB), {r['objects']} objects")


@bench_app.command("stages", cls=Command)
@user_errors
def bench_stages(
    sizes: Annotated[list[int], typer.Option("--size", help="Image side(s) in pixels (the bundled 01 image, tiled).")] = [512, 2048],
    weights: Annotated[Path | None, typer.Option(help="Model file (default: the bundled GRUU-Net).")] = None,
    diameter: Annotated[str, typer.Option(help="As for segment: auto, off or pixels.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: the free cores).")] = None,
    one_pass: Annotated[bool, typer.Option("--one-pass", help="Also time the final network pass without row bands, and with W x upsampled.")] = False,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="As for segment: mixed precision (bf16 on a CPU that has it).")] = True,
) -> None:
    """Where `segment`'s time goes (read, size estimate, network, post-processing, write) and the
    network's GFLOP/s against a plain 3x3 convolution on this machine, in one run."""
    from .bench_stages import stages
    from .demo import WEIGHTS

    d = None if diameter == "off" else diameter if diameter == "auto" else float(diameter)
    for size in sizes:
        r = stages(size, weights or WEIGHTS, d, threads, one_pass, amp)
        parts = "  ".join(f"{k[:-2]} {r[k]:.2f}s ({r[k] / r['wall_s']:.0%})"
                          for k in ("read_s", "estimate_s", "network_s", "post_s", "write_s"))
        typer.echo(f"{size}x{size}: {r['wall_s']:.1f} s, {r['wall_s'] / (size * size / 1e6):.1f} s/Mpx, factor "
                   f"{r['factor']:.2f}; {parts}; network {r['network_gflops']:.1f} GFLOP/s = "
                   f"{r['conv_rate_ratio']:.0%} of a plain 3x3 conv's {r['plain_conv_gflops']:.1f} ({r['precision']}, "
                   f"{r['threads']} threads; the plain conv in fp32: {r['plain_conv_fp32_gflops']:.1f})")
        typer.echo(f"  final pass again (warm, as the next frame): {r['warm_network_s']:.2f} s, "
                   f"{r['warm_network_gflops']:.1f} GFLOP/s = {r['warm_conv_rate_ratio']:.0%} of the plain conv "
                   f"(the network's {r['flops_per_pixel'] / 1e6:.2f} MFLOP/px; inference executes "
                   f"{r['executed_flops_per_pixel'] / 1e6:.2f}: W x at the dense unit's scale)")
        if one_pass:
            typer.echo(f"  final pass again: without row bands {r['one_pass_network_s']:.2f} s, with them "
                       f"{r['banded_network_s']:.2f} s ({r['one_pass_network_s'] / r['banded_network_s']:.2f}x); "
                       f"W x on the upsampled input {r['upsampled_wx_network_s']:.2f} s "
                       f"({r['upsampled_wx_network_s'] / r['banded_network_s']:.2f}x)")


@bench_app.command("peer", cls=Command)
@user_errors
def bench_peer(
    sizes: Annotated[list[int], typer.Option("--size", help="Image side(s): 256 is the bundled StarDist 02 image, others the bundled 01 image tiled.")] = [256, 512, 2048],
    weights: Annotated[Path | None, typer.Option(help="Model file (default: the bundled GRUU-Net).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for both.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repetitions after a warm-up; the best counts.")] = 2,
    device: Device = "cpu",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="As for segment: mixed precision (bf16 on a CPU that has it).")] = True,
) -> None:
    """gruunet `segment` against Cellpose's 2D network (optional: pip install 'gruunet[bench]') on
    the same images, threads and device, interleaved in one run."""
    from .bench_peer import bench_peer as run, cellpose_version
    from .demo import WEIGHTS

    if cellpose_version() is None:
        raise UserError("Cellpose is not installed: pip install 'cellpose>=3.1,<4' (or '.[bench]')")
    typer.echo(f"cellpose {cellpose_version()}, torch {__import__('torch').__version__}, {threads} thread(s), {device}")
    for r in run(sizes, weights or WEIGHTS, threads, device, repeats, amp):
        fp32 = f" (fp32: {r['gruunet given fp32 s']:.2f} s)" if "gruunet given fp32 s" in r else ""
        typer.echo(f"{r['image']}: diameter {r['diameter']:.1f} px; gruunet ({r['precision']}) auto {r['gruunet auto s']:.2f} s, "
                   f"given {r['gruunet given s']:.2f} s{fp32}; cellpose network (fp32) {r['cellpose s']:.2f} s; "
                   f"ratio gruunet/cellpose {r['ratio auto']:.2f} (auto), {r['ratio given']:.2f} (given)")
