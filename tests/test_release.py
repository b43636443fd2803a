"""What a user meets first: the demo with the shipped weights, the paper's protocol, CTC scripts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import NUCLEI, STARDIST2D
from synthetic import render, touching_discs, write_ctc
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.config import ModelConfig
from gruunet_cli.files import modelfile
from gruunet_cli.inference.segment import SegmentOptions
from gruunet_cli.tools import ctc_scripts, demo, minsize, outline, reproduce
from gruunet_cli.training.train import TrainConfig


@pytest.mark.skipif(not demo.WEIGHTS.exists(), reason="shipped weights not in this checkout")
def test_demo_scores_the_unseen_image(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "scores.json").read_text())
    card = demo.WEIGHTS.with_suffix(".md").read_text()
    # The default model's card reports what the demo measures (to 0.01: the CPU's thread count
    # and precision move a few boundary pixels).
    stated = float(re.search(r"`gruunet demo`[^|\n]*\| \*\*SEG (0\.\d+)\*\*", card).group(1))
    assert abs(stated - scores["seg"]) <= 0.01, (stated, scores["seg"])
    assert scores["seg"] > 0.65  # regression guard
    assert (tmp_path / "02_RES" / "mask000.tif").is_file() and (tmp_path / "overlay" / "overlay000.png").is_file()
    assert "SEG" in result.output and str(tmp_path) in result.output


def test_weight_cards_describe_their_files() -> None:
    for weights in sorted(demo.WEIGHTS.parent.glob("*.safetensors")):
        meta = modelfile.read_meta(weights)
        card = weights.with_suffix(".md").read_text()
        assert meta.training["iterations_run"] > 0
        assert str(meta.training["iterations_run"]) in card and "gruunet train" in card


def synthetic_dataset(root: Path) -> Path:
    """A two-video CTC dataset of 64² frames: SEG on frames 0-1, TRA markers on every frame."""
    rng = np.random.default_rng(0)
    ds = root / "Synthetic-DS"
    for seq in ("01", "02"):
        labels = [touching_discs(rng, (64, 64), 8) for _ in range(3)]
        _, gt = write_ctc(ds, seq, [render(rng, lab) for lab in labels], dict(enumerate(labels[:2])))
        (gt / "TRA").mkdir()
        for t, lab in enumerate(labels):  # every cell marked; frame 2 has markers but no SEG
            tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", lab)
    return ds


def test_reproduce_cli_passes_the_schedule_to_training(tmp_path: Path) -> None:
    ds = synthetic_dataset(tmp_path)
    args = ["reproduce", str(ds), "--out", str(tmp_path / "out"), "--iterations", "2", "--val-interval", "2",
            "--crop", "32", "--workers", "0", "--device", "cpu", "--threads", "1", "--only", "gruu-net-01",
            "--no-choose-min-size", "--no-choose-outline"]
    for schedule, ema, clip, seed, lr in (("cosine", "0.99", "5", "3", "0.0005"), ("constant", "0", "0", "0", "0.001")):
        result = CliRunner().invoke(app, [*args, "--lr-schedule", schedule, "--ema", ema, "--clip-grad", clip, "--seed", seed,
                                          "--lr", lr, "--out", str(tmp_path / schedule)])
        assert result.exit_code == 0, result.output
        meta = modelfile.read_meta(tmp_path / schedule / "models" / "gruu-net-01.safetensors")
        got = meta.training["config"]
        assert got["lr_schedule"] == schedule and got["ema"] == float(ema) and got["clip_grad"] == float(clip)
        assert got["seed"] == int(seed) and got["lr"] == float(lr)
        assert "| GRUU-Net | 01 | 02 |" in (tmp_path / schedule / "table.md").read_text()


@pytest.mark.slow
def test_reproduce_runs_end_to_end(tmp_path: Path) -> None:
    ds = synthetic_dataset(tmp_path)
    base = TrainConfig(model=ModelConfig(unet_base=4), iterations=2, val_interval=2, crop=32, workers=0, device="cpu")
    rows = reproduce.run(ds, tmp_path / "out", base, seg_opts=SegmentOptions(device="cpu", tile=64), log=lambda _: None)
    assert [(r["method"], r["train"], r["test"]) for r in rows] == [
        ("GRUU-Net", "01", "02"), ("GRUU-Net", "02", "01"), ("U-Net", "01", "02"), ("U-Net", "02", "01")]
    assert all(0.0 <= r["SEG"] <= 1.0 for r in rows)
    # min_size chosen on frame 2 of the training video (markers, no SEG) and written into the model file
    meta = modelfile.read_meta(tmp_path / "out" / "models" / "gruu-net-01.safetensors")
    why = meta.training["min_size_choice"]
    assert why["frames"] == [2] and rows[0]["min_size"] == meta.post.min_size == why["min_size"]
    assert why["min_size"] < why["smallest_annotated_px"] and set(why["det_by_min_size"]) <= {str(s) for s in minsize.CANDIDATES}
    # the outline level chosen by SEG on the validation frames the model file names, and written into it
    level = meta.training["outline_choice"]
    assert level["frames"] == [n.rsplit(":", 1)[1] for n in meta.training["val_frames"]] != []
    assert rows[0]["split_h"] == meta.post.split_h == level["split_h"] and set(level["seg_by_split_h"]) == {
        str(d) for d in outline.SPLIT_DEPTHS}
    assert level["outline_peak"] == meta.post.outline_peak and set(level["seg_by_peak"]) == {"level", "peak"}
    assert rows[0]["outline"] == reproduce.outline_cell(meta.post) and meta.post.outline == level["outline"] and set(level["seg_by_outline"]) == {
        "none", *(str(v) for v in outline.CANDIDATES)}
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| GRUU-Net | 01 | 02 |" in table
    assert (tmp_path / "out" / "table.csv").read_text().splitlines()[0].startswith("method,train,test,SEG")
    again = reproduce.run(ds, tmp_path / "out", base, seg_opts=SegmentOptions(device="cpu", tile=64), log=lambda _: None,
                          resume=True, only=("u-net-02",))  # a finished model is re-read, not retrained
    assert [(r["method"], r["train"]) for r in again] == [("U-Net", "02")] and again[0]["SEG"] == rows[3]["SEG"]
    assert len((tmp_path / "out" / "table.csv").read_text().splitlines()) == 5  # the other rows are kept


def test_ctc_scripts_run_from_sw(tmp_path: Path) -> None:
    from gruunet_cli.config import ModelMeta
    from gruunet_cli.nets.model import build_model

    weights = modelfile.save(tmp_path / "w" / "m", build_model(ModelConfig()), ModelMeta())
    sw = tmp_path / "SW"
    written = ctc_scripts.write_scripts(ctc_scripts.parse_mapping([f"Fake-DS={weights}"]), sw)
    assert sorted(p.name for p in written) == ["Fake-DS-01.sh", "Fake-DS-02.sh"]
    assert (sw / "weights" / "m.safetensors").is_file()
    rng = np.random.default_rng(0)
    write_ctc(tmp_path, "Fake-DS/01", [render(rng, touching_discs(rng, (40, 40), 4))], {})
    subprocess.run(["bash", "Fake-DS-01.sh"], cwd=sw, check=True, capture_output=True)
    assert (tmp_path / "Fake-DS" / "01_RES" / "mask000.tif").is_file()
    result = CliRunner().invoke(app, ["ctc-scripts", "no-equals-sign"])
    assert result.exit_code == 2 and "expected DATASET=WEIGHTS" in result.output


@pytest.mark.skipif(not demo.WEIGHTS.exists(), reason="shipped weights not in this checkout")
def test_bench_post_measures_both_cases_on_real_probabilities() -> None:
    for case in ("--split", "--no-split"):
        result = CliRunner().invoke(app, ["bench", "post", "--inline", "--size", "600", case])
        assert result.exit_code == 0, result.output
        r = json.loads(result.output.strip().splitlines()[-1])
        assert r["size"] == 600 and r["split"] == (case == "--split") and r["seconds"] > 0
        assert 100 < r["objects"] < 600  # the bundled 01 image holds 125 nuclei in 512²


def test_denormals_are_flushed_once_a_device_is_chosen() -> None:
    import torch

    from gruunet_cli.inference.runtime import resolve_device

    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39])  # below float32's smallest normal number (1.18e-38)
    assert (tiny * 1.0).item() > 0  # kept: the slow path that trained weights trigger
    resolve_device("cpu")
    assert (tiny * 1.0).item() == 0.0


@pytest.mark.skipif(not demo.WEIGHTS.exists(), reason="shipped weights not in this checkout")
def test_large_tensors_get_huge_pages_once_gruunet_is_imported() -> None:
    """Importing the package before torch asks torch for huge pages (2 MiB) on large tensors:
    a 64 MiB tensor then lies mostly on huge pages, which the kernel reports in smaps."""
    import sys

    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.exists() or "[never]" in thp.read_text() or not Path("/proc/self/smaps_rollup").exists():
        pytest.skip("no transparent huge pages on this system")
    code = ("import gruunet_cli, torch; x = torch.ones(16 * 2**20); "
            "print([l for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages')][0].split()[1])")
    huge_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert huge_kib >= 32 * 1024


def test_bench_denormals_times_both_settings() -> None:
    import torch

    for flush in (True, False):
        try:
            result = CliRunner().invoke(app, ["bench", "denormals", "--inline", "--repeats", "1",
                                              "--flush" if flush else "--no-flush"])
        finally:
            torch.set_flush_denormal(True)  # as the rest of the suite runs
        assert result.exit_code == 0, result.output
        r = json.loads(result.output.strip().splitlines()[-1])
        assert r["flush_denormal"] is flush and r["forward_s"] > 0 and r["train_step_s"] > 0  # never timed here


def test_bench_segment_runs_in_the_precision_asked_for() -> None:
    """`bench segment --amp/--no-amp` reaches `segment`'s options (bf16 only where the CPU has it)."""
    from gruunet_cli.inference.runtime import cpu_bf16

    for flag, expected in (("--no-amp", "fp32"), ("--amp", "bf16" if cpu_bf16() else "fp32")):
        result = CliRunner().invoke(app, ["bench", "segment", "--inline", "--size", "64", "--threads", "1", flag])
        assert result.exit_code == 0, result.output
        r = json.loads(result.output.strip().splitlines()[-1])
        assert r["precision"] == expected and r["seconds"] > 0  # never timed here


@pytest.mark.skipif(not STARDIST2D.exists(), reason="shipped weights not in this checkout")
def test_bench_stages_accounts_for_the_wall_time() -> None:
    from gruunet_cli.tools.bench_stages import network_flops_per_pixel, stages

    r = stages(128, STARDIST2D, "auto", threads=1, one_pass=True)
    parts = sum(r[k] for k in ("read_s", "estimate_s", "network_s", "post_s", "write_s"))
    assert r["one_pass_network_s"] > 0 and r["banded_network_s"] > 0 and r["upsampled_wx_network_s"] > 0  # all ran
    from gruunet_cli.nets import bands, upconv

    assert bands.BAND_PIXELS == 1 << 17 and upconv.ENABLED  # and the bands and coarse W x are back on
    assert 0 < parts <= r["wall_s"] * 1.001 and r["pixels_final"] == 128 * 128  # cells of the model's size
    assert r["network_gflops"] > 0 and r["plain_conv_gflops"] > 0 and r["plain_conv_fp32_gflops"] > 0  # never compared here
    from gruunet_cli.inference.runtime import cpu_bf16

    assert r["precision"] == ("bf16" if cpu_bf16() else "fp32")  # segment's default on this CPU
    assert r["warm_network_s"] > 0  # the warm pass ran; its rate is the same FLOP over its own time
    assert r["warm_network_gflops"] * r["warm_network_s"] == pytest.approx(r["network_gflops"] * r["network_s"])
    from gruunet_cli.files import modelfile

    model, _ = modelfile.load(STARDIST2D)
    assert network_flops_per_pixel(model) == pytest.approx(1.119e6, rel=1e-3)  # the 1.12 MFLOP per pixel
    # inference skips the W x taps that read the same coarse pixel (nets/upconv.py): 0.87 MFLOP
    assert network_flops_per_pixel(model, executed=True) == pytest.approx(0.867e6, rel=1e-2)
    assert r["flops_per_pixel"] == pytest.approx(1.119e6, rel=1e-3) and upconv.ENABLED


@pytest.mark.skipif(not NUCLEI.exists(), reason="shipped weights not in this checkout")
def test_bench_stages_times_the_pass_whose_labels_are_kept() -> None:
    """The generalist fragments the tiled 01 image's nuclei at full size, so `auto` keeps its
    half-size probe's labels although smaller probes run after it: that probe is the final pass,
    everything before and after it the estimate."""
    from gruunet_cli.tools.bench_stages import stages

    r = stages(256, NUCLEI, "auto", threads=1)
    assert r["factor"] == 0.5 and r["pixels_final"] == 128 * 128, r
    assert r["estimate_s"] > r["network_s"] > 0  # the full-size first pass alone costs more than the probe


def test_bench_peer_images_carry_the_ground_truth_diameter() -> None:
    from gruunet_cli.inference.scale import object_diameters
    from gruunet_cli.tools.bench_peer import sample_images

    (name, small, d_small), (_, big, d_big) = sample_images([256, 300])
    assert small.shape == (256, 256) and big.shape == (300, 300)
    for d, seq in ((d_small, "02"), (d_big, "01")):
        gt = tifffile.imread(demo.SAMPLE / f"{seq}_GT" / "SEG" / "man_seg000.tif")
        assert d == pytest.approx(float(np.median(object_diameters(gt))))
    assert 5 < d_small < 15 and d_big > d_small  # 02's nuclei are the small ones


def test_bench_peer_without_cellpose_says_how_to_install_it() -> None:
    from gruunet_cli.tools.bench_peer import cellpose_version

    if cellpose_version() is not None:
        pytest.skip("Cellpose is installed here")
    result = CliRunner().invoke(app, ["bench", "peer", "--size", "256"])
    assert result.exit_code == 2
    assert "pip install" in result.output and "Traceback" not in result.output
