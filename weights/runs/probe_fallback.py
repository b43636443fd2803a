"""As-user validation SEG under alternative fallbacks of `scale.whole_probe` (no pair of probes agrees; session 38).

    python weights/runs/probe_fallback.py MODEL.safetensors [CTC_DIR with val/ and val_GT/SEG/ [RULE,RULE...]]

Rules: shrunk (the code's fallback until session 39), agree (the larger probe of the best-agreeing
pair), agree_rejoin (the same, rejoined with the smaller of the pair), size (the probe whose cells
are nearest the model's diameter at its scale).
"""
import sys, time
import numpy as np
from pathlib import Path
from gruunet_cli.evaluation import metrics
from gruunet_cli.files import images
from gruunet_cli.inference import scale
from gruunet_cli.inference.segment import Predictor, SegmentOptions
from gruunet_cli.tools import outline

real = scale.whole_probe
log = []

def make(rule):
    def whole_probe(probes, rejoin=False):
        for probe, smaller in zip(probes, probes[1:]):
            if probe.diameter is not None and scale.agreement(probe, smaller) >= scale.AGREE:
                log.append(("agree", probe.scale))
                return scale.rejoined(probe, smaller) if rejoin else probe
        found = [p for p in probes if p.diameter is not None]
        if not found:
            return probes[-1]
        if rule == "shrunk":
            pick = found[-1]
        elif rule in ("agree", "agree_rejoin"):
            cands = [(scale.agreement(a, b), i) for i, (a, b) in enumerate(zip(probes, probes[1:])) if a.diameter is not None]
            if cands:
                i = max(cands)[1]
                pick = scale.rejoined(probes[i], probes[i + 1]) if rejoin and rule == "agree_rejoin" else probes[i]
            else:
                pick = found[-1]
        elif rule == "size":
            pick = min(found, key=lambda p: abs(np.log(p.diameter * p.scale / model_d)))
        log.append(("fallback", pick.scale))
        return pick
    return whole_probe

weights = Path(sys.argv[1])
if len(sys.argv) > 2:  # a CTC folder: IMG/tNNN.tif + IMG_GT/SEG/man_segNNN.tif
    d = Path(sys.argv[2])
    pairs = [(d / "val" / f"t{r.stem[7:]}.tif", r) for r in sorted((d / "val_GT" / "SEG").glob("man_seg*.tif"))]
else:
    pairs = outline.validation_pairs(Path("weights/gruunet-nuclei.safetensors"))
p = Predictor(weights, SegmentOptions(device="cpu", threads=2))
model_d = p.meta.object_diameter
data = [(images.read_grey(i)[0], images.read_labels(r), r.stem) for i, r in pairs]
for rule in (sys.argv[3].split(",") if len(sys.argv) > 3 else ("shrunk", "agree", "size")):
    scale.whole_probe = make(rule)
    js, t, per = [], time.time(), {}
    for image, ref, name in data:
        log.clear()
        j = metrics.match_objects(ref, p.labels(image)).jaccard
        js += list(j)
        if log:
            per[name] = (log[-1], round(float(np.mean(j)), 3))
    print(weights.stem, rule, f"SEG {np.mean(js):.4f}", f"{time.time()-t:.0f}s", {k: v for k, v in per.items() if v[0][0] == "fallback"}, flush=True)
