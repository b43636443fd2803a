"""Model files and images shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch

from gruunet_cli.config import ModelConfig, ModelMeta, PostConfig
from gruunet_cli.files import modelfile
from gruunet_cli.inference import scale
from gruunet_cli.nets.model import build_model
from gruunet_cli.tools import demo


# The single-image weights (trained on the bundled 01 image's first 384 rows): the tests that
# rely on what that model does (its validation rows, its cell size) name it, not the default.
STARDIST2D = demo.REPO / "weights" / "gruunet-stardist2d.safetensors"
NUCLEI = demo.REPO / "weights" / "gruunet-nuclei.safetensors"  # the generalist (DSB2018, 17 px)


def random_model_file(tmp_path: Path, cfg: ModelConfig = ModelConfig(), post: PostConfig = PostConfig(threshold=0.5)) -> Path:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return modelfile.save(tmp_path / "model", model, ModelMeta(model=cfg, post=post))


def shrunk_validation_rows(f: float) -> tuple[np.ndarray, np.ndarray]:
    """The bundled 01 image's validation rows (never trained on) at ``f`` times their size."""
    sample = demo.SAMPLE
    image = tifffile.imread(sample / "01" / "t000.tif")[384:].astype(np.float32)
    truth = tifffile.imread(sample / "01_GT" / "SEG" / "man_seg000.tif")[384:]
    shape = tuple(int(round(s * f)) for s in image.shape)
    return (scale.resize_plane(image, f), scale.labels_to_shape(truth, shape))


def demo_quarter(folder: Path) -> tuple[Path, np.ndarray]:
    """The demo image's central quarter (128², 26 reference nuclei whole or cut; a quarter of the
    time of the whole image) written as ``folder/t000.tif``: (that file, the image)."""
    image = tifffile.imread(demo.SAMPLE / "02" / "t000.tif")[64:192, 64:192]
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "t000.tif", image)
    return folder / "t000.tif", image
