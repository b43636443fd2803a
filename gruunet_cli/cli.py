"""The `gruunet` command line: parses arguments, checks paths, delegates to one module per command.

Heavy imports (torch) happen inside the commands so that `gruunet --help` is instant.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer

from .config import Arch, LossName, LRSchedule, default_model
from .errors import UserError, user_errors
from .options import (ChooseTTA, ClipGrad, Command, Device, ObjectIntensity, checked_range, parse_diameter, parse_outline,
                      show_version)
from .tools import bench_cli, ensemble_cli


app = typer.Typer(
    name="gruunet",
    help="GRUU-Net cell segmentation for Cell Tracking Challenge microscopy sequences.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """GRUU-Net cell segmentation for Cell Tracking Challenge microscopy sequences."""

@app.command(cls=Command)
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

    from .evaluation import evaluate as ev
    from .files.atomic import writable_dir
    from .progress import Progress

    if json_path is not None:
        writable_dir(json_path.parent)  # before the frames are scored
    total = ev.count_frames(gt_dir)
    with Progress("evaluating", total, transient=True) as bar:
        report = ev.evaluate(res_dir, gt_dir, workers=workers, progress=lambda: bar.update(advance=1))
    console = Console()
    ev.print_report(report, console, per_frame=frames)
    if report.missing_frames:
        typer.echo(f"warning: {res_dir}: no result for reference frame(s) {report.missing_frames}; "
                   "their objects score 0 (the official CTC tool rejects such a result)", err=True)
    if json_path is not None:
        ev.write_json(report, json_path)
        console.print(f"wrote {json_path}")


@app.command(cls=Command)
@user_errors
def train(
    sources: Annotated[list[Path], typer.Argument(help="Training sources, any number: a CTC sequence followed by its GT (01/ 01_GT/; 01_GT beside 01/ is found), a StarDist folder (images/ + masks/) or a Cellpose folder (NAME.tif + NAME_masks.tif).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Model file to write (weights/NAME → NAME.safetensors, .json, logs).", rich_help_panel="Data")],
    st: Annotated[Path | None, typer.Option(help="Silver truth (01_ST/) adding frames the GT lacks (one CTC source only).", rich_help_panel="Data")] = None,
    val: Annotated[tuple[Path, Path] | None, typer.Option(help="Validation sequence and its GT (02/ 02_GT/); default: hold out --val-fraction of each source.", rich_help_panel="Data")] = None,
    val_fraction: Annotated[float, typer.Option(min=0.01, max=0.5, help="Share of each source's frames held out for validation (every 1/F-th; one frame: its last rows).", rich_help_panel="Data")] = 0.25,
    scale_to: Annotated[float | None, typer.Option(min=1.0, help="Resize each training image so its median cell diameter is this many px (generalist models; default: as is).", rich_help_panel="Data")] = None,
    ignore_unannotated: Annotated[bool, typer.Option("--ignore-unannotated/--no-ignore-unannotated", help="Partial CTC GT: leave cells with a TRA marker but no SEG label out of the loss (off: they count as background).", rich_help_panel="Data")] = True,
    ignore_spots: Annotated[bool, typer.Option("--ignore-spots/--no-ignore-spots", help="Leave unlabelled bright specks (point-like spots off every labelled object) out of the loss: many nuclei sets label only some of them (off: they count as background).", rich_help_panel="Data")] = False,
    model: Annotated[Arch, typer.Option(help="Network.", rich_help_panel="Network and loss")] = Arch.gruunet,
    loss: Annotated[LossName, typer.Option(help="nfl: normalized focal (eq. 14), fl: focal (eq. 9), wce: U-Net weighted CE.", rich_help_panel="Network and loss")] = LossName.nfl,
    dims: Annotated[int | None, typer.Option(min=2, max=3, help="2D or 3D network (default: that of the images; 2 for slice GT).", rich_help_panel="Network and loss")] = None,
    crop: Annotated[int | None, typer.Option(min=16, help="Crop side (default: about the largest object, rounded to 16, within 64..256).", rich_help_panel="Schedule")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Crops per step (paper: 2).", rich_help_panel="Schedule")] = 2,
    lr: Annotated[float | None, typer.Option(help="AMSGrad learning rate (default: the paper's 1e-3; 1e-4 with --init).", rich_help_panel="Schedule")] = None,
    lr_schedule: Annotated[LRSchedule, typer.Option(help="constant (the paper's) or cosine: from --lr down to 0 at the last iteration.", rich_help_panel="Schedule")] = LRSchedule.constant,
    iterations: Annotated[int, typer.Option(min=1, help="Training iterations (paper: ~10,000).", rich_help_panel="Schedule")] = 10_000,
    val_interval: Annotated[int, typer.Option(min=1, help="Validate every N iterations.", rich_help_panel="Schedule")] = 100,
    patience: Annotated[int, typer.Option(min=1, help="Stop after N validations without a better SEG.", rich_help_panel="Schedule")] = 10,
    background_crops: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of crops centred anywhere in the frame instead of on a cell (paper: 0; partial GT frames otherwise never show far background).", rich_help_panel="Schedule")] = 0.0,
    clean_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Last fraction of iterations on un-augmented crops.", rich_help_panel="Schedule")] = 0.1,
    ema: Annotated[float, typer.Option(min=0.0, max=0.99999, help="Validate and save a moving average of the weights with this decay, e.g. 0.999 (0: the last step's weights, as the paper).", rich_help_panel="Schedule")] = 0.0,
    clip_grad: ClipGrad = 0.0,
    workers: Annotated[int, typer.Option(min=0, help="Augmentation worker processes (0: inline).", rich_help_panel="Runtime")] = 2,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for the network (default: the cores not kept busy by other processes).", rich_help_panel="Runtime")] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights and sampling.", rich_help_panel="Schedule")] = 0,
    device: Device = "auto",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on GPU (CPU steps stay fp32; validation as segment).", rich_help_panel="Runtime")] = True,
    checkpoint_interval: Annotated[int, typer.Option(min=1, help="Write a checkpoint every N iterations.", rich_help_panel="Schedule")] = 500,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT's checkpoint (same options; a larger --iterations extends the run).", rich_help_panel="Schedule")] = False,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Augment: random flips.", rich_help_panel="Augmentation")] = True,
    rotate90: Annotated[bool, typer.Option("--rotate90/--no-rotate90", help="Augment: 90° rotations.", rich_help_panel="Augmentation")] = True,
    rotate: Annotated[bool, typer.Option("--rotate/--no-rotate", help="Augment: arbitrary rotations.", rich_help_panel="Augmentation")] = True,
    zoom: Annotated[bool, typer.Option("--zoom/--no-zoom", help="Augment: zoom (see --zoom-range).", rich_help_panel="Augmentation")] = True,
    zoom_range: Annotated[tuple[float, float] | None, typer.Option(help="Zoom factors drawn log-uniformly from LO..HI (default: 0.8 1.25).", show_default=False, rich_help_panel="Augmentation")] = None,
    intensity: Annotated[bool, typer.Option("--intensity/--no-intensity", help="Augment: brightness and contrast.", rich_help_panel="Augmentation")] = True,
    elastic: Annotated[bool, typer.Option("--elastic/--no-elastic", help="Augment: grid elastic deformation.", rich_help_panel="Augmentation")] = True,
    blur: Annotated[float | None, typer.Option(min=0.0, help="Augment: Gaussian blur, sigma drawn from 0..BLUR px (default 0: off).", show_default=False, rich_help_panel="Augmentation")] = None,
    object_intensity: ObjectIntensity = None,
    init: Annotated[Path | None, typer.Option(help="Start from this model file's weights (fine-tuning); its architecture is used.", rich_help_panel="Network and loss")] = None,
    unet_base: Annotated[int, typer.Option(min=1, help="U-Net first-level channels.", rich_help_panel="Network and loss")] = 64,
    choose_outline: Annotated[bool, typer.Option("--choose-outline/--no-choose-outline", help="Afterwards, on the validation frames: measure how the model sizes cells larger than its own (for --diameter auto), choose the probability level objects' outlines follow and the split depth by SEG, and whether to rejoin large cells cut into pieces, segmented as `segment` does by default; all are written into the model file.", rich_help_panel="Schedule")] = True,
    choose_tta: ChooseTTA = False,
) -> None:
    """Train GRUU-Net (or the U-Net baseline) on CTC sequences and image/mask folders, as in the paper's Section 2.3."""
    from .files.sources import parse
    from .progress import Progress
    from .training import train as tr
    from .training.augment import AugmentConfig

    for path in (*sources, st, *(val or ())):
        if path is not None and not path.exists():
            raise UserError("does not exist", path)
    src = tr.TrainData(tuple(parse(sources, st)), tr.TrainData.ctc(*val).sources if val else ())
    dims = dims or tr.guess_dims(list(src.sources))
    aug = AugmentConfig.switched(flip, rotate90, rotate, zoom, checked_range("--zoom-range", zoom_range), intensity, elastic, blur, checked_range("--object-intensity", object_intensity))
    model_cfg = default_model(model, dims)
    if model == Arch.unet:
        model_cfg = dataclasses.replace(model_cfg, unet_base=unet_base)
    if init is not None:
        model_cfg = tr.init_model_config(init, model, dims)
    cfg = tr.TrainConfig(model=model_cfg, loss=loss, crop=crop, batch=batch, lr=lr or tr.default_lr(init is not None), lr_schedule=lr_schedule, iterations=iterations, val_interval=val_interval,
        patience=patience, clean_fraction=clean_fraction, background_crops=background_crops, workers=workers, seed=seed, device=device, amp=amp,
        checkpoint_interval=checkpoint_interval, augment=aug, init=None if init is None else str(init),
        val_fraction=val_fraction, scale_to=scale_to, ignore_unannotated=ignore_unannotated, ignore_spots=ignore_spots, threads=threads, ema=ema, clip_grad=clip_grad)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    with Progress("training", iterations, disable=not main_rank, loss="loss {:.4f}", wait="data wait {:.1%}") as bar:
        result = tr.run(cfg, src, out, resume=resume,
                        progress=lambda i, st_: bar.update(completed=i, loss=st_["loss"], wait=st_["wait"]))
    how = "interrupted, checkpoint saved" if result.interrupted else "stopped early" if result.stopped_early else "done"
    if main_rank:
        typer.echo(f"{how} after {result.iterations} iterations; best validation SEG {result.best_seg:.4f} "
                   f"at iteration {result.best_iteration}; model: {result.model_path}")
    if result.interrupted:
        raise typer.Exit(128 + result.signal)  # 130 after Ctrl-C, 143 after SIGTERM
    if main_rank and choose_outline:
        from .inference.segment import SegmentOptions
        from .tools import sizing

        typer.echo("\n".join(sizing.after_training(result.model_path, SegmentOptions(device=device, threads=threads), choose_tta)))


@app.command(cls=Command)
@user_errors
def segment(
    source: Annotated[Path, typer.Argument(help="A CTC sequence folder (02/ with tNNN.tif), one image file (.tif, .png, .jpg), or a folder of images.", show_default=False)],
    out_dir: Annotated[Path, typer.Argument(help="Result folder: maskNNN.tif for CTC frames (e.g. 02_RES/), NAME_masks.tif for other images.", show_default=False)],
    weights: Annotated[Path | None, typer.Option(help="Model file (weights/NAME, NAME.safetensors, NAME.json or a folder with one model; default: the best shipped model).")] = None,
    tile: Annotated[int | None, typer.Option(min=16, help="Tile side in pixels for sliding-window inference (default: the whole image when it fits 1.5 megapixels, else the fewest tiles).")] = None,
    tile_z: Annotated[int, typer.Option(min=1, help="Tile depth for 3D models.")] = 64,
    overlap: Annotated[int, typer.Option(min=0, help="Overlap between tiles in pixels (blended linearly).")] = 64,
    batch: Annotated[int | None, typer.Option(min=1, help="Tiles per forward pass (default: 1 on CPU, 4 on GPU).")] = None,
    device: Device = "auto",
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision: on GPU, and bf16 on a CPU that has it natively.")] = True,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: the cores not kept busy by other processes).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo frames whose mask already exists.")] = False,
    threshold: Annotated[float | None, typer.Option(help="Foreground probability threshold (default: model file's).")] = None,
    min_size: Annotated[int | None, typer.Option(help="Drop objects smaller than this many pixels (default: model file's).")] = None,
    grow: Annotated[int | None, typer.Option(help="Pixels to grow labels back over the separating ring (default: model file's).")] = None,
    split: Annotated[bool | None, typer.Option("--split/--no-split", help="Cut joined cells apart at distance-map necks (default: model file's).")] = None,
    split_h: Annotated[float | None, typer.Option(min=0.0, help="Pixels each distance peak must rise above the neck to be cut (default: model file's).")] = None,
    outline: Annotated[str | None, typer.Option(help="Probability level the objects' outlines follow on the image's own grid, or 'off' for the threshold's at the network's scale; for every image, enlarged or not, and for every object alike (default: model file's).")] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Average the probability over the 8 flips and 90° rotations of each image: 8x the time (default: model file's).")] = None,
    fill_holes: Annotated[bool | None, typer.Option("--fill-holes/--keep-holes", help="Give each object the background it encloses, such as a nucleus' dark nucleoli (default: model file's; on unless it says otherwise).")] = None,
    rejoin: Annotated[bool | None, typer.Option("--rejoin/--no-rejoin", help="With --diameter auto, rejoin large cells cut into pieces that a more shrunk probe finds whole (default: model file's).")] = None,
    diameter: Annotated[str, typer.Option(help="Cell diameter in pixels, 'auto' (estimated) or 'off': resize images so cells have the training size.")] = "auto",
    iterations: Annotated[Path | None, typer.Option(help="Write the 9 per-iteration GRU maps (paper Fig. 7) of the first frame here.")] = None,
    overlay: Annotated[Path | None, typer.Option(help="Write PNG overlays of mask contours on the image here.")] = None,
    channel: Annotated[int | None, typer.Option(min=0, help="Channel to segment in multi-channel images (default: RGB is averaged to grey; other multi-channel images must choose).")] = None,
) -> None:
    """Segment a CTC sequence, image files or a folder of images into masks (uint16, 0 = background, one label per cell)."""
    from .inference import segment as seg
    from .progress import Progress
    from .tools.demo import WEIGHTS

    weights = weights or WEIGHTS
    if not source.exists():
        raise UserError("does not exist", source)
    given = dict(threshold=threshold, min_size=min_size, grow=grow, split=split, split_h=split_h, tta=tta, fill_holes=fill_holes, rejoin=rejoin)
    overrides = {k: v for k, v in given.items() if v is not None} | ({} if outline is None else {"outline": parse_outline(outline), "outline_enlarged": None, "outline_peak": False})
    opts = seg.SegmentOptions(tile=tile, tile_z=tile_z, overlap=overlap, batch=batch, device=device, amp=amp,
                              threads=threads, overwrite=overwrite, diameter=parse_diameter(diameter), channel=channel,
                              post_overrides=overrides)
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    with Progress("segmenting", 0, frame="{}", disable=not main_rank) as bar:
        written = seg.run(source, out_dir, weights, opts, iterations, overlay,
                          on_start=lambda n: setattr(bar, "total", n),
                          progress=lambda name: bar.update(advance=1, frame=name),
                          on_note=lambda text: bar.log(f"note: {text}"),
                          on_scale=lambda name, sc: bar.log(seg.describe_scale(name, sc)))
    if main_rank:
        typer.echo(f"wrote {len(written)} mask(s) to {out_dir}")


@app.command(cls=Command)
@user_errors
def demo(
    out: Annotated[Path | None, typer.Option(help="Folder for the results (default: a new temporary folder).")] = None,
    sample: Annotated[Path | None, typer.Option(help="A CTC dataset folder with 02/ and 02_GT/ (default: the bundled sample).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Model file (default: the bundled GRUU-Net).")] = None,
    device: Device = "auto",
    diameter: Annotated[str, typer.Option(help="As for segment: cell diameter in pixels, 'auto' or 'off'.")] = "auto",
) -> None:
    """Segment the bundled sample's unseen image with the bundled weights and score it."""
    import tempfile

    from rich.console import Console

    from .evaluation import evaluate as ev
    from .inference.segment import SegmentOptions
    from .tools import demo as dm

    out = out or Path(tempfile.mkdtemp(prefix="gruunet-demo-"))
    weights = weights or dm.WEIGHTS
    sample = sample or dm.SAMPLE
    from .files.atomic import writable_dir

    writable_dir(out)  # before any message or work
    console = Console(stderr=True)
    console.print(f"segmenting {sample / '02'} with {weights} (never trained on this image) ...")
    report, res, overlay = dm.run(out, sample, weights, opts=SegmentOptions(device=device, diameter=parse_diameter(diameter)),
                                  log=lambda text: console.print(text, markup=False, highlight=False))
    console.print(f"scoring against {sample / '02_GT'} ...")
    ev.print_report(report, Console(), per_frame=False)
    ev.write_json(report, out / "scores.json")
    typer.echo(f"SEG {report.seg:.3f}  DET {report.det:.3f}  Dice {report.dice:.3f}  on the unseen image "
               f"({report.objects} nuclei)")
    for line in dm.EXPLAIN:
        typer.echo(f"  {line}")
    typer.echo(f"masks: {res}\noverlay: {overlay}\nscores: {out / 'scores.json'}")


@app.command(cls=Command)
@user_errors
def reproduce(
    dataset: Annotated[Path, typer.Argument(help="CTC dataset folder holding 01/, 01_GT/, 02/, 02_GT/.")],
    out: Annotated[Path, typer.Option(help="Folder for models, results and table.md / table.csv.")] = Path("reproduce"),
    iterations: Annotated[int, typer.Option(min=1, help="Training iterations per model (paper: ~10,000).")] = 10_000,
    ablation: Annotated[bool, typer.Option("--ablation", help="Also the loss variants (focal, weighted CE, U-Net with NFL).")] = False,
    crop: Annotated[int | None, typer.Option(min=16, help="Crop side (default: automatic).")] = None,
    val_interval: Annotated[int, typer.Option(min=1, help="Validate every N iterations.")] = 100,
    workers: Annotated[int, typer.Option(min=0, help="Augmentation worker processes.")] = 2,
    unet_base: Annotated[int, typer.Option(min=1, help="U-Net first-level channels.")] = 64,
    device: Device = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue each model from its checkpoint under OUT (runs across sessions).")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run just this model, e.g. gruu-net-01 or u-net-02 (repeatable).")] = None,
    patience: Annotated[int, typer.Option(min=1, help="Stop after N validations without a better SEG.")] = 10,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: the free cores).")] = None,
    scale_to: Annotated[float | None, typer.Option(min=1.0, help="Train at a scale where cells are this many px (cheaper on a CPU); the test video is segmented at the same scale, its cells assumed the size of the training video's.")] = None,
    background_crops: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of crops centred anywhere in the frame (as for train).")] = 0.0,
    object_intensity: ObjectIntensity = None,
    lr_schedule: Annotated[LRSchedule, typer.Option(help="constant (the paper's) or cosine, as for train.")] = LRSchedule.constant,
    ema: Annotated[float, typer.Option(min=0.0, max=0.99999, help="Moving average of the weights, as for train (0: off).")] = 0.0,
    clip_grad: ClipGrad = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for weights and sampling, as for train.")] = 0,
    lr: Annotated[float, typer.Option(min=1e-8, help="AMSGrad learning rate (the paper's 1e-3), as for train.")] = 1e-3,
    choose_min_size: Annotated[bool, typer.Option("--choose-min-size/--no-choose-min-size", help="Choose the smallest object kept by DET against TRA on the training video's frames without SEG reference, and write it into the model file.")] = True,
    choose_outline: Annotated[bool, typer.Option("--choose-outline/--no-choose-outline", help="Choose the probability level objects' outlines follow by SEG on the training video's validation frames, and write it into the model file.")] = True,
    choose_tta: ChooseTTA = False,
) -> None:
    """The paper's CTC protocol: train on one video, test on the other, both ways, GRUU-Net vs U-Net."""
    from .config import ModelConfig
    from .inference.segment import SegmentOptions
    from .tools import reproduce as rp
    from .training import train as tr
    from .training.augment import AugmentConfig

    if not dataset.is_dir():
        raise UserError("folder does not exist", dataset)
    checked_range("--object-intensity", object_intensity)
    first = rp.sequences(dataset)[0]
    dims = tr.guess_dims(list(tr.TrainData.ctc(dataset / first, dataset / f"{first}_GT").sources))
    base = tr.TrainConfig(model=ModelConfig(dims=dims, unet_base=unet_base), iterations=iterations, crop=crop,
                          val_interval=val_interval, workers=workers, device=device, patience=patience, threads=threads, lr_schedule=lr_schedule, ema=ema, clip_grad=clip_grad, seed=seed, lr=lr,
                          scale_to=scale_to, background_crops=background_crops, augment=AugmentConfig.switched(object_intensity=object_intensity))
    rp.run(dataset, out, base, ablation, SegmentOptions(device=device, threads=threads), log=typer.echo, resume=resume,
           only=tuple(only or ()), choose_min_size=choose_min_size, choose_outline=choose_outline, choose_tta=choose_tta)
    typer.echo((out / "table.md").read_text())


@app.command("ctc-scripts", cls=Command)
@user_errors
def ctc_scripts(
    mapping: Annotated[list[str], typer.Argument(help="DATASET=WEIGHTS pairs, e.g. Fluo-N2DH-GOWT1=weights/gowt1.")],
    out: Annotated[Path, typer.Option(help="The submission's SW/ folder.")] = Path("SW"),
) -> None:
    """Write CTC submission scripts (SW/<DATASET>-01.sh, -02.sh) and copy the weights into SW/weights/."""
    from .tools import ctc_scripts as cs

    for path in cs.write_scripts(cs.parse_mapping(mapping), out):
        typer.echo(f"wrote {path}")


app.command("ensemble", cls=Command)(ensemble_cli.ensemble)
app.add_typer(bench_cli.bench_app, name="bench")


def main() -> None:
    """Console-script entry point."""
    app()
