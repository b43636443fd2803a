"""`evaluate` against py-ctcmetrics (where it follows the official tool) and the official definitions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from synthetic import perturb, random_labels, write_sequence
from test_metrics import brute_force_jaccards
from typer.testing import CliRunner

from gruunet_cli.cli import app
from gruunet_cli.evaluation.evaluate import evaluate

ctc_metrics = pytest.importorskip("ctc_metrics")
from ctc_metrics.scripts.evaluate import evaluate_sequence  # noqa: E402


def reference_scores(res: Path, gt: Path) -> dict:
    """py-ctcmetrics' SEG and DET (its DET needs at least two frames; with one, SEG only)."""
    if len(list((gt / "TRA").glob("man_track*.tif"))) < 2:
        return evaluate_sequence(str(res), str(gt), metrics=["SEG"], threads=1)
    return evaluate_sequence(str(res), str(gt), metrics=["SEG", "DET"], threads=1)


def random_case(rng: np.random.Generator, three_d: bool) -> tuple[dict, dict]:
    shape = (5, 24, 28) if three_d else (48, 56)
    frames = int(rng.integers(2, 5))
    gt, res = {}, {}
    for t in range(frames):
        ref = random_labels(rng, shape, int(rng.integers(3, 15)))
        kind = rng.integers(0, 6)
        if kind == 0:
            res[t] = np.zeros(shape, np.uint16)  # empty result frame
        elif kind == 1:
            res[t] = ref.copy()
        else:
            res[t] = perturb(rng, ref)
        if t == 0 or rng.random() < 0.6:
            gt[t] = ref
    return gt, res


@pytest.mark.parametrize("seed", range(24))
def test_seg_det_equal_py_ctcmetrics(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    gt_frames, res_frames = random_case(rng, three_d=seed % 3 == 2)
    res, gt = write_sequence(tmp_path, "01", gt_frames, res_frames)
    ours = evaluate(res, gt)
    ref = reference_scores(res, gt)
    assert ours.seg == pytest.approx(ref["SEG"], abs=1e-9)
    assert ours.det == pytest.approx(ref["DET"], abs=1e-9)
    assert ours.op_csb == pytest.approx((ref["SEG"] + ref["DET"]) / 2, abs=1e-9)


def test_slice_gt_counts_every_slice_file(tmp_path: Path) -> None:
    """3D slice GT: each ``man_seg_T_Z`` file is compared with slice Z; a label in two files counts twice
    (py-ctcmetrics merges slices, so the reference here is the definition itself)."""
    rng = np.random.default_rng(7)
    vol = random_labels(rng, (6, 32, 32), 10)
    res_vol = perturb(rng, vol)
    seg = tmp_path / "01_GT" / "SEG"
    seg.mkdir(parents=True)
    (tmp_path / "01_RES").mkdir()
    tifffile.imwrite(tmp_path / "01_RES" / "mask002.tif", res_vol)
    expected = []
    for z in (1, 3, 4):
        tifffile.imwrite(seg / f"man_seg_002_{z:03d}.tif", vol[z])
        expected += brute_force_jaccards(vol[z], res_vol[z])
    report = evaluate(tmp_path / "01_RES", tmp_path / "01_GT")
    assert [r.slice for r in report.rows] == [1, 3, 4]
    assert report.objects == len(expected)
    assert report.seg == pytest.approx(np.mean(expected), abs=1e-12)
    assert report.det is None  # no TRA folder


def test_missing_result_frame_scores_zero_and_is_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a, b = random_labels(rng, (40, 40), 5), random_labels(rng, (40, 40), 7)
    res, gt = write_sequence(tmp_path, "01", {0: a, 1: b}, {0: a, 1: b})
    (res / "mask001.tif").unlink()
    report = evaluate(res, gt)
    n0, n1 = len(np.unique(a)) - 1, len(np.unique(b)) - 1
    assert report.missing_frames == [1]
    assert report.seg == pytest.approx(n0 / (n0 + n1))


def test_json_and_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ref = random_labels(rng, (40, 40), 6)
    res, gt = write_sequence(tmp_path, "02", {0: ref}, {0: perturb(rng, ref)})
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["evaluate", str(res), str(gt / "SEG"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["seg"] == pytest.approx(evaluate(res, gt).seg)
    assert "SEG" in result.output and "man_seg000.tif" in result.output
    lost = data["seg_losses"]  # where SEG is lost: every reference object once, adding up to 1 − SEG
    assert sum(lost[k] for k in ("missed", "split", "merged", "outline")) == data["objects"]
    loss = sum(lost[k + "_loss"] for k in ("missed", "split", "merged", "outline")) / data["objects"]
    assert loss == pytest.approx(1 - data["seg"], abs=1e-12)
    assert data["rows"][0]["losses"] == lost  # one reference file: its row is the total
    assert f"1 − SEG = {1 - data['seg']:.3f} = missed" in result.output


def _shared_case(src: Path, tmp_path: Path, frames: int | None = None) -> Path:
    """A copy of a shared GT (or ST, as GT) with TRA markers, which py-ctcmetrics requires."""
    seg_src = src / "SEG"
    gt = tmp_path / "GT"
    (gt / "TRA").mkdir(parents=True)
    files = sorted(seg_src.glob("man_seg*.tif"))[:frames]
    shutil.copytree(seg_src, gt / "SEG", ignore=lambda d, names: [n for n in names if seg_src / n not in files])
    lines = []
    for t, f in enumerate(files):
        assert f.name == f"man_seg{t:03d}.tif"
        lab = tifffile.imread(f)
        out = np.zeros(lab.shape, np.uint16)
        for k in np.unique(lab)[1:]:  # one-frame tracks with labels unique over time
            out[lab == k] = len(lines) + 1
            lines.append(f"{len(lines) + 1} {t} {t} 0")
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", out)
    (gt / "TRA" / "man_track.txt").write_text("\n".join(lines) + "\n")
    return gt


def _eroded_result(gt: Path, res: Path) -> None:
    """A result that is the GT with every object eroded in-plane (3×3 cross per slice), relabelled per track."""
    res.mkdir()
    lines = []
    for f in sorted((gt / "TRA").glob("man_track*.tif")):
        t = int(f.stem[len("man_track"):])
        lab = tifffile.imread(gt / "SEG" / f"man_seg{t:03d}.tif")
        eroded = np.zeros(lab.shape, np.uint16)
        cross = ndi.generate_binary_structure(lab.ndim, 1)
        if lab.ndim == 3:  # few, thick z-slices: erode within each slice only
            cross[0] = cross[2] = False
        for k in np.unique(lab)[1:]:
            obj = ndi.binary_erosion(lab == k, cross)
            if obj.any():
                eroded[obj] = len(lines) + 1
                lines.append(f"{len(lines) + 1} {t} {t} 0")
        tifffile.imwrite(res / f"mask{t:03d}.tif", eroded)
    (res / "res_track.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "dataset, seq, frames",
    [("StarDist-nuclei-2D", "01_GT", None), ("StarDist-nuclei-2D", "02_GT", None),
     ("StarDist-nuclei-3D", "01_GT", None), ("Fluo-N2DL-HeLa", "02_ST", 4), ("Fluo-N3DH-CHO", "02_ST", 4)],
)
def test_real_data_self_and_eroded(shared_data: Path, tmp_path: Path, dataset: str, seq: str, frames) -> None:
    gt = _shared_case(shared_data / dataset / seq, tmp_path, frames)
    self_res = tmp_path / "self_RES"
    self_res.mkdir()
    for f in (gt / "SEG").glob("man_seg*.tif"):
        shutil.copy(f, self_res / f.name.replace("man_seg", "mask"))
    assert evaluate(self_res, gt).seg == 1.0

    eroded = tmp_path / "eroded_RES"
    _eroded_result(gt, eroded)
    ours = evaluate(eroded, gt)
    ref = reference_scores(eroded, gt)
    assert 0.3 < ours.seg < 1.0
    assert ours.seg == pytest.approx(ref["SEG"], abs=1e-9)
    if "DET" in ref:
        assert ours.det == pytest.approx(ref["DET"], abs=1e-9)


def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    ref = random_labels(rng, (30, 30), 4)
    res, gt = write_sequence(tmp_path, "01", {0: ref}, {0: ref})
    runner = CliRunner()

    def check(args: list[str], needle: str) -> None:
        result = runner.invoke(app, ["evaluate", *map(str, args)])
        assert result.exit_code == 2, result.output
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output, result.output

    check([tmp_path / "nope", gt], "nope: folder does not exist")
    empty_gt = tmp_path / "empty_GT"
    (empty_gt / "SEG").mkdir(parents=True)
    check([res, empty_gt], "no reference files")
    check([gt / "SEG", gt], "no result masks")

    tifffile.imwrite(res / "mask000.tif", np.zeros((31, 30), np.uint16))
    check([res, gt], "mask000.tif: shape (31, 30) differs from reference man_seg000.tif (30, 30)")
    tifffile.imwrite(res / "mask000.tif", np.zeros((30, 30), np.float32))
    check([res, gt], "mask000.tif: not a label image")
    (res / "mask000.tif").write_bytes(b"this is not a tiff")
    check([res, gt], "mask000.tif: cannot read TIFF")
