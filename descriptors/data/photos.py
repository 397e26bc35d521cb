"""Photo folders for the self-supervised and weakly-labelled data generators.

A photo source is a bundled photo name (``synth.ALL_PHOTOS``) or an image file path;
:func:`find_photos` lists a folder's JPG / PNG files (recursive), :func:`load_photo_source` reads
one as uint8, and every failure is a :class:`PhotoError` naming the folder or file.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from descriptors.data import synth
from descriptors.util import ToolkitError

PHOTO_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png")


class PhotoError(ToolkitError, RuntimeError):
    """A photo folder or photo file is unreadable or empty (one-line message naming it)."""


def find_photos(folder: str | Path) -> list[str]:
    """Every JPG / PNG file under ``folder`` (recursive, following symlinked folders,
    case-insensitive suffix), sorted.

    Raises:
        PhotoError: the folder is missing, unreadable or holds no JPG / PNG file.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PhotoError(f"{root}: photo folder not found (or not a folder)")
    if not os.access(root, os.R_OK | os.X_OK):
        raise PhotoError(f"{root}: photo folder is not readable")
    files = sorted(
        str(Path(d) / f)
        for d, _, names in os.walk(root, followlinks=True)
        for f in names
        if Path(f).suffix.lower() in PHOTO_EXTS
    )
    if not files:
        raise PhotoError(f"{root}: no JPG / PNG photos in this folder (searched recursively)")
    return files


def describe_photos(photos: str | Path | None) -> str:
    """What a self-supervised run renders its pairs from (for checkpoints and sidecars)."""
    where = f"the photos under {photos}" if photos else "the bundled TRAIN photos"
    return f"self-supervised pairs rendered from {where}"


def load_photo_source(name: str, gray: bool = False, min_side: int = 0) -> np.ndarray:
    """A bundled photo (``synth.ALL_PHOTOS`` name) or an image file path, as uint8.

    Same output as ``synth.load_photo``: (H, W, 3) RGB or (H, W) gray, upscaled (bicubic) so the
    shorter side is >= ``min_side``. Raises PhotoError naming an unreadable file.
    """
    if name in synth.ALL_PHOTOS:
        return synth.load_photo(name, gray=gray, min_side=min_side)
    bgr = cv2.imread(str(name), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise PhotoError(f"{name}: not a readable JPG / PNG image")
    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if min_side and min(img.shape[:2]) < min_side:
        f = min_side / min(img.shape[:2])
        img = cv2.resize(
            img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_CUBIC
        )
    return synth.to_gray(img) if gray else np.ascontiguousarray(img)


def photo_list(
    photos: tuple[str, ...] | list[str] = (),
    photo_dir: str | Path | None = "",
    split: str = "train",
) -> list[str]:
    """Photo sources of a data generator: ``photo_dir``'s files if given, else the explicit
    ``photos`` names, else the bundled ``split`` photos."""
    if photo_dir:
        return find_photos(photo_dir)
    return list(photos) or synth.photo_names(split)
