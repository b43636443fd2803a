"""What a newcomer meets first: help text, --version, progress in log files, per-image scale lines,
weights given as a folder or JSON, overlays large enough to see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from synthetic import render, touching_discs, write_ctc
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.files import modelfile, png
from gruunet_cli.progress import Progress

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["train"], ["ensemble"], ["segment"], ["evaluate"], ["demo"], ["reproduce"], ["bench", "segment"]])
def test_help_shows_flags_as_flags_and_plain_argument_names(command: list[str]) -> None:
    r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output and "{" not in r.output.splitlines()[0]
    assert max(len(line) for line in r.output.splitlines()) <= 80


def test_version() -> None:
    from importlib.metadata import version

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"gruunet {version('gruunet')}"


def test_progress_prints_lines_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("training", 10, every_s=0.0, loss="loss {:.3f}") as p:
        for i in range(1, 11):
            p.update(completed=i, loss=1.0 / i)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 10
    assert lines[-1].startswith("training 10/10 (100%)") and "ETA 0:00:00" in lines[-1] and "loss 0.100" in lines[-1]


def test_train_logs_progress_to_a_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labs = [touching_discs(rng, (48, 48), 5) for _ in range(2)]
    images, gt = write_ctc(tmp_path, "01", [render(rng, x) for x in labs], dict(enumerate(labs)))
    log = tmp_path / "log.txt"
    with log.open("w") as f:  # as `nohup gruunet train ... > log 2>&1` would
        subprocess.run([sys.executable, "-m", "gruunet_cli", "train", str(images), str(gt), "--out", str(tmp_path / "m"),
                        "--iterations", "3", "--val-interval", "3", "--crop", "32", "--workers", "0", "--device", "cpu"],
                       stdout=f, stderr=subprocess.STDOUT, check=True)
    text = log.read_text()
    assert "training 1/3" in text and "training 3/3 (100%)" in text and "done after 3 iterations" in text
    assert "\x1b[" not in text  # no terminal control codes in a log file


def test_segment_reports_and_records_the_scale(tmp_path: Path) -> None:
    from gruunet_cli.config import ModelConfig, ModelMeta
    from gruunet_cli.nets.model import build_model

    rng = np.random.default_rng(1)
    lab = touching_discs(rng, (64, 64), 6)
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "cells.tif", render(rng, lab))
    weights = modelfile.save(tmp_path / "m", build_model(ModelConfig()), ModelMeta(object_diameter=20.0))
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(tmp_path), "--device", "cpu",
                            "--diameter", "10"])  # a folder holding one model file
    assert r.exit_code == 0, r.output
    assert "cells.tif: cell diameter 10.0 px, resized 2.00x" in r.output
    rows = (tmp_path / "res" / "scales.csv").read_text().splitlines()
    assert rows == ["image,mask,diameter,factor", "cells.tif,cells_masks.tif,10.00,2.0000"]
    r = runner.invoke(app, ["segment", str(src / "cells.tif"), str(tmp_path / "res2"), "--weights",
                            str(weights.with_suffix(".json")), "--device", "cpu", "--diameter", "off"])
    assert r.exit_code == 0 and (tmp_path / "res2" / "cells_masks.tif").is_file(), r.output


def test_small_overlays_are_enlarged() -> None:
    image = np.random.default_rng(0).random((100, 60)).astype(np.float32)
    labels = np.zeros((100, 60), np.int32)
    labels[10:20, 10:20] = 1
    pic = png.overlay(image, labels)
    assert pic.shape == (1300, 780, 3)  # 13x: the short side reaches 768 px
    assert png.overlay(np.zeros((800, 900), np.float32), np.zeros((800, 900), np.int32)).shape == (800, 900, 3)
