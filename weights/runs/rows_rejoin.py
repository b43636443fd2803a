"""SEG of `--diameter auto` and of the true diameter on the StarDist 01 image's validation rows
(384-512) enlarged 2, 2.5 and 3x (48-72 px nuclei), for each model file given, with `--diameter
auto` without and with `post.rejoin`: how it was checked per model (from the repository root).

    python weights/runs/rows_rejoin.py weights/gruunet-nuclei weights/gruunet-stardist2d
"""

import sys
from pathlib import Path

sys.path.insert(0, "tests")
from helpers import shrunk_validation_rows  # noqa: E402

from gruunet_cli.evaluation import metrics  # noqa: E402
from gruunet_cli.inference import scale, segment  # noqa: E402

for f in (2.0, 2.5, 3.0):
    image, truth = shrunk_validation_rows(f)
    true_d = scale.object_diameter([truth])
    for model in sys.argv[1:]:
        row = []
        for name, d, rejoin in (("auto", "auto", False), ("auto+rejoin", "auto", True), ("true diameter", true_d, False)):
            opts = segment.SegmentOptions(device="cpu", diameter=d, threads=2, post_overrides={"rejoin": rejoin})
            p = segment.Predictor(Path(model), opts)
            seg = metrics.seg_score(metrics.match_objects(truth, p.labels(image)).jaccard)
            row.append(f"{name} {seg:.3f} (x{p.last_scale['factor']:.2f})")
        print(f"x{f} {model}: " + ", ".join(row), flush=True)
