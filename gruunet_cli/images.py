"""Reading user images of any common format: TIFF through tifffile, PNG/JPEG through imageio.

CTC data is TIFF; image/mask folders of StarDist and Cellpose users are TIFF or PNG.
Every unreadable file is a one-line `UserError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from .errors import UserError

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
        raise UserError(f"cannot read image ({type(exc).__name__}: {exc})".splitlines()[0], path) from None


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
