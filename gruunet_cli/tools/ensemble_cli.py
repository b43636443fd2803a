"""`gruunet ensemble`: the command line of `tools.ensemble` (registered by `cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError, user_errors
from ..options import ChooseTTA, Device


@user_errors
def ensemble(
    members: Annotated[list[Path], typer.Argument(help="Two or more model files of one architecture, normalisation, cell size and validation split (e.g. the same `train` command with different --seed).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Model file to write (weights/NAME or NAME.safetensors; NAME.json beside it).", show_default=False)],
    device: Device = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for the network (default: the cores not kept busy by other processes).")] = None,
    choose_outline: Annotated[bool, typer.Option("--choose-outline/--no-choose-outline", help="Afterwards, choose the ensemble's post-processing on the members' validation frames, as `train` does at its end (else: the first member's).")] = True,
    choose_tta: ChooseTTA = False,
) -> None:
    """Average several trained models: one model file whose class probabilities are the mean of its members'."""
    from . import ensemble as ens

    for path in members:
        if not path.exists() and not path.with_name(path.name + ".safetensors").exists():
            raise UserError("does not exist", path)
    target = ens.combine(members, out)
    typer.echo(f"ensemble of {len(members)} networks: {target}")
    if choose_outline:
        from ..inference.segment import SegmentOptions
        from . import sizing

        typer.echo("\n".join(sizing.after_training(target, SegmentOptions(device=device, threads=threads), choose_tta)))
