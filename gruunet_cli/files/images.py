"""Reading user images of any common format: TIFF through tifffile, PNG/JPEG through imageio.

CTC data is TIFF; image/mask folders of StarDist and Cellpose users are TIFF or PNG.
Every unreadable file is a one-line `UserError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from ..errors import UserError

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path) -> np.ndarray:
    """Any supported image as an array (TIFF: as stored; PNG/JPEG: as decoded)."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return tifffile.imread(path)
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except FileNotFoundError:
        raise UserError("file does not exist", path) from None
    except Exception as exc:  # the readers raise many kinds for broken files
        kind = "TIFF" if path.suffix.lower() in TIFF_SUFFIXES else "image"
        raise UserError(f"cannot read {kind} ({type(exc).__name__}: {exc})".splitlines()[0], path) from None


def _axes(path: Path) -> tuple[str, int]:
    """A TIFF's axes letters (tifffile: S samples, C channel, Z depth, Q unknown) and photometric."""
    try:
        with tifffile.TiffFile(path) as tif:
            return tif.series[0].axes, int(tif.pages[0].photometric or 1)
    except Exception:  # read_image has already reported unreadable files
        return "", 1


def read_grey(path: Path, channel: int | None = None) -> tuple[np.ndarray, str | None]:
    """A grey image (H, W) or stack (Z, H, W) and a note for the user when channels were handled.

    Following the file's own description (tifffile's axes and photometric tag, as Fiji does):
    RGB(A) pictures (TIFF photometric RGB, PNG/JPEG with 3-4 channels, or H×W×3|4 arrays) become the
    mean of R, G and B unless ``channel`` picks one; other multi-channel images (axes C) need
    ``channel``. A (3|4, H, W) TIFF without axes could be channels or a short stack: it stays a
    stack, with a note saying so (``channel`` takes one plane as a channel instead).
    """
    path = Path(path)
    raw = read_image(path)
    tiff = path.suffix.lower() in TIFF_SUFFIXES
    axes, photometric = _axes(path) if tiff else ("YXS"[: raw.ndim] if raw.ndim < 3 else "YXS", 1)
    if not tiff and raw.ndim == 3:
        photometric = 2 if raw.shape[-1] in (3, 4) else 1
    if len(axes) != raw.ndim:
        axes = "Q" * (raw.ndim - 2) + "YX"
    if raw.ndim == 3 and "S" not in axes and "C" not in axes and raw.shape[-1] <= 4 < min(raw.shape[:2]):
        axes, photometric = "YXS", 2 if raw.shape[-1] in (3, 4) else 1  # H×W×3|4: channels last
    where = next((i for i, a in enumerate(axes) if a in "SC"), None)
    if where is None:
        if channel is not None and raw.ndim == 3 and raw.shape[0] <= 4:
            if not 0 <= channel < raw.shape[0]:
                raise UserError(f"--channel {channel} does not exist: the image has {raw.shape[0]} planes", path)
            return raw[channel], None
        if raw.ndim == 3 and raw.shape[0] <= 4:
            return raw, (f"{path.name}: shape {raw.shape} without channel metadata: taken as a {raw.shape[0]}-slice "
                         "stack; if these are colour channels, pass --channel N")
        return raw, None
    n = raw.shape[where]
    if channel is not None:
        if not 0 <= channel < n:
            raise UserError(f"--channel {channel} does not exist: the image has {n} channels", path)
        return np.take(raw, channel, axis=where), None
    if photometric == 2 and n in (3, 4):
        grey = np.take(raw, [0, 1, 2], axis=where).astype(np.float32).mean(axis=where)
        return grey, f"{path.name}: RGB image segmented as grey (mean of R, G, B); --channel N picks one channel"
    if n == 1:
        return np.take(raw, 0, axis=where), None
    raise UserError(f"has {n} channels (axes {axes}): choose one with --channel N", path)


def image_shape(path: Path) -> tuple[int, ...]:
    """The array shape of an image without reading its pixels (TIFF) or by reading it (others)."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tif:
                return tuple(tif.series[0].shape)
        except FileNotFoundError:
            raise UserError("file does not exist", path) from None
        except Exception as exc:
            raise UserError(f"cannot read TIFF ({type(exc).__name__}: {exc})".splitlines()[0], path) from None
    return read_image(path).shape


def read_labels(path: Path) -> np.ndarray:
    """A label image (non-negative integers, 0 = background) of any supported format."""
    labels = read_image(path)
    if labels.dtype.kind not in "uib":
        raise UserError(f"not a label image: pixel type {labels.dtype} is not integer", path)
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise UserError("not a label image: negative labels", path)
    return labels
