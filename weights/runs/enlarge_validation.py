"""The DSB validation images and their references enlarged so each image's median nucleus is
60 px (GOWT1's size), as a CTC layout: how `--diameter auto` was checked on large cells.

    python weights/runs/enlarge_validation.py OUT/dsb-val/data BIG60
    gruunet segment BIG60/val RES --weights weights/gruunet-nuclei --threads 2
    gruunet evaluate RES BIG60/val_GT

SRC is the folder `weights/score.py ... --sets dsb-val` writes (``val/``, ``val_GT/``).
"""

import sys
from pathlib import Path

import numpy as np
import tifffile

from gruunet_cli.inference import scale

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for d in ("val", "val_GT/SEG", "val_GT/TRA"):
    (dst / d).mkdir(parents=True, exist_ok=True)
for img_p in sorted((src / "val").glob("t*.tif")):
    t = img_p.stem[1:]
    img = tifffile.imread(img_p)
    ref = tifffile.imread(src / "val_GT/SEG" / f"man_seg{t}.tif")
    f = 60.0 / scale.object_diameter([ref])
    big = scale.resize_plane(img, f)
    ref_big = scale.labels_to_shape(ref.astype(np.uint16), big.shape[-2:])  # nearest neighbour
    top = np.iinfo(img.dtype).max
    tifffile.imwrite(dst / "val" / f"t{t}.tif", np.clip(big, 0, top).astype(img.dtype))
    tifffile.imwrite(dst / "val_GT/SEG" / f"man_seg{t}.tif", ref_big)
    tifffile.imwrite(dst / "val_GT/TRA" / f"man_track{t}.tif", ref_big)
    print(f"t{t}: {img.shape} x{f:.2f} -> {big.shape}")
