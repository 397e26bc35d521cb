"""revisitop (ROxford5k / RParis6k) reader.

Layout (revisitop ``python/dataset.py`` / ``download.py``; see /work/shared/FORMATS.md section 3)::

    <dataset dir>/gnd_<name>.pkl      dict: imlist, qimlist, gnd
    <dataset dir>/jpg/<imname>.jpg    database AND query images, flat folder

- ``imlist`` / ``qimlist``: image names without extension; query images are NOT in ``imlist``.
- ``gnd[i]``: dict with ``bbx`` = [x1, y1, x2, y2] (zero-based, left/top/right/bottom, may be
  floats) and ``easy`` / ``hard`` / ``junk`` = lists of 0-based indices into ``imlist``.
- Queries are cropped to their ``bbx`` exactly as revisitop's Python code does,
  ``PIL.Image.crop(bbx)``: each coordinate is rounded with Python's ``round`` (half to even:
  ``round(2.5) == 2``, ``round(3.5) == 4``), the crop covers columns ``[x1, x2)`` and rows
  ``[y1, y2)`` (right/bottom edge excluded), and parts of the box outside the image are zero
  (black). MATLAB's ``crop_qim.m`` includes x2/y2 and can differ by one pixel; we follow Python.
  Database images are used whole.

The pickle is read by :func:`load_gnd_pickle`, a restricted unpickler that builds only builtin
containers, numbers, strings and numpy arrays (a pickle naming any other callable is refused
before anything runs), and its structure is validated: non-empty name lists of relative names
(``localize.parsers.check_name``), one ``gnd`` dict per query with a ``bbx`` of 4 finite numbers
and ``easy`` / ``hard`` / ``junk`` indices in ``[0, len(imlist))``.

Evaluation (mAP, E / M / H protocols): ``localize.revisitop_eval``. A synthetic set in this
layout: ``localize.data.roxford_synth``.
"""

from __future__ import annotations

import io as _bytes_io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from localize.cli import ToolkitError
from localize.image_io import read_image
from localize.parsers import check_name


class RevisitopError(ToolkitError):
    """Missing or malformed revisitop files."""


#: the only globals a ground-truth pickle may name: builtin containers / numbers and what
#: numpy arrays, dtypes and scalars pickle into (``_codecs.encode``: protocol-2 byte strings)
SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        ("builtins", n)
        for n in (
            "set",
            "frozenset",
            "bytearray",
            "complex",
            "int",
            "float",
            "bool",
            "str",
            "bytes",
            "list",
            "dict",
            "tuple",
        )
    ]
    + [
        (m, n)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in ("_reconstruct", "scalar")
    ]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler building only :data:`SAFE_GLOBALS` (no code runs from the file)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} (only builtin "
                "containers, numbers, strings and numpy arrays)"
            )
        return super().find_class(module, name)


def load_gnd_pickle(path: str | os.PathLike) -> Any:
    """Unpickle a revisitop ground-truth file with :class:`_SafeUnpickler`.

    Raises:
        RevisitopError naming the file when it is unreadable, not a pickle, or names a global
        outside :data:`SAFE_GLOBALS` (nothing from the file is executed).
    """
    try:
        data = Path(path).read_bytes()
        return _SafeUnpickler(_bytes_io.BytesIO(data)).load()
    except OSError as e:
        raise RevisitopError(f"{path}: cannot read ({e.strerror})") from None
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        msg = str(e).splitlines()[0] if str(e) else ""
        raise RevisitopError(
            f"{path}: cannot unpickle it as revisitop ground truth ({type(e).__name__}: {msg})"
        ) from None


def crop_bbx(img: np.ndarray, bbx: Sequence[float]) -> np.ndarray:
    """Crop like ``PIL.Image.crop(bbx)`` (revisitop's Python query cropping).

    Args:
        img: (H, W) or (H, W, C) array.
        bbx: [x1, y1, x2, y2]; each rounded with Python ``round`` (half to even).
    Returns:
        (y2 - y1, x2 - x1[, C]) array of img's dtype: rows [y1, y2), cols [x1, x2); pixels outside
        the image are 0.
    """
    x1, y1, x2, y2 = (int(round(float(v))) for v in bbx)
    h, w = img.shape[:2]
    out = np.zeros((max(y2 - y1, 0), max(x2 - x1, 0)) + img.shape[2:], img.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = img[sy1:sy2, sx1:sx2]
    return out


@dataclass
class RevisitopData:
    """A parsed revisitop dataset.

    Attributes:
        root: dataset directory (holds ``gnd_<name>.pkl`` and ``jpg/``).
        name: ``roxford5k`` or ``rparis6k`` (or any name with a matching pickle).
        imlist: database image names (no extension), n entries.
        qimlist: query image names (no extension), nq entries.
        gnd: nq dicts with ``bbx`` (4,) float64 and ``easy``/``hard``/``junk`` int64 arrays.
    """

    root: Path
    name: str
    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict]
    ext: str = ".jpg"
    qext: str = ".jpg"
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.imlist)

    @property
    def nq(self) -> int:
        return len(self.qimlist)

    @property
    def image_dir(self) -> Path:
        return self.root / "jpg"

    def image_name(self, i: int) -> str:
        """Database image file name relative to ``image_dir`` (e.g. ``all_souls_000013.jpg``)."""
        return self.imlist[i] + self.ext

    def query_name(self, i: int) -> str:
        return self.qimlist[i] + self.qext

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.image_name(i)

    def query_path(self, i: int) -> Path:
        return self.image_dir / self.query_name(i)

    def image(self, i: int) -> np.ndarray:
        """Database image i, (H, W, 3) uint8 RGB, whole."""
        return read_image(self.image_path(i), grayscale=False)

    def query_image(self, i: int, crop: bool = True) -> np.ndarray:
        """Query i as (h, w, 3) uint8 RGB, cropped to ``gnd[i]['bbx']`` (see ``crop_bbx``)."""
        img = read_image(self.query_path(i), grayscale=False)
        return crop_bbx(img, self.gnd[i]["bbx"]) if crop else img

    def check_images(self, max_report: int = 5) -> None:
        """Raise RevisitopError naming the missing image files (database and queries)."""
        paths = [self.image_path(i) for i in range(self.n)] + [
            self.query_path(i) for i in range(self.nq)
        ]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            shown = ", ".join(str(p) for p in missing[:max_report])
            raise RevisitopError(
                f"{self.root}: {len(missing)} of {len(paths)} images missing (e.g. {shown})"
            )


def _index_array(v: Any, n: int, where: str) -> np.ndarray:
    try:
        f = np.asarray(v if v is not None else [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise RevisitopError(f"{where}: expected a list of image indices") from None
    if f.size and not (np.isfinite(f).all() and (f == np.round(f)).all()):
        raise RevisitopError(f"{where}: indices must be integers")
    a = f.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= n):
        raise RevisitopError(f"{where}: index out of range [0, {n})")
    return a


def _name_list(v: Any, where: str) -> list[str]:
    """A non-empty list of image names (no extension), each a relative name inside ``jpg/``."""
    if not isinstance(v, (list, tuple)) or len(v) == 0:
        raise RevisitopError(f"{where}: expected a non-empty list of image names")
    out = []
    for i, x in enumerate(v):
        if not isinstance(x, str):
            raise RevisitopError(f"{where}[{i}]: expected a string, got {type(x).__name__}")
        try:
            out.append(check_name(x, f"{where}[{i}]"))
        except ValueError as e:
            raise RevisitopError(str(e)) from None
    return out


def dataset_dir(root: str | os.PathLike, name: str) -> Path:
    """Directory holding ``gnd_<name>.pkl``: ``root`` itself if it has it, else ``root/name``."""
    root = Path(root)
    if (root / f"gnd_{name}.pkl").is_file():
        return root
    return root / name


def read_revisitop(
    root: str | os.PathLike, name: str = "roxford5k", check_images: bool = True
) -> RevisitopData:
    """Parse a revisitop dataset.

    Args:
        root: the dataset directory (``.../roxford5k`` holding ``gnd_roxford5k.pkl`` and
            ``jpg/``), or its parent (``.../datasets``).
        name: dataset name; the pickle is ``gnd_<name>.pkl``.
        check_images: verify every database / query jpg exists (clear error otherwise).
    """
    d = dataset_dir(root, name)
    pkl = d / f"gnd_{name}.pkl"
    if not pkl.is_file():
        raise RevisitopError(
            f"{pkl}: ground-truth pickle not found (expected the revisitop "
            f"layout <dir>/gnd_{name}.pkl + <dir>/jpg/)"
        )
    cfg = load_gnd_pickle(pkl)
    if not isinstance(cfg, dict):
        raise RevisitopError(f"{pkl}: expected a dict, got {type(cfg).__name__}")
    for key in ("imlist", "qimlist", "gnd"):
        if key not in cfg:
            raise RevisitopError(f"{pkl}: missing key '{key}'")
    imlist = _name_list(cfg["imlist"], f"{pkl}: imlist")
    qimlist = _name_list(cfg["qimlist"], f"{pkl}: qimlist")
    if not isinstance(cfg["gnd"], (list, tuple)) or len(cfg["gnd"]) != len(qimlist):
        n = len(cfg["gnd"]) if isinstance(cfg["gnd"], (list, tuple)) else "not a list"
        raise RevisitopError(f"{pkl}: len(gnd)={n} != len(qimlist)={len(qimlist)}")
    gnd = []
    for i, g in enumerate(cfg["gnd"]):
        where = f"{pkl}: gnd[{i}]"
        if not isinstance(g, dict):
            raise RevisitopError(f"{where}: expected a dict, got {type(g).__name__}")
        if "bbx" not in g:
            raise RevisitopError(f"{where}: missing 'bbx'")
        try:
            bbx = np.asarray(g["bbx"], np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise RevisitopError(f"{where}: bbx must be 4 numbers") from None
        if bbx.size != 4 or not np.isfinite(bbx).all():
            raise RevisitopError(f"{where}: bbx must be 4 finite numbers, got {bbx.tolist()}")
        e = {"bbx": bbx}
        for key in ("easy", "hard", "junk"):
            e[key] = _index_array(g.get(key), len(imlist), f"{where}['{key}']")
        for key in g:
            if key not in e:
                e[key] = g[key]
        gnd.append(e)
    extra = {k: v for k, v in cfg.items() if k not in ("imlist", "qimlist", "gnd")}
    data = RevisitopData(root=d, name=name, imlist=imlist, qimlist=qimlist, gnd=gnd, extra=extra)
    if check_images:
        if not data.image_dir.is_dir():
            raise RevisitopError(f"{data.image_dir}: image folder not found")
        data.check_images()
    return data


def label_stats(data: RevisitopData) -> dict[str, float]:
    """Mean easy / hard / junk counts per query."""
    return {k: float(np.mean([len(g[k]) for g in data.gnd])) for k in ("easy", "hard", "junk")}
