"""Scratch experiment (session 31): gruunet train, with a share of crops centred on small faint
labelled objects (DSB's labelled speck discs). Patches augment.choose_centre; forked workers inherit."""
import os, sys
import numpy as np
from scipy import ndimage as ndi
from gruunet_cli.training import augment, prefetch

SHARE = float(os.environ.get("FAINT_SHARE", "0.3"))
_orig_crop = prefetch.augmented_crop
_orig_centre = augment.choose_centre
_state = {}
_cache = {}

def _faint_boxes(image, labels, boxes):
    key = id(labels)
    if key in _cache:
        return _cache[key]
    ids = np.arange(1, int(labels.max()) + 1)
    area = np.bincount(labels.ravel(), minlength=len(ids) + 1)[1:]
    present = area > 0
    if present.sum() < 3:
        _cache[key] = []
        return []
    bg = float(np.median(image[labels == 0])) if (labels == 0).any() else 0.0
    means = np.asarray(ndi.mean(image, labels, ids)) - bg
    med_a = np.median(area[present]); med_m = np.median(means[present])
    sel = present & (area <= 0.4 * med_a) & (means <= 0.25 * med_m)
    objs = ndi.find_objects(labels.astype(np.int64))
    out = [objs[i] for i in np.flatnonzero(sel) if i < len(objs) and objs[i] is not None]
    if len(_cache) > 64:
        _cache.clear()
    _cache[key] = out
    return out

def centre(rng, labels, boxes=None):
    img = _state.get("image")
    if img is not None and img.shape == labels.shape and rng.random() < SHARE:
        fb = _faint_boxes(img, labels, boxes)
        if fb:
            return _orig_centre(rng, labels, fb)
    return _orig_centre(rng, labels, boxes)

def crop(rng, image, labels, *a, **k):
    _state["image"] = image
    return _orig_crop(rng, image, labels, *a, **k)

augment.choose_centre = centre
prefetch.augmented_crop = crop

if __name__ == "__main__":
    from gruunet_cli.cli import main
    sys.argv = ["gruunet"] + sys.argv[1:]
    main()
