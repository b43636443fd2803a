"""Scratch (session 31): uniform weight average of two model files with one architecture, then
`train`'s end step (sizing, outline) on the second file's validation frames.

Usage: python weights/runs/gruunet-nuclei-soup.py A B OUT [WEIGHT_OF_B]"""
import sys, torch
from pathlib import Path
from gruunet_cli.files import modelfile
from gruunet_cli.tools import sizing
from gruunet_cli.inference.segment import SegmentOptions
a, b, out = sys.argv[1], sys.argv[2], sys.argv[3]
w = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
ma, meta_b = modelfile.load(a)[0], None
mb, meta_b = modelfile.load(b)
sa, sb = ma.state_dict(), mb.state_dict()
mixed = {k: (sa[k] * (1 - w) + sb[k] * w) if sa[k].is_floating_point() else sb[k] for k in sa}
mb.load_state_dict(mixed)
p = modelfile.save(out, mb, meta_b)   # b's metadata: validation frames, data, config
for line in sizing.after_training(modelfile.weights_path(out), SegmentOptions(threads=2)):
    print(line)
