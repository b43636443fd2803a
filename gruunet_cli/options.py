"""Option types shared by the command-line modules (`cli.py`, `tools/bench_cli.py`)."""

from __future__ import annotations

import re
from typing import Annotated

import click
import typer
from typer.core import TyperCommand


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


# One definition of --device for every command that runs a network.
Device = Annotated[str, typer.Option(help="auto (GPU when present), cpu, cuda or cuda:N.")]
