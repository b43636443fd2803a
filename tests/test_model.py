"""GRUU-Net and U-Net: shapes, gradients, the paper's size, per-iteration outputs, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gruunet_cli.config import Arch, ModelConfig
from gruunet_cli.nets.model import ConvGRUCell, GRUUNet, build_model, count_parameters
from gruunet_cli.training.loss import normalized_focal_loss

SMALL_UNET = dict(arch=Arch.unet, unet_base=8)


@pytest.mark.parametrize("cfg, shape", [
    (ModelConfig(), (2, 1, 67, 45)),
    (ModelConfig(), (1, 1, 16, 16)),
    (ModelConfig(dims=3, z_pool_levels=1), (1, 1, 5, 33, 40)),
    (ModelConfig(in_channels=2, shared_gru=False), (1, 2, 20, 31)),
    (ModelConfig(**SMALL_UNET), (2, 1, 67, 45)),
    (ModelConfig(dims=3, z_pool_levels=1, **SMALL_UNET), (1, 1, 5, 33, 40)),
])
def test_output_shape_any_size(cfg: ModelConfig, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], cfg.classes, *shape[2:])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(shared_gru=False), ModelConfig(**SMALL_UNET)])
def test_every_parameter_gets_a_gradient(cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    x = torch.randn(2, 1, 32, 48)
    target = (torch.rand(2, 32, 48) > 0.5).long()
    normalized_focal_loss(model(x), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_parameter_count_near_paper() -> None:
    n = count_parameters(GRUUNet(ModelConfig()))
    assert 0.6e6 < n < 0.8e6, n  # paper: ~0.7M
    assert count_parameters(GRUUNet(ModelConfig(shared_gru=False))) == n + 8 * count_parameters(ConvGRUCell(2, 32))


def test_nine_iterations_end_in_the_output() -> None:
    torch.manual_seed(0)
    model = GRUUNet(ModelConfig()).eval()
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        steps = model(x, return_iterations=True)
        out = model(x)
    assert len(steps) == 9
    assert all(s.shape == out.shape for s in steps)
    torch.testing.assert_close(steps[-1], out)
    assert not torch.allclose(steps[0], steps[-1])


def test_gru_cell_follows_equations() -> None:
    """h_t = z∘h + (1−z)∘LReLU(W_h*x + U_h*(r∘h) + b_h), recomputed with plain convolutions, both
    with gradients (training) and without (inference, computed in place)."""
    torch.manual_seed(0)
    cell = ConvGRUCell(2, 4)
    x, h = torch.randn(1, 4, 9, 9), torch.randn(1, 4, 9, 9)
    conv = lambda m, t, w, b=None: torch.nn.functional.conv2d(  # noqa: E731
        torch.nn.functional.pad(t, (1, 1, 1, 1), mode="reflect"), w, b)
    Wr, Wz, Wh = cell.w.weight.chunk(3)
    br, bz, bh = cell.w.bias.chunk(3)
    Ur, Uz = cell.u_rz.weight.chunk(2)
    r = torch.sigmoid(conv(None, x, Wr, br) + conv(None, h, Ur))
    z = torch.sigmoid(conv(None, x, Wz, bz) + conv(None, h, Uz))
    h_tilde = torch.nn.functional.leaky_relu(conv(None, x, Wh, bh) + conv(None, r * h, cell.u_h.weight), 0.2)
    expected = z * h + (1 - z) * h_tilde
    torch.testing.assert_close(cell(x, h), expected)
    with torch.no_grad():
        torch.testing.assert_close(cell(x, h), expected)
    tanh_cell = ConvGRUCell(2, 4, "tanh")
    tanh_cell.load_state_dict(cell.state_dict())
    h_tilde = torch.tanh(conv(None, x, Wh, bh) + conv(None, r * h, cell.u_h.weight))
    expected = z * h + (1 - z) * h_tilde
    torch.testing.assert_close(tanh_cell(x, h), expected)
    with torch.inference_mode():
        torch.testing.assert_close(tanh_cell(x, h), expected)


def discs_image(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 64×64 noisy image of four discs and its foreground target."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    lab = np.zeros((64, 64), np.int64)
    for cy, cx, r in [(15, 15, 8), (40, 20, 10), (30, 45, 9), (52, 50, 6)]:
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    img = lab + rng.normal(0, 0.3, lab.shape)
    return torch.tensor(img, dtype=torch.float32)[None, None], torch.tensor(lab)[None]


@pytest.mark.slow
def test_overfits_one_image() -> None:
    """AMSGrad + normalized focal loss fit one 64×64 image to Dice > 0.95 (eval mode) in ≤ 150 steps."""
    torch.manual_seed(0)
    x, y = discs_image()
    model = GRUUNet(ModelConfig())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), amsgrad=True)
    best = 0.0
    for step in range(150):
        model.train()
        opt.zero_grad()
        normalized_focal_loss(model(x), y).backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                pred = model(x).argmax(1)
            best = max(best, float(2 * ((pred == 1) & (y == 1)).sum() / ((pred == 1).sum() + (y == 1).sum())))
            if best > 0.95:
                break
    assert best > 0.95


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(dims=3, z_pool_levels=1, **SMALL_UNET)])
def test_weights_are_built_channels_last(cfg: ModelConfig) -> None:
    fmt = torch.channels_last if cfg.dims == 2 else torch.channels_last_3d
    convs = [m.weight for m in build_model(cfg).modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs and all(w.is_contiguous(memory_format=fmt) for w in convs if w.shape[1] > 1)


def test_channels_last_differs_from_channels_first_only_by_rounding() -> None:
    """The shipped model on a real image: the channels-last network's probabilities are as close to
    a float64 reference as the channels-first (former) layout's are."""
    import copy

    import tifffile

    from gruunet_cli.files import modelfile
    from helpers import STARDIST2D

    from gruunet_cli.tools.demo import SAMPLE

    torch.manual_seed(0)
    model, meta = modelfile.load(STARDIST2D)
    image = tifffile.imread(SAMPLE / "02" / "t000.tif")[:128, :128].astype(np.float32)
    lo, hi = np.percentile(image, [meta.norm.p_low, meta.norm.p_high])
    x = torch.from_numpy(((image - lo) / (hi - lo)).astype(np.float32))[None, None]
    first = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        ref = first.double()(x.double()).softmax(1)[:, 1]
        err_first = (copy.deepcopy(model).to(memory_format=torch.contiguous_format)(x).softmax(1)[:, 1] - ref).abs().max()
        err_last = (model(x).softmax(1)[:, 1] - ref).abs().max()
    assert err_last <= 2 * err_first + 1e-5
    assert err_last < 0.02


@pytest.mark.parametrize("dims", [2, 3])
def test_folded_embed_equals_bn_and_conv_of_the_concatenation(dims: int) -> None:
    """At inference FRDU's embed folds its BN into the 1x1 conv and skips the concatenation;
    in float64 that is the same function as BN → conv of concat(o, h) (here with non-trivial BN
    statistics), and in training mode the unfolded path runs."""
    from gruunet_cli.nets.model import FRDU

    torch.manual_seed(0)
    unit = FRDU(dims, in_o=24, state=8, width=16, layers=2, growth=6).double()
    bn = unit.embed[0]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.05, 3)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    size = (6, 10, 12) if dims == 3 else (10, 12)
    o, h = torch.randn(2, 24, *size, dtype=torch.float64), torch.randn(2, 8, *size, dtype=torch.float64)
    unit.eval()
    with torch.inference_mode():
        folded = unit.embedded(o, h)
        reference = unit.embed(torch.cat([o, h], dim=1))
    torch.testing.assert_close(folded, reference, rtol=0, atol=1e-10)
    assert (folded - reference).abs().max() < 1e-10 < reference.abs().max()
    unit.train()  # batch statistics: folding would be wrong, so the plain path must run
    with torch.no_grad():
        torch.testing.assert_close(unit.embedded(o, h), unit.embed(torch.cat([o, h], dim=1)))


@pytest.mark.parametrize("dims", [2, 3])
def test_reflect_ring_conv_equals_the_padded_copy(dims: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """At inference a 3x3 conv pads with zeros and recomputes the outer ring from reflected slabs
    (`layers._ReflectRing`); in float64 that is F.pad(reflect) → conv, on odd sizes, on inputs
    too thin for the ring (the plain path), and inside the whole network."""
    from gruunet_cli.nets import layers

    torch.manual_seed(0)
    c = layers.conv(dims, 5, 7, 3).double().eval()
    shapes = [(2, 5, 4, 9, 11), (1, 5, 3, 2, 6)] if dims == 3 else [(2, 5, 13, 17), (1, 5, 2, 6)]
    for shape in shapes:
        x = torch.randn(shape, dtype=torch.float64)
        with torch.inference_mode():
            ring = c(x)
        reference = F.conv2d if dims == 2 else F.conv3d
        pads = [1] * (2 * dims)
        ref = reference(F.pad(x, pads, mode="reflect" if min(shape[2:]) > 1 else "replicate"), c.weight, c.bias)
        torch.testing.assert_close(ring, ref, rtol=0, atol=1e-12)
        assert (ring - ref).abs().max() < 1e-12 < (ring - reference(x, c.weight, c.bias, 1, 1)).abs().max()
    model = build_model(ModelConfig(dims=3, z_pool_levels=1) if dims == 3 else ModelConfig()).double().eval()
    x = torch.randn((1, 1, 5, 33, 40) if dims == 3 else (1, 1, 67, 45), dtype=torch.float64)
    with torch.inference_mode():
        ring = model(x)
        monkeypatch.setattr(layers, "REFLECT_RING", False)
        padded = model(x)
    torch.testing.assert_close(ring, padded, rtol=1e-7, atol=1e-7)  # float64 rounding through ~100 layers
    if dims == 2:  # trained weights in float32, as `segment` runs them: as close to float64
        import copy

        from helpers import STARDIST2D, shrunk_validation_rows

        from gruunet_cli.files import modelfile
        from gruunet_cli.inference import normalize

        trained, meta = modelfile.load(STARDIST2D)
        image = torch.from_numpy(normalize.normalize(shrunk_validation_rows(1.0)[0], meta.norm))[None, None]
        with torch.inference_mode():
            ref = copy.deepcopy(trained).double()(image.double()).softmax(1)  # padded copies, float64
            padded = (trained(image).softmax(1) - ref).abs().max()
            monkeypatch.setattr(layers, "REFLECT_RING", True)
            ring = (trained(image).softmax(1) - ref).abs().max()
        assert 0 < ring <= 2 * padded + 1e-6 and ring < 1e-4
