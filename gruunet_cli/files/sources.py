"""Training sources: what `gruunet train SOURCE...` accepts, found on disk and paired up.

Three layouts, recognised from the folder itself:
- a CTC sequence ``01/`` (``tNNN.tif``) with its reference folder ``01_GT/`` given right after it,
  or found beside it (``01_GT``); optional silver truth ``01_ST/``;
- StarDist's ``DIR/images/NAME.tif`` + ``DIR/masks/NAME.tif``;
- Cellpose's ``DIR/NAME.tif`` + ``DIR/NAME_masks.tif`` (PNG and JPEG images too).

A source is a list of (image, mask) pairs, nothing is read here but file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..errors import UserError
from . import ctc
from .images import is_image


class Layout(str, Enum):
    ctc = "ctc"
    stardist = "stardist"
    cellpose = "cellpose"


@dataclass(frozen=True)
class Source:
    """One training source. For CTC: ``path`` is the sequence, ``gt`` its reference folder."""

    layout: Layout
    path: Path
    gt: Path | None = None
    st: Path | None = None

    def describe(self) -> dict[str, str | None]:
        """What the model file records about this source."""
        return {"layout": self.layout.value, "path": str(self.path),
                "gt": None if self.gt is None else str(self.gt), "st": None if self.st is None else str(self.st)}


def _is_ctc_sequence(folder: Path) -> bool:
    return any(ctc.IMAGE_RE.match(p.name) for p in folder.iterdir())


def _is_gt_folder(folder: Path) -> bool:
    seg = folder / "SEG" if (folder / "SEG").is_dir() else folder
    return seg.is_dir() and any(ctc.SEG_RE.match(p.name) or ctc.SEG_SLICE_RE.match(p.name) for p in seg.iterdir())


def layout_of(folder: Path) -> Layout:
    """Which layout a folder has; a `UserError` naming it when it is none of them."""
    if not folder.exists():
        raise UserError("does not exist", folder)
    if not folder.is_dir():
        raise UserError("not a folder (a training source is a CTC sequence or an image/mask folder)", folder)
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return Layout.stardist
    if _is_ctc_sequence(folder):
        return Layout.ctc
    if any(p.stem.endswith("_masks") and is_image(p) for p in folder.iterdir()):
        return Layout.cellpose
    if _is_gt_folder(folder):
        raise UserError("is a reference folder; give it right after its image sequence (01/ 01_GT/)", folder)
    raise UserError("not a training source: no tNNN.tif (CTC), no images/ + masks/ (StarDist), "
                    "no NAME_masks images (Cellpose)", folder)


def parse(paths: list[Path], st: Path | None = None) -> list[Source]:
    """Positional ``train`` arguments → sources. A CTC sequence takes the next argument as its GT
    when that is a reference folder, else ``NAME_GT`` beside it. ``st`` belongs to the one CTC source."""
    sources: list[Source] = []
    i = 0
    while i < len(paths):
        path = Path(paths[i])
        layout = layout_of(path)
        if layout != Layout.ctc:
            sources.append(Source(layout, path))
            i += 1
            continue
        if i + 1 < len(paths) and Path(paths[i + 1]).is_dir() and _is_gt_folder(Path(paths[i + 1])):
            gt, i = Path(paths[i + 1]), i + 2
        else:
            gt, i = path.parent / f"{path.name}_GT", i + 1
            if not gt.is_dir():
                raise UserError(f"no reference folder: give it after the sequence ({path} {gt}) or put it beside it", path)
        sources.append(Source(Layout.ctc, path, gt))
    if not sources:
        raise UserError("no training source given")
    if st is not None:
        ctc_sources = [k for k, s in enumerate(sources) if s.layout == Layout.ctc]
        if len(ctc_sources) != 1:
            raise UserError("--st needs exactly one CTC sequence among the sources", st)
        k = ctc_sources[0]
        sources[k] = Source(Layout.ctc, sources[k].path, sources[k].gt, Path(st))
    return sources


def _first_with_stem(folder: Path, stem: str) -> Path | None:
    for suffix in (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".TIF", ".TIFF", ".PNG"):
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    return None


def folder_pairs(source: Source) -> list[tuple[str, Path, Path]]:
    """(name, image, mask) of an image/mask folder, sorted by name; an image without a mask is an error."""
    if source.layout == Layout.stardist:
        img_dir, mask_dir = source.path / "images", source.path / "masks"
        images = sorted(p for p in img_dir.iterdir() if is_image(p))
        mask_of = lambda p: _first_with_stem(mask_dir, p.stem)  # noqa: E731
    else:
        img_dir = source.path
        images = sorted(p for p in img_dir.iterdir() if is_image(p) and not p.stem.endswith(("_masks", "_flows")))
        mask_of = lambda p: _first_with_stem(img_dir, p.stem + "_masks")  # noqa: E731
    pairs = []
    for image in images:
        mask = mask_of(image)
        if mask is None:
            where = "masks/" if source.layout == Layout.stardist else f"{image.stem}_masks.*"
            raise UserError(f"image without a mask (expected {where})", image)
        pairs.append((image.stem, image, mask))
    if not pairs:
        raise UserError("no images in this source", img_dir)
    return pairs
