"""COLMAP model files read by hand (no pycolmap): the model-folder check and a fast image list.

A COLMAP model folder holds ``cameras``, ``images`` and ``points3D`` as ``.bin`` (binary) or
``.txt`` (text); pycolmap 4.x also writes ``rigs`` / ``frames``. Reading a whole model with
pycolmap (``localize.colmap.read_model``) loads every 3D point; on the real Aachen model that
takes seconds, so the dataset reader only scans ``images.bin`` / ``images.txt`` for the names
(:func:`read_image_names`).

Bad input -> :class:`ColmapError` (a ``RuntimeError``) with one line naming the file and the
problem; ``localize.colmap`` raises the same class.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from descriptors.util import ToolkitError

PathLike = str | os.PathLike

#: the three files every COLMAP model has (plus ``.bin`` or ``.txt``)
MODEL_FILES = ("cameras", "images", "points3D")


class ColmapError(ToolkitError, RuntimeError):
    """Raised for a missing / corrupt model or database, or malformed input."""


def model_format(path: PathLike) -> str:
    """``".bin"`` or ``".txt"``: the format of the COLMAP model folder ``path``.

    Raises:
        ColmapError naming the folder when it is missing or lacks one of
        cameras / images / points3D in both formats.
    """
    path = Path(path)
    if not path.is_dir():
        raise ColmapError(f"COLMAP model directory not found: {path}")
    for ext in (".bin", ".txt"):
        if all((path / f"{n}{ext}").is_file() for n in MODEL_FILES):
            return ext
    have = sorted(p.name for p in path.iterdir())
    raise ColmapError(
        f"{path} is not a COLMAP model: need cameras/images/points3D .bin or .txt, found {have}"
    )


def _names_from_bin(path: Path) -> dict[int, str]:
    data = path.read_bytes()
    out: dict[int, str] = {}
    try:
        (n,) = struct.unpack_from("<Q", data, 0)
        off = 8
        for _ in range(n):
            (image_id,) = struct.unpack_from("<I", data, off)
            off += 4 + 8 * 7 + 4  # id, qvec, tvec, camera_id
            end = data.index(b"\0", off)
            name = data[off:end].decode("utf-8")
            off = end + 1
            (n2d,) = struct.unpack_from("<Q", data, off)
            off += 8 + 24 * n2d  # (x, y double, point3D_id int64) each
            out[int(image_id)] = name
        if off > len(data):
            raise ValueError("truncated")
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise ColmapError(f"corrupt COLMAP images.bin {path}: {e}") from None
    return out


def _names_from_txt(path: Path) -> dict[int, str]:
    # each image: its line, then its 2D points line (EMPTY for an image without points)
    lines = iter(ln for ln in path.read_text().splitlines() if not ln.startswith("#"))
    out: dict[int, str] = {}
    for ln in lines:
        if not ln.strip():
            continue
        f = ln.split()
        if len(f) < 10:
            raise ColmapError(f"malformed line in {path}: {ln!r}")
        out[int(f[0])] = " ".join(f[9:])
        next(lines, None)
    return out


def read_image_names(model_dir: PathLike) -> dict[int, str]:
    """image_id -> name from ``images.bin`` (or ``images.txt``) WITHOUT loading 3D points.

    Raises:
        ColmapError naming the file if it is missing, truncated or malformed.
    """
    model_dir = Path(model_dir)
    fb, ft = model_dir / "images.bin", model_dir / "images.txt"
    if fb.is_file():
        return _names_from_bin(fb)
    if ft.is_file():
        return _names_from_txt(ft)
    raise ColmapError(f"no images.bin or images.txt in {model_dir}")


__all__ = ["ColmapError", "MODEL_FILES", "model_format", "read_image_names"]
