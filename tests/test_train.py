"""Training: a real short run, bit-for-bit resume, Ctrl-C, torchrun with 2 CPU processes, and learning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import render, touching_discs, write_ctc
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.config import Arch, LossName, LRSchedule, ModelConfig
from gruunet_cli.errors import UserError
from gruunet_cli.files import modelfile
from gruunet_cli.nets.model import build_model
from gruunet_cli.training import curves
from gruunet_cli.training.ema import averaged, decay_at, ramp_note, ramp_steps
from gruunet_cli.training.loss import compute_loss
from gruunet_cli.training.step import train_step
from gruunet_cli.training.train import (
    TrainConfig,
    TrainData,
    load_init as _load_init,
    output_paths,
    run,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "ctc" / "sample" / "StarDist-nuclei-2D"
SHIPPED = REPO / "weights" / "gruunet-stardist2d.safetensors"


@pytest.fixture
def sequence(tmp_path: Path) -> TrainData:
    rng = np.random.default_rng(0)
    labels = [touching_discs(rng, (80, 96), 14) for _ in range(4)]
    images, gt = write_ctc(tmp_path, "01", [render(rng, lab) for lab in labels], dict(enumerate(labels)))
    return TrainData.ctc(images, gt)


def small(**kw) -> TrainConfig:
    # One thread: torch's float sums depend on the thread count, and the default (the free cores)
    # can differ between two runs on a busy machine, which broke bit-exact resume on CI.
    base = dict(crop=32, batch=2, iterations=6, val_interval=3, workers=0, checkpoint_interval=2, device="cpu",
                threads=1)
    return TrainConfig(**{**base, **kw})


def test_short_run_writes_model_log_and_curves(sequence: TrainData, tmp_path: Path) -> None:
    result = run(small(), sequence, tmp_path / "w" / "m")
    paths = output_paths(tmp_path / "w" / "m")
    assert result.iterations == 6 and not result.interrupted
    for key in ("model", "checkpoint", "log", "curves"):
        assert paths[key].is_file(), key
    assert (tmp_path / "w" / "m.json").is_file()
    rows = curves.read_csv(paths["log"])
    assert [r["iteration"] for r in rows] == [3, 6]
    assert all(0 <= r["val_dice"] <= 1 and r["train_loss"] > 0 for r in rows)
    assert all(0 < r["grad_norm"] <= r["grad_norm_max"] < float("inf") for r in rows)  # mean ≤ max over the interval
    model, meta = modelfile.load(paths["model"])
    assert meta.training["iterations_run"] in (3, 6) and meta.training["best_iteration"] == result.best_iteration
    assert meta.training["data"]["sources"][0]["path"] == str(sequence.sources[0].path)
    assert paths["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("loss, arch", [(LossName.wce, Arch.unet), (LossName.fl, Arch.gruunet)])
def test_other_losses_and_unet_train(sequence: TrainData, tmp_path: Path, loss: LossName, arch: Arch) -> None:
    cfg = small(loss=loss, iterations=2, val_interval=2, model=ModelConfig(arch=arch, unet_base=8))
    assert run(cfg, sequence, tmp_path / "m").iterations == 2


@pytest.mark.parametrize("clip", [0.0, 1e-3])
def test_a_step_applies_the_gradient_clipped_to_the_global_norm(clip: float) -> None:
    """With plain SGD at lr 1 a step moves the weights by minus the applied gradient, so its size
    and direction show the clipping: the norm returned is the unclipped gradient's, computed here
    independently by an ordinary backward on a copy; the move is that gradient, scaled to ``clip``."""
    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(width=8, growth=4, frdu_widths=(8, 8, 8), dense_layers=(1, 1, 1)),
                      clip_grad=clip, device="cpu")
    model = build_model(cfg.model).double()  # float64: w - (w - g) == g to ~1e-16
    twin = build_model(cfg.model).double()
    twin.load_state_dict(model.state_dict())
    x, y = torch.rand(2, 1, 16, 16, dtype=torch.float64), (torch.rand(2, 16, 16) > 0.5).long()
    twin.train()
    compute_loss(cfg.loss, twin(x).float(), y, None, cfg.gamma, None, cfg.nfl_normalizer_grad).backward()
    grad = torch.cat([p.grad.flatten() for p in twin.parameters()])
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    _, norm = train_step(model, opt, torch.amp.GradScaler("cuda", enabled=False), {"image": x, "target": y}, cfg,
                         torch.device("cpu"))
    move = before - torch.cat([p.detach().flatten() for p in model.parameters()])
    assert norm == pytest.approx(float(grad.norm()), rel=1e-5) and norm > 10 * 1e-3
    expected = grad * (clip / float(grad.norm()) if clip else 1.0)
    assert torch.allclose(move, expected, rtol=1e-6, atol=1e-12)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(output_paths(out)["checkpoint"], weights_only=True)["model"]


def test_resume_after_interrupt_equals_uninterrupted(sequence: TrainData, tmp_path: Path) -> None:
    cfg = small(workers=2)
    run(cfg, sequence, tmp_path / "a")

    def ctrl_c_at_4(i: int) -> None:
        if i == 4:
            raise KeyboardInterrupt

    interrupted = run(cfg, sequence, tmp_path / "b", on_step=ctrl_c_at_4)
    assert interrupted.interrupted and interrupted.iterations == 4
    resumed = run(cfg, sequence, tmp_path / "b", resume=True)
    assert resumed.iterations == 6
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["iteration"] for r in resumed.rows] == [3, 6]


def test_cosine_schedule_sets_each_steps_rate_and_resumes_exactly(sequence: TrainData, tmp_path: Path) -> None:
    """The optimizer's rate at the last step is lr·(1 + cos(π·5/6))/2 (hand-computed: 6.70e-5), and
    a run stopped at step 4 and resumed ends with the same weights as one that was not stopped."""
    cfg = small(lr_schedule=LRSchedule.cosine)
    run(cfg, sequence, tmp_path / "a")
    last_lr = torch.load(output_paths(tmp_path / "a")["checkpoint"], weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert last_lr == pytest.approx(1e-3 * (1 + np.cos(np.pi * 5 / 6)) / 2) and last_lr == pytest.approx(6.699e-5, rel=1e-3)

    def ctrl_c_at_4(i: int) -> None:
        if i == 4:
            raise KeyboardInterrupt

    run(cfg, sequence, tmp_path / "b", on_step=ctrl_c_at_4)
    run(cfg, sequence, tmp_path / "b", resume=True)
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    constant = final_weights(tmp_path / "a")
    run(small(), sequence, tmp_path / "c")
    assert not all(torch.equal(constant[k], final_weights(tmp_path / "c")[k]) for k in constant)  # the schedule changed training


def test_ema_update_is_the_hand_computed_average() -> None:
    """avg₀ = w₀, then avg ← d·avg + (1 − d)·w with d = min(decay, (1 + n)/(10 + n)) after n updates."""
    net = torch.nn.Linear(2, 1)
    avg = averaged(net, 0.9)
    expected = None
    for n, value in enumerate([1.0, 3.0, -2.0, 5.0]):
        with torch.no_grad():
            net.weight.fill_(value)
        avg.update_parameters(net)
        d = min(0.9, (1 + n) / (10 + n))  # n earlier updates
        expected = value if expected is None else d * expected + (1 - d) * value
        assert avg.module.weight.detach().numpy() == pytest.approx(np.full((1, 2), expected), rel=1e-6), n
    assert expected == pytest.approx(((1.0 * 2 / 11 + 3.0 * 9 / 11) * 3 / 12 - 2.0 * 9 / 12) * 4 / 13 + 5.0 * 9 / 13)


def test_ema_run_saves_the_average_and_resumes_exactly(sequence: TrainData, tmp_path: Path) -> None:
    """With --ema the model file holds the averaged weights (not the last step's), and a run stopped
    at step 4 and resumed ends with the same average as one that was not stopped."""
    cfg = small(ema=0.9, val_interval=6)
    result = run(cfg, sequence, tmp_path / "a")
    assert result.best_iteration == 6  # the only validation: the model file is the average at step 6
    blob = torch.load(output_paths(tmp_path / "a")["checkpoint"], weights_only=True)
    assert int(blob["ema"]["n_averaged"]) == 6
    saved, _ = modelfile.load(output_paths(tmp_path / "a")["model"])
    for name, p in saved.named_parameters():
        assert torch.equal(p.detach(), blob["ema"][f"module.{name}"]), name
    assert not all(torch.equal(p.detach(), blob["model"][name]) for name, p in saved.named_parameters())

    def ctrl_c_at_4(i: int) -> None:
        if i == 4:
            raise KeyboardInterrupt

    run(cfg, sequence, tmp_path / "b", on_step=ctrl_c_at_4)
    run(cfg, sequence, tmp_path / "b", resume=True)
    resumed = torch.load(output_paths(tmp_path / "b")["checkpoint"], weights_only=True)["ema"]
    assert all(torch.equal(blob["ema"][k], resumed[k]) for k in blob["ema"])


def test_ema_shorter_than_its_ramp_is_the_ramp_and_says_so(sequence: TrainData, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Until (1 + n)/(10 + n) reaches DECAY the ramp alone sets the average: 6 steps with --ema 0.9
    and with 0.95 give the same average (the ramp reaches 0.9 only after 80 steps), and train says so."""
    for d, n in ((0.9, 80), (0.95, 170), (0.999, 8990)):
        assert ramp_steps(d) == n and decay_at(d, n) == d > decay_at(d, n - 1)
    ema = {}
    for d in (0.9, 0.95):
        run(small(ema=d, val_interval=6), sequence, tmp_path / str(d))
        ema[d] = torch.load(output_paths(tmp_path / str(d))["checkpoint"], weights_only=True)["ema"]
        assert f"--ema {d:g}: the average's decay ramps up" in capsys.readouterr().err
    assert all(torch.equal(ema[0.9][k], ema[0.95][k]) for k in ema[0.9])
    assert ramp_note(0.9, 81) is None and ramp_note(0.9, 80) is not None


def test_resume_refuses_other_options(sequence: TrainData, tmp_path: Path) -> None:
    run(small(iterations=2, val_interval=2), sequence, tmp_path / "m")
    result = CliRunner().invoke(app, ["train", str(sequence.sources[0].path), str(sequence.sources[0].gt), "--out", str(tmp_path / "m"),
                                      "--resume", "--iterations", "4", "--crop", "48", "--device", "cpu"])
    assert result.exit_code == 2 and "checkpoint was made with other options (" in result.output
    named = result.output.split("other options (")[1].split(")")[0].split(", ")
    assert "crop" in named and "iterations" not in named  # every option that differs, none that may change


def test_resume_with_more_iterations_extends_the_run(sequence: TrainData, tmp_path: Path) -> None:
    run(small(iterations=4, val_interval=2), sequence, tmp_path / "m")
    extended = run(small(iterations=6, val_interval=2), sequence, tmp_path / "m", resume=True)
    assert extended.iterations == 6
    assert [r["iteration"] for r in extended.rows] == [2, 4, 6]
    assert torch.load(output_paths(tmp_path / "m")["checkpoint"], weights_only=True)["state"]["iteration"] == 6


def test_resume_with_other_post_processing_rescores_the_best_model(sequence: TrainData, tmp_path: Path) -> None:
    from gruunet_cli.config import PostConfig
    from gruunet_cli.training.data import scan, split
    from gruunet_cli.training.validation import validate

    first = run(small(iterations=4, val_interval=2), sequence, tmp_path / "m")
    post = PostConfig(threshold=-1.0, split=False, min_size=1)  # one image-sized object: SEG > 0 however poor the net
    again = run(small(iterations=4, val_interval=2, post=post), sequence, tmp_path / "m", resume=True)
    model, meta = modelfile.load(output_paths(tmp_path / "m")["model"])
    val = [r.load(meta.norm) for r in split(scan(sequence.sources[0], 2).refs)[1]]
    assert again.best_iteration == first.best_iteration and again.best_seg != first.best_seg
    assert again.best_seg == pytest.approx(validate(model, val, torch.device("cpu"), post).seg)


def test_cli_reports_missing_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(tmp_path / "01"), str(tmp_path / "01_GT"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / '01'}: does not exist"


@pytest.mark.slow
def test_torchrun_two_cpu_processes(sequence: TrainData, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gruunet_cli",
           "train", str(sequence.sources[0].path), str(sequence.sources[0].gt), "--out", str(out), "--iterations", "20",
           "--val-interval", "10", "--crop", "32", "--workers", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = curves.read_csv(output_paths(out)["log"])
    assert [r["iteration"] for r in rows] == [10, 20]
    _, meta = modelfile.load(out)
    assert meta.training["world_size"] == 2


def test_init_starts_from_the_model_files_weights(sequence: TrainData, tmp_path: Path) -> None:
    cfg = small(iterations=2, val_interval=2, model=ModelConfig(arch=Arch.unet, unet_base=8))
    base = run(cfg, sequence, tmp_path / "a").model_path
    net = build_model(cfg.model)
    _load_init(base, net, cfg.model)
    reference, _ = modelfile.load(base)
    for (k, v), w in zip(net.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(v, w), k
    with pytest.raises(UserError, match="architecture differs"):
        _load_init(base, build_model(ModelConfig(arch=Arch.unet, unet_base=4)), ModelConfig(arch=Arch.unet, unet_base=4))


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped weights not in this checkout")
def test_fine_tuning_the_shipped_model_keeps_what_it_learned(tmp_path: Path) -> None:
    # Two steps (at the fine-tuning learning rate) from the shipped weights still segment the
    # sample's validation rows well; the same two steps from scratch find next to nothing.
    args = ["train", str(SAMPLE / "01"), str(SAMPLE / "01_GT"), "--iterations", "2", "--val-interval", "2",
            "--crop", "64", "--workers", "0", "--device", "cpu"]
    for name, extra in (("tuned", ["--init", str(SHIPPED)]), ("scratch", [])):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    meta = {name: modelfile.read_meta(tmp_path / f"{name}.safetensors").training for name in ("tuned", "scratch")}
    seg = {name: m["best_val_seg"] for name, m in meta.items()}
    assert seg["tuned"] > 0.7 and seg["scratch"] < 0.3, seg
    assert meta["tuned"]["config"]["init"] == str(SHIPPED) and meta["scratch"]["config"]["init"] is None
    assert meta["tuned"]["config"]["lr"] == 1e-4 and meta["scratch"]["config"]["lr"] == 1e-3


def test_init_with_another_architecture_is_a_one_line_error(tmp_path: Path) -> None:
    if not SHIPPED.exists():
        pytest.skip("shipped weights not in this checkout")
    result = CliRunner().invoke(app, ["train", str(SAMPLE / "01"), str(SAMPLE / "01_GT"), "--out", str(tmp_path / "m"),
                                      "--model", "unet", "--init", str(SHIPPED)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {SHIPPED}: is a gruunet model file; train it with --model gruunet"


def test_precise_bn_is_the_average_over_whole_frames() -> None:
    """After `bnstats.recalibrate`, the stem's BN holds the mean over the frames of each frame's
    per-channel mean of the stem convolution (hand-computed here), whatever it held before."""
    import numpy as np
    import torch

    from gruunet_cli.config import ModelConfig, NormConfig
    from gruunet_cli.nets.model import build_model
    from gruunet_cli.training import bnstats
    from gruunet_cli.training.data import Frame

    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8, frdu_widths=(8, 8, 8), dense_layers=(1, 1, 1), growth=4)).eval()
    rng = np.random.default_rng(0)
    frames = [Frame(f"f{i}", rng.random((32, 48)).astype(np.float32) * (i + 1), np.zeros((32, 48), np.int32))
              for i in range(3)]
    conv, bn = model.stem[0], model.stem[1]  # ConvBnAct: conv → BN → LReLU
    bn.running_mean.fill_(123.0)
    assert bnstats.recalibrate(model, frames, torch.device("cpu"), NormConfig()) == 3
    with torch.no_grad():
        means = [conv(torch.from_numpy(f.image)[None, None]).mean(dim=(0, 2, 3)) for f in frames]
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)
    assert not model.training and bn.momentum == 0.1
