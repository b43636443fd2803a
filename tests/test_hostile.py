"""Hostile and careless input: every case ends in a correct result or in one `error:` line naming
the file, exit code 2, and nothing half-written; SIGTERM saves like Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from synthetic import render, touching_discs, write_ctc
from test_segment import random_model_file
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.config import ModelConfig, NormConfig, dumps
from gruunet_cli.errors import UserError
from gruunet_cli.evaluation import evaluate as ev
from gruunet_cli.evaluation import metrics
from gruunet_cli.files import modelfile
from gruunet_cli.inference import normalize
from gruunet_cli.nets.model import build_model
from gruunet_cli.training.train import TrainConfig, output_paths, train_step

runner = CliRunner()


def one_error_line(result, path: Path | str, words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {path}: ") and words in lines[0], lines[0]


def sequence(tmp_path: Path, n: int = 2, shape=(48, 48)) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    labs = [touching_discs(rng, shape, 6) for _ in range(n)]
    return write_ctc(tmp_path, "01", [render(rng, x) for x in labs], dict(enumerate(labs)))


# ---- silent wrong results ----------------------------------------------------------------

def test_non_finite_pixels_are_left_out_of_the_normalisation() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((32, 32)).astype(np.float32)
    bad = image.copy()
    bad[3, 4], bad[10, 10], bad[20, 1] = np.nan, np.inf, -np.inf
    lo, hi = normalize.percentiles(bad, NormConfig())
    finite = bad[np.isfinite(bad)]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(finite, [1.0, 99.8])))
    out = normalize.apply(bad, lo, hi)
    assert np.isfinite(out).all() and out[3, 4] == 0 and out[10, 10] == 0


def test_segment_with_a_nan_pixel_gives_the_same_mask(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lab = touching_discs(rng, (64, 64), 8)
    img = render(rng, lab).astype(np.float32)
    shipped = Path(__file__).resolve().parents[1] / "weights" / "gruunet-stardist2d.safetensors"
    for name, pixels in (("clean", img), ("nan", img.copy())):
        (tmp_path / name).mkdir()
        if name == "nan":
            pixels[30, 30] = np.nan
        tifffile.imwrite(tmp_path / name / "t000.tif", pixels)
        r = runner.invoke(app, ["segment", str(tmp_path / name), str(tmp_path / f"{name}_RES"), "--weights", str(shipped),
                                "--device", "cpu", "--diameter", "off"])
        assert r.exit_code == 0, r.output
    clean = tifffile.imread(tmp_path / "clean_RES" / "mask000.tif")
    nan = tifffile.imread(tmp_path / "nan_RES" / "mask000.tif")
    assert clean.max() > 3  # it found cells
    assert metrics.seg_score(metrics.match_objects(clean, nan).jaccard) > 0.95


def test_a_non_finite_loss_stops_before_the_weights_change() -> None:
    cfg = TrainConfig(model=ModelConfig(), device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    x = torch.rand(2, 1, 32, 32)
    x[0, 0, 5, 5] = float("nan")
    y = torch.zeros(2, 32, 32, dtype=torch.long)
    with pytest.raises(UserError, match="training loss became nan"):
        train_step(model, opt, torch.amp.GradScaler("cuda", enabled=False), {"image": x, "target": y}, cfg,
                   torch.device("cpu"))
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("layout", ["rgb_last", "rgb_planar", "png"])
def test_rgb_images_become_grey_with_a_note_and_a_2d_mask(tmp_path: Path, layout: str) -> None:
    import imageio.v3 as iio

    rng = np.random.default_rng(2)
    lab = touching_discs(rng, (48, 56), 6)
    grey = (render(rng, lab) // 8).astype(np.uint8)
    rgb = np.stack([grey, grey // 2, grey], axis=-1)
    src = tmp_path / "in"
    src.mkdir()
    if layout == "rgb_last":
        tifffile.imwrite(src / "t000.tif", rgb)
    elif layout == "rgb_planar":
        tifffile.imwrite(src / "t000.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    else:
        iio.imwrite(src / "cells.png", rgb)
    weights = random_model_file(tmp_path)
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(weights), "--device", "cpu",
                            "--diameter", "off"])
    assert r.exit_code == 0, r.output
    assert "note: " in r.output and "RGB image segmented as grey" in r.output
    mask = tifffile.imread(next((tmp_path / "res").iterdir()))
    assert mask.shape == (48, 56) and mask.dtype == np.uint16
    if layout == "png":
        assert (tmp_path / "res" / "cells_masks.tif").is_file()


def test_multichannel_images_need_a_channel(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    stack = np.random.default_rng(0).random((2, 40, 40)).astype(np.float32)
    tifffile.imwrite(src / "t000.tif", stack, imagej=True, metadata={"axes": "CYX"})
    weights = random_model_file(tmp_path)
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(weights), "--device", "cpu"])
    one_error_line(r, src / "t000.tif", "has 2 channels (axes CYX): choose one with --channel N")
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res"), "--weights", str(weights), "--device", "cpu",
                            "--channel", "1", "--diameter", "off"])
    assert r.exit_code == 0, r.output
    assert tifffile.imread(tmp_path / "res" / "mask000.tif").shape == (40, 40)
    r = runner.invoke(app, ["segment", str(src), str(tmp_path / "res2"), "--weights", str(weights), "--device", "cpu",
                            "--channel", "5"])
    one_error_line(r, src / "t000.tif", "--channel 5 does not exist")


@pytest.mark.parametrize("value, words", [("inf", "positive number of pixels"), ("0.01", "would resize images"),
                                          ("1e9", "would resize images")])
def test_diameter_is_bounded(tmp_path: Path, value: str, words: str) -> None:
    images, _ = sequence(tmp_path)
    cfg = ModelConfig()
    torch.manual_seed(0)
    from gruunet_cli.config import ModelMeta

    weights = modelfile.save(tmp_path / "model", build_model(cfg), ModelMeta(model=cfg, object_diameter=20.0))
    r = runner.invoke(app, ["segment", str(images), str(tmp_path / "res"), "--weights", str(weights), "--diameter", value,
                            "--device", "cpu"])
    assert r.exit_code == 2 and words in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").iterdir())


@pytest.mark.parametrize("command, flag", [("train", "--object-intensity"), ("train", "--zoom-range"),
                                           ("reproduce", "--object-intensity")])
def test_ranges_must_be_positive_and_ordered(tmp_path: Path, command: str, flag: str) -> None:
    images, gt = sequence(tmp_path)
    args = [command, str(images), str(gt)] if command == "train" else [command, str(tmp_path)]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "out"), flag, "1.0", "0.5"])
    assert r.exit_code == 2 and f"{flag} needs 0 < LO <= HI" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "out").exists()


def test_evaluate_memory_does_not_depend_on_label_values(tmp_path: Path) -> None:
    import resource

    rng = np.random.default_rng(3)
    ref = touching_discs(rng, (64, 64), 6)
    gt, res = tmp_path / "01_GT" / "SEG", tmp_path / "01_RES"
    gt.mkdir(parents=True)
    res.mkdir()
    tifffile.imwrite(gt / "man_seg000.tif", ref)
    huge = np.where(ref > 0, ref.astype(np.uint32) + 4_000_000_000, 0).astype(np.uint32)
    tifffile.imwrite(res / "mask000.tif", huge)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = ev.evaluate(res, tmp_path / "01_GT")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert report.seg == 1.0 and grown_mib < 200  # a table indexed by label value would need 30 GiB


def test_all_zero_reference_is_refused(tmp_path: Path) -> None:
    images, gt = sequence(tmp_path)
    for p in (gt / "SEG").iterdir():
        tifffile.imwrite(p, np.zeros((48, 48), np.uint16))
    r = runner.invoke(app, ["train", str(images), str(gt), "--out", str(tmp_path / "m"), "--device", "cpu"])
    one_error_line(r, gt, "the references hold no objects: nothing to learn from")


@pytest.mark.parametrize("broken", [b"", b"II*\x00not really a tiff"])
def test_broken_existing_masks_are_redone(tmp_path: Path, broken: bytes) -> None:
    images, _ = sequence(tmp_path, n=1)
    out = tmp_path / "01_RES"
    out.mkdir()
    (out / "mask000.tif").write_bytes(broken)
    tifffile.imwrite(out / "mask001.tif", np.zeros((10, 10), np.uint16))  # another image's size: no frame 1 here
    weights = random_model_file(tmp_path)
    r = runner.invoke(app, ["segment", str(images), str(out), "--weights", str(weights), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert tifffile.imread(out / "mask000.tif").shape == (48, 48)


# ---- one line where a traceback was --------------------------------------------------------

@pytest.mark.parametrize("where", ["file", "under_file"])
def test_output_paths_are_checked_before_work(tmp_path: Path, where: str) -> None:
    images, gt = sequence(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    target = blocker if where == "file" else blocker / "sub"
    weights = random_model_file(tmp_path)
    r = runner.invoke(app, ["segment", str(images), str(target), "--weights", str(weights), "--device", "cpu"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and r.output.startswith("error: "), r.output
    r = runner.invoke(app, ["train", str(images), str(gt), "--out", str(target / "m"), "--device", "cpu"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and r.output.startswith("error: "), r.output
    r = runner.invoke(app, ["demo", "--out", str(target), "--device", "cpu"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and r.output.startswith("error: "), r.output
    res = tmp_path / "01_RES"
    res.mkdir()
    tifffile.imwrite(res / "mask000.tif", np.zeros((48, 48), np.uint16))
    r = runner.invoke(app, ["evaluate", str(res), str(gt), "--json", str(blocker / "x" / "scores.json")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and r.output.startswith("error: "), r.output
    assert blocker.read_text() == "a file"


def test_disk_errors_while_writing_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from gruunet_cli.files import atomic

    images, _ = sequence(tmp_path, n=1)
    weights = random_model_file(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    r = runner.invoke(app, ["segment", str(images), str(tmp_path / "res"), "--weights", str(weights), "--device", "cpu"])
    one_error_line(r, tmp_path / "res" / "mask000.tif", "cannot write (No space left on device)")
    assert list((tmp_path / "res").iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize("content, words", [
    (b"", "cannot resume from this checkpoint"),
    (b"PK\x03\x04 truncated zip", "cannot resume from this checkpoint"),
    ("pickle", "refused"),
])
def test_resume_from_a_bad_checkpoint_is_one_line(tmp_path: Path, content, words: str) -> None:
    images, gt = sequence(tmp_path)
    ckpt = output_paths(tmp_path / "m")["checkpoint"]
    if content == "pickle":
        import pickle

        class Payload:
            def __reduce__(self):
                return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

        ckpt.write_bytes(pickle.dumps(Payload()))
    else:
        ckpt.write_bytes(content)
    r = runner.invoke(app, ["train", str(images), str(gt), "--out", str(tmp_path / "m"), "--resume", "--device", "cpu"])
    one_error_line(r, ckpt, words)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("patch, words", [({"model": {"width": -1}}, "channel counts"),
                                          ({"post": {"threshold": "high"}}, "PostConfig.threshold: expected float"),
                                          ({"object_diameter": "big"}, "object_diameter must be")])
def test_nonsense_model_metadata_is_one_line(tmp_path: Path, patch: dict, words: str) -> None:
    from safetensors.torch import load_file, save_file

    images, _ = sequence(tmp_path, n=1)
    weights = random_model_file(tmp_path)
    meta = json.loads(dumps(modelfile.read_meta(weights)))
    for key, value in patch.items():
        meta[key] = {**meta[key], **value} if isinstance(value, dict) else value
    save_file(load_file(str(weights)), str(weights), metadata={modelfile.META_KEY: json.dumps(meta)})
    r = runner.invoke(app, ["segment", str(images), str(tmp_path / "res"), "--weights", str(weights), "--device", "cpu"])
    one_error_line(r, weights, words)


def test_4d_references_are_one_line(tmp_path: Path) -> None:
    img_dir, seg = tmp_path / "01", tmp_path / "01_GT" / "SEG"
    img_dir.mkdir()
    seg.mkdir(parents=True)
    tifffile.imwrite(img_dir / "t000.tif", np.zeros((2, 3, 16, 16), np.uint8), photometric="minisblack")
    tifffile.imwrite(seg / "man_seg000.tif", np.ones((2, 3, 16, 16), np.uint16), photometric="minisblack")
    r = runner.invoke(app, ["train", str(img_dir), str(seg.parent), "--out", str(tmp_path / "m"), "--device", "cpu"])
    one_error_line(r, seg / "man_seg000.tif", "expected (H, W) or (Z, H, W)")


def test_outputs_have_normal_permissions(tmp_path: Path) -> None:
    from gruunet_cli.files.atomic import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_sigterm_during_training_saves_and_exits_143(tmp_path: Path) -> None:
    images, gt = sequence(tmp_path, n=3, shape=(64, 64))
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "gruunet_cli", "train", str(images), str(gt), "--out", str(out), "--iterations", "100000",
           "--crop", "32", "--workers", "1", "--device", "cpu", "--checkpoint-interval", "100000", "--val-interval", "100000"]
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and "training 1/" not in log.read_text():
        time.sleep(0.2)  # start-up: a log file hears the first iteration, then one line every 30 s
    time.sleep(1)  # some more iterations
    assert proc.poll() is None, log.read_text()
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group, augmentation worker included (as `pkill -f` or docker stop)
    proc.wait(timeout=120)
    output = log.read_text()
    assert proc.returncode == 143, output
    assert "interrupted, checkpoint saved" in output
    state = torch.load(output_paths(out)["checkpoint"], weights_only=True)["state"]
    assert state["iteration"] > 0
    r = runner.invoke(app, ["train", str(images), str(gt), "--out", str(out), "--iterations", str(state["iteration"] + 2),
                            "--crop", "32", "--workers", "1", "--device", "cpu", "--checkpoint-interval", "100000",
                            "--val-interval", "100000", "--resume"])
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path: Path) -> None:
    images, gt = sequence(tmp_path, n=3, shape=(64, 64))
    common = ["--crop", "32", "--workers", "1", "--device", "cpu", "--threads", "1", "--checkpoint-interval", "3",
              "--val-interval", "1000"]
    straight = tmp_path / "straight"
    r = runner.invoke(app, ["train", str(images), str(gt), "--out", str(straight), "--iterations", "12", *common])
    assert r.exit_code == 0, r.output
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "gruunet_cli", "train", str(images), str(gt), "--out", str(killed), "--iterations", "12",
           *common]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = output_paths(killed)["checkpoint"]
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill -9 once a checkpoint exists, mid-run
        if ckpt.is_file() and 3 <= torch.load(ckpt, weights_only=True)["state"]["iteration"] < 12:
            proc.kill()
            break
        time.sleep(0.2)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    r = runner.invoke(app, ["train", str(images), str(gt), "--out", str(killed), "--iterations", "12", *common, "--resume"])
    assert r.exit_code == 0, r.output
    a = torch.load(output_paths(straight)["checkpoint"], weights_only=True)["model"]
    b = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
