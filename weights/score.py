"""Score a model file on the unseen data sets of the weight cards, with `gruunet segment` and
`gruunet evaluate` as a user would run them (default options: ``--diameter auto``).

    python weights/score.py weights/gruunet-nuclei out/ [--sets stardist02 hela02 gowt1-01 gowt1-02 dsb-val]

Only frames with a reference are segmented (a folder of links to them), so a CTC sequence with
partial GT costs what its annotated frames cost. Writes ``out/<set>/scores.json`` per set and
prints one line per set: SEG, DET, Dice, frames, objects, wall time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SETS = {  # name: (images, reference)
    "stardist02": (REPO / "ctc/sample/StarDist-nuclei-2D/02", REPO / "ctc/sample/StarDist-nuclei-2D/02_GT"),
    "hela02": (DATA / "Fluo-N2DL-HeLa/02", DATA / "Fluo-N2DL-HeLa/02_ST"),
    "gowt1-01": (DATA / "Fluo-N2DH-GOWT1/01", DATA / "Fluo-N2DH-GOWT1/01_GT"),
    "gowt1-02": (DATA / "Fluo-N2DH-GOWT1/02", DATA / "Fluo-N2DH-GOWT1/02_GT"),
    "cho02": (DATA / "Fluo-N3DH-CHO/02", DATA / "Fluo-N3DH-CHO/02_ST"),
}


def annotated_frames(images: Path, ref: Path, into: Path, most: int | None = None) -> tuple[Path, Path]:
    """A folder of links to the frames of ``images`` that have a SEG reference (the first ``most``
    of them), and the reference folder to score them against (links to those frames' files)."""
    frames = sorted({int(m.group(1)) for p in (ref / "SEG").iterdir() if (m := re.match(r"man_seg_?(\d+)", p.name))})
    if most is not None:
        frames = frames[:most]
    img_dir, gt_dir = into / "frames", into / "GT"
    for d in (img_dir, gt_dir / "SEG", gt_dir / "TRA"):
        d.mkdir(parents=True, exist_ok=True)
    for folder, pattern, target in ((images, r"t(\d+)\.tif", img_dir), (ref / "SEG", r"man_seg_?(\d+)", gt_dir / "SEG"),
                                    (ref / "TRA", r"man_track(\d+)\.tif", gt_dir / "TRA")):
        for p in folder.iterdir() if folder.is_dir() else ():
            m = re.match(pattern, p.name)
            if m and int(m.group(1)) in frames and not (target / p.name).exists():
                (target / p.name).symlink_to(p.resolve())
    return img_dir, gt_dir


def dsb_validation(model: Path, into: Path) -> tuple[Path, Path]:
    """The model's own held-out DSB images as a CTC layout (t000.tif + man_seg000.tif, TRA = SEG)."""
    meta = json.loads(model.with_suffix(".json").read_text())
    names = [n.split(":", 1)[1] for n in meta["training"]["val_frames"]]
    src = Path(meta["training"]["data"]["sources"][0]["path"])
    img, seg, tra = into / "val", into / "val_GT" / "SEG", into / "val_GT" / "TRA"
    for d in (img, seg, tra):
        d.mkdir(parents=True, exist_ok=True)
    for t, name in enumerate(sorted(names)):
        for d, f in ((img, f"t{t:03d}.tif"), (seg, f"man_seg{t:03d}.tif"), (tra, f"man_track{t:03d}.tif")):
            if not (d / f).exists():
                (d / f).symlink_to((src / ("images" if d == img else "masks") / f"{name}.tif").resolve())
    return img, into / "val_GT"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--sets", nargs="+", default=[*SETS, "dsb-val"])
    ap.add_argument("--tag", default="", help="suffix of the output folder per set (e.g. a --diameter value)")
    ap.add_argument("--max-frames", type=int, help="score only the first N annotated frames of each CTC set")
    ap.add_argument("--val-from", type=Path, help="model file whose held-out DSB images make dsb-val (default: MODEL)")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `segment` options")
    args = ap.parse_args()
    model = args.model if args.model.suffix == ".safetensors" else args.model.with_name(args.model.name + ".safetensors")
    for name in args.sets:
        work = args.out / (name + args.tag)
        if name == "dsb-val":
            val_from = args.val_from or model
            images, ref = dsb_validation(val_from.with_suffix(".safetensors") if val_from.suffix == ".json" else
                                         (val_from if val_from.suffix == ".safetensors" else val_from.with_name(val_from.name + ".safetensors")),
                                         work / "data")
        else:
            images, ref = SETS[name]
            images, ref = annotated_frames(images, ref, work, args.max_frames)
        res = work / "RES"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gruunet_cli", "segment", str(images), str(res), "--weights", str(model),
                        "--overwrite", *args.extra], check=True)
        wall = time.perf_counter() - t0
        subprocess.run([sys.executable, "-m", "gruunet_cli", "evaluate", str(res), str(ref), "--json",
                        str(work / "scores.json"), "--no-frames"], check=True, stdout=subprocess.DEVNULL)
        r = json.loads((work / "scores.json").read_text())
        frames = len({row["frame"] for row in r["rows"]})
        det = "–" if r["det"] is None else f"{r['det']:.3f}"
        dice = "–" if r["dice"] is None else f"{r['dice']:.3f}"
        print(f"{name}: SEG {r['seg']:.3f} DET {det} Dice {dice} ({frames} frames, {r['objects']} objects, "
              f"Dice over {len(r['dice_files'])} files) segment {wall:.0f} s", flush=True)


if __name__ == "__main__":
    main()
