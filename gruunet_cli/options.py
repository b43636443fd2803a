"""Option types shared by the command-line modules (`cli.py`, `tools/bench_cli.py`)."""

from __future__ import annotations

import re
from typing import Annotated

import click
import typer
from typer.core import TyperCommand

from .errors import UserError


class Command(TyperCommand):
    """Plain help: flags shown as flags (no ``<bool>``), arguments named without braces."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [re.sub(r"^\{(.*)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Options under their ``rich_help_panel`` heading (plain text), ungrouped ones under "Options"."""
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and param.param_type_name == "option":
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        args = [r for p in self.get_params(ctx) if p.param_type_name == "argument" and (r := p.get_help_record(ctx))]
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        for name, records in panels.items():
            with formatter.section(name):
                formatter.write_dl(records)


def show_version(value: bool) -> None:
    """``--version``: print it and exit."""
    if value:
        from importlib.metadata import version

        typer.echo(f"gruunet {version('gruunet')}")
        raise typer.Exit()


# One definition of --choose-tta for train and reproduce.
ChooseTTA = Annotated[bool, typer.Option(
    "--choose-tta/--no-choose-tta", help="With the outline, also try averaging each validation frame's probability over its 8 "
    "flips and 90° rotations; kept in the model file (post.tta) when it raises validation SEG by at least 0.005 (8x the time).",
    rich_help_panel="Schedule")]

# One definition of --device for every command that runs a network.
Device = Annotated[str, typer.Option(help="auto (GPU when present), cpu, cuda or cuda:N.")]

# One definition of --object-intensity for train and reproduce.
ObjectIntensity = Annotated[tuple[float, float] | None, typer.Option(
    help="Augment: scale each object's brightness by a factor drawn log-uniformly from LO..HI, half of the objects "
         "per crop (e.g. 0.2 1.0 for videos with dim cells; default: off).", show_default=False, rich_help_panel="Augmentation")]

# One definition of --clip-grad for train and reproduce.
ClipGrad = Annotated[float, typer.Option(
    min=0.0, help="Scale each step's gradients down to at most this global L2 norm (0: off, the paper's). The training log "
                  "records the norm before clipping (grad_norm, grad_norm_max).", rich_help_panel="Schedule")]


def checked_range(flag: str, value: tuple[float, float] | None) -> tuple[float, float] | None:
    """A (LO, HI) factor range with 0 < LO <= HI, or a one-line error naming the flag."""
    if value is not None and not 0 < value[0] <= value[1]:
        raise UserError(f"{flag} needs 0 < LO <= HI, got {value[0]} {value[1]}")
    return value


def parse_diameter(text: str) -> float | str | None:
    """``--diameter``: "auto", "off" (None) or a positive number of pixels."""
    if text in ("auto", "off"):
        return None if text == "off" else text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UserError(f"--diameter must be 'auto', 'off' or a positive number of pixels, not {text!r}")
    return value


def parse_outline(text: str) -> float | None:
    """``--outline``: a probability level in 0..1, or "off" (None: the threshold's outlines)."""
    if text == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise UserError(f"--outline must be a probability level between 0 and 1 or 'off', not {text!r}")
    return value
