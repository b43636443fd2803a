"""The `gruunet` command line: parses arguments, checks paths, delegates to one module per command.

Heavy imports (torch) happen inside the commands so that `gruunet --help` is instant.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Callable, TypeVar

import typer
from rich.progress import TextColumn

from .errors import UserError

app = typer.Typer(
    name="gruunet",
    help="GRUU-Net cell segmentation for Cell Tracking Challenge microscopy sequences.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., object])


def user_errors(fn: F) -> F:
    """Turn a ``UserError`` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _not_yet(command: str) -> None:
    typer.echo(f"gruunet {command}: not yet implemented", err=True)
    raise typer.Exit(1)


@app.command()
@user_errors
def evaluate(
    res_dir: Annotated[Path, typer.Argument(help="Result folder with maskNNN.tif (e.g. 02_RES).")],
    gt_dir: Annotated[Path, typer.Argument(help="Reference folder: 02_GT (with SEG/, optional TRA/) or its SEG folder.")],
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON to this file.")] = None,
    frames: Annotated[bool, typer.Option("--frames/--no-frames", help="Show the per-frame table.")] = True,
    workers: Annotated[int, typer.Option(min=1, help="Threads reading and scoring frames.")] = 4,
) -> None:
    """Score a result against reference masks: SEG (official CTC), DET, OP_CSB, Dice, Hausdorff."""
    from rich.console import Console

    from . import evaluate as ev
    from .progress import progress_bar

    total = ev.count_frames(gt_dir)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("evaluating", total=total)
        report = ev.evaluate(res_dir, gt_dir, workers=workers, progress=lambda: bar.advance(task))
    console = Console()
    ev.print_report(report, console, per_frame=frames)
    if report.missing_frames:
        typer.echo(
            f"warning: {res_dir}: no result for reference frame(s) {report.missing_frames}; "
            "their objects score 0 (the official CTC tool rejects such a result)",
            err=True,
        )
    if json_path is not None:
        ev.write_json(report, json_path)
        console.print(f"wrote {json_path}")


@app.command()
@user_errors
def train() -> None:
    """Train GRUU-Net on a CTC sequence (not yet implemented)."""
    _not_yet("train")


@app.command()
@user_errors
def segment(
    source: Annotated[Path, typer.Argument(help="Sequence folder with tNNN.tif (e.g. 02/), or one tNNN.tif.")],
    out_dir: Annotated[Path, typer.Argument(help="Result folder for maskNNN.tif (e.g. 02_RES/).")],
    weights: Annotated[Path, typer.Option(help="Model file (weights/NAME or weights/NAME.safetensors).")],
    tile: Annotated[int, typer.Option(min=16, help="Tile side in pixels for sliding-window inference.")] = 512,
    tile_z: Annotated[int, typer.Option(min=1, help="Tile depth for 3D models.")] = 64,
    overlap: Annotated[int, typer.Option(min=0, help="Overlap between tiles in pixels (blended linearly).")] = 64,
    batch: Annotated[int, typer.Option(min=1, help="Tiles per forward pass (raise it on a GPU).")] = 4,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu, cuda or cuda:N.")] = "auto",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on GPU.")] = True,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: torch's choice).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo frames whose mask already exists.")] = False,
    threshold: Annotated[float | None, typer.Option(help="Foreground probability threshold (default: model file's).")] = None,
    min_size: Annotated[int | None, typer.Option(help="Drop objects smaller than this many pixels (default: model file's).")] = None,
    grow: Annotated[int | None, typer.Option(help="Pixels to grow labels back over the separating ring (default: model file's).")] = None,
    iterations: Annotated[Path | None, typer.Option(help="Write the 9 per-iteration GRU maps (paper Fig. 7) of the first frame here.")] = None,
    overlay: Annotated[Path | None, typer.Option(help="Write PNG overlays of mask contours on the image here.")] = None,
) -> None:
    """Segment every tNNN.tif into a CTC mask (uint16, 0 = background, one label per cell)."""
    from . import segment as seg
    from .progress import progress_bar

    if not source.exists():
        raise UserError("does not exist", source)
    post = seg.with_post_overrides(seg.read_post(weights), threshold=threshold, min_size=min_size, grow=grow)
    opts = seg.SegmentOptions(tile=tile, tile_z=tile_z, overlap=overlap, batch=batch, device=device, amp=amp,
                              threads=threads, overwrite=overwrite, post=post)
    total = len(seg.input_frames(source))
    with progress_bar(TextColumn("{task.fields[frame]}")) as bar:
        task = bar.add_task("segmenting", total=total, frame="")
        written = seg.run(source, out_dir, weights, opts, iterations, overlay,
                          progress=lambda name: bar.update(task, advance=1, frame=name))
    typer.echo(f"wrote {len(written)} mask(s) to {out_dir}")


bench_app = typer.Typer(help="Speed benchmarks, measured side by side in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("evaluate")
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


@bench_app.command("model")
@user_errors
def bench_model(
    size: Annotated[int, typer.Option(min=16, help="Crop side in pixels.")] = 256,
    batch: Annotated[int, typer.Option(min=1, help="Crops per batch.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repetitions; the best counts.")] = 3,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
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


def main() -> None:
    """Console-script entry point."""
    app()
