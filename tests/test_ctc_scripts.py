"""CTC submission scripts: a model trained at another scale segments its dataset at that scale."""

from __future__ import annotations

import pytest

from gruunet_cli.config import NormConfig
from gruunet_cli.inference import scale
from gruunet_cli.tools import demo
from gruunet_cli.tools.ctc_scripts import diameter_option
from gruunet_cli.training.options import TrainConfig, TrainData
from gruunet_cli.training.prepare import prepare


def test_scaled_models_get_their_datasets_diameter() -> None:
    assert diameter_option({"config": {"scale_to": 32.0}, "native_diameter": 60.21}) == " --diameter 60.2"
    assert diameter_option({"config": {"scale_to": None}, "native_diameter": 60.2}) == ""
    assert diameter_option({}) == ""


def test_prepare_records_the_native_diameter() -> None:
    import tifffile

    sample = demo.SAMPLE
    prep = prepare(TrainConfig(scale_to=12.0, norm=NormConfig()), TrainData.ctc(sample / "01", sample / "01_GT"))
    truth = scale.object_diameter([tifffile.imread(sample / "01_GT" / "SEG" / "man_seg000.tif")])
    assert prep.object_diameter == pytest.approx(12.0, rel=0.15)
    assert prep.native_diameter == pytest.approx(truth, rel=0.15)
