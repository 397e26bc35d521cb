"""Brown / UBC PhotoTour patch datasets: the folder format (reader + writer) and the training
pair sampler.

On-disk layout (exactly the real one, see /work/shared/FORMATS.md section 5)::

    <root>/patches0000.bmp, patches0001.bmp, ...   1024x1024 8-bit grayscale sheets, a 16x16
                                                   grid of 64x64 patches, row-major; patch g of
                                                   sheet f has global index f*256 + g; the last
                                                   sheet is only partly filled.
    <root>/info.txt                                one line per patch: "<3D point id> <unused>"
    <root>/interest.txt                            one line per patch (not used by readers)
    <root>/m50_<K>_<K>_0.txt                       pairs: "p1 id1 0 p2 id2 0 0" (7 ints), label
                                                   = id1 == id2; the loaders read cols 0,1,3,4.

``read_phototour`` parses that layout (real liberty / notredame / yosemite folders or the
synthetic ones); ``write_phototour_folder`` / ``make_pairs`` write it (the synthetic set:
``descriptors.data.phototour_synth``; patches from real images: ``localize.make_patches``).

``PatchPairSampler`` yields HardNet-style batches: B distinct 3D points, two different patches of
each, resized 64 -> 32 with ``cv2.INTER_AREA`` on uint8 (as HardNet's ``cv2_scale``,
``descriptors.patches.patches_to_input``), returned as float32 in [0, 1].
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from tqdm import tqdm

from descriptors.patches import patches_to_input
from descriptors.util import ToolkitError, atomic_write

logger = logging.getLogger(__name__)

SHEET_SIZE: int = 1024  # pixels per side of one patchesNNNN.bmp
PATCH: int = 64  # side of a Brown patch
GRID: int = SHEET_SIZE // PATCH  # 16 patches per row / column
PER_SHEET: int = GRID * GRID  # 256 patches per sheet
DEFAULT_PAIRS_FILE: str = "m50_100000_100000_0.txt"


class PhotoTourError(ToolkitError, RuntimeError):
    """A PhotoTour folder is missing or malformed (one-line message naming the file)."""


# ----------------------------------------------------------------------------- reader
@dataclass
class PhotoTourData:
    """One PhotoTour scene.

    Attributes:
        patches: (N, 64, 64) uint8 patches in global patch order.
        point_ids: (N,) int64 3D point id of each patch (info.txt column 0).
        matches: (M, 3) int64 rows [patch_id1, patch_id2, is_match] from the m50 file
            ((0, 3) when the folder has none).
        root: the folder that was read.
        pairs_file: name of the m50 file used ('' if none).
    """

    patches: np.ndarray
    point_ids: np.ndarray
    matches: np.ndarray
    root: Path
    pairs_file: str = ""

    def __len__(self) -> int:
        return len(self.patches)

    @property
    def n_points(self) -> int:
        return int(len(np.unique(self.point_ids)))


def _sheet_files(root: Path) -> list[Path]:
    # torchvision: sorted list of names ending in 'bmp' (4-digit zero padded -> numeric order)
    return sorted(p for p in root.iterdir() if p.name.endswith("bmp"))


def _check_bmp_size(path: Path) -> None:
    """Catch truncated BMPs from the header's declared file size (bfSize)."""
    try:
        with open(path, "rb") as f:
            head = f.read(14)
    except OSError as e:
        raise PhotoTourError(f"{path}: cannot read ({e})") from None
    if len(head) < 14 or head[:2] != b"BM":
        raise PhotoTourError(f"{path}: not a BMP file (bad header)")
    declared = struct.unpack("<I", head[2:6])[0]
    actual = path.stat().st_size
    if actual < declared:
        raise PhotoTourError(f"{path}: truncated BMP ({actual} bytes, header says {declared})")


def _read_sheet(path: Path) -> np.ndarray:
    """Read one 1024x1024 sheet -> (256, 64, 64) uint8 (row-major grid order)."""
    _check_bmp_size(path)
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise PhotoTourError(f"{path}: unreadable or corrupt BMP")
    if img.shape != (SHEET_SIZE, SHEET_SIZE):
        raise PhotoTourError(
            f"{path}: sheet is {img.shape[1]}x{img.shape[0]}, expected {SHEET_SIZE}x{SHEET_SIZE}"
        )
    # (16 rows, 64, 16 cols, 64) -> (row, col, 64, 64): y-major then x-major
    return (
        img.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(PER_SHEET, PATCH, PATCH)
    )


def _read_info(path: Path) -> np.ndarray:
    ids = []
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                ids.append(int(parts[0]))
            except ValueError:
                raise PhotoTourError(
                    f"{path}:{ln}: expected '<pointID> <int>', got {line.strip()[:60]!r}"
                ) from None
    return np.asarray(ids, np.int64)


def find_pairs_file(root: str | Path) -> Path | None:
    """The m50 pairs file of a folder: ``m50_100000_100000_0.txt`` if present, else the first
    ``m50_*.txt`` in sorted order, else None."""
    root = Path(root)
    p = root / DEFAULT_PAIRS_FILE
    if p.is_file():
        return p
    cands = sorted(root.glob("m50_*.txt"))
    return cands[0] if cands else None


def read_pairs(path: str | Path) -> np.ndarray:
    """Parse an ``m50_*.txt`` file -> (M, 3) int64 [patch_id1, patch_id2, is_match].

    Columns read: 0 (patch 1), 1 (point 1), 3 (patch 2), 4 (point 2); is_match = point1 == point2.
    """
    path = Path(path)
    try:
        arr = np.loadtxt(path, dtype=np.int64, ndmin=2)
    except (ValueError, OSError) as e:
        raise PhotoTourError(
            f"{path}: cannot parse pairs file ({str(e).splitlines()[0]})"
        ) from None
    if arr.size == 0:
        return np.zeros((0, 3), np.int64)
    if arr.shape[1] < 5:
        raise PhotoTourError(f"{path}: expected 7 integer columns, got {arr.shape[1]}")
    return np.stack([arr[:, 0], arr[:, 3], (arr[:, 1] == arr[:, 4]).astype(np.int64)], 1)


def read_phototour(
    root: str | Path, max_patches: int | None = None, cache: bool = False, progress: bool = True
) -> PhotoTourData:
    """Read a Brown PhotoTour folder (real or synthetic).

    Args:
        root: the scene folder holding ``patches*.bmp``, ``info.txt`` and ``m50_*.txt``.
        max_patches: keep only the first n patches (and the pairs whose two patches are among
            them); None = all.
        cache: if True, store/read the parsed arrays as ``<root>/<name>.npz`` (full reads only).
        progress: tqdm bar over the sheets.
    Returns:
        PhotoTourData.
    Raises:
        PhotoTourError: missing folder / info.txt, corrupt or truncated sheet, wrong sheet size,
            fewer patches in the sheets than lines in info.txt, out-of-range pair ids.
    """
    root = Path(root)
    if not root.is_dir():
        raise PhotoTourError(f"{root}: PhotoTour folder not found")
    info = root / "info.txt"
    if not info.is_file():
        raise PhotoTourError(f"{info}: missing (one '<pointID> <int>' line per patch)")
    cache_path = root / f"{root.name}.npz"
    pairs_path = find_pairs_file(root)
    if (
        cache
        and max_patches is None
        and cache_path.is_file()
        and cache_path.stat().st_mtime >= info.stat().st_mtime
    ):
        z = np.load(cache_path)
        return PhotoTourData(z["patches"], z["point_ids"], z["matches"], root, str(z["pairs_file"]))

    point_ids = _read_info(info)
    n = len(point_ids)
    if max_patches is not None:
        n = min(n, int(max_patches))
        point_ids = point_ids[:n]
    sheets = _sheet_files(root)
    n_sheets = math.ceil(n / PER_SHEET)
    if len(sheets) * PER_SHEET < n:
        raise PhotoTourError(
            f"{root}: {len(sheets)} patches*.bmp sheets hold at most "
            f"{len(sheets) * PER_SHEET} patches but info.txt lists {n}"
        )
    patches = np.empty((n, PATCH, PATCH), np.uint8)
    it = sheets[:n_sheets]
    if progress and n_sheets > 20:
        it = tqdm(it, desc=f"read {root.name}", unit="sheet", disable=None)
    for f, path in enumerate(it):
        sheet = _read_sheet(path)
        lo = f * PER_SHEET
        k = min(PER_SHEET, n - lo)
        patches[lo : lo + k] = sheet[:k]

    if pairs_path is not None:
        matches = read_pairs(pairs_path)
        if max_patches is not None:
            matches = matches[(matches[:, 0] < n) & (matches[:, 1] < n)]
        elif len(matches) and (matches[:, :2].min() < 0 or matches[:, :2].max() >= n):
            raise PhotoTourError(f"{pairs_path}: patch ids outside [0, {n}) of info.txt")
    else:
        matches = np.zeros((0, 3), np.int64)
    data = PhotoTourData(patches, point_ids, matches, root, pairs_path.name if pairs_path else "")
    if cache and max_patches is None:
        with atomic_write(cache_path) as tmp:
            np.savez(
                tmp,
                patches=patches,
                point_ids=point_ids,
                matches=matches,
                pairs_file=np.array(data.pairs_file),
            )
    return data


def read_phototour_scenes(root: str | Path, progress: bool = True) -> PhotoTourData:
    """One Brown folder, or every Brown scene folder directly under ``root`` concatenated
    (3D point ids and m50 patch indices offset so scenes never share a point), e.g. the same
    images built at several resolutions by ``pipelines.make_patches``.

    Raises:
        PhotoTourError: ``root`` is neither a Brown folder nor holds any.
    """
    root = Path(root)
    if (root / "info.txt").is_file() or not root.is_dir():
        return read_phototour(root, progress=progress)
    scenes = sorted(
        d for d in root.iterdir() if not d.name.startswith(".") and (d / "info.txt").is_file()
    )
    if not scenes:
        raise PhotoTourError(f"{root}: no PhotoTour scene (a folder with info.txt) in it")
    parts = [read_phototour(d, progress=progress) for d in scenes]
    patches, ids, matches = [], [], []
    n_off = id_off = 0
    for d in parts:
        patches.append(d.patches)
        ids.append(d.point_ids + id_off)
        m = d.matches.copy()
        m[:, :2] += n_off
        matches.append(m)
        n_off += len(d)
        id_off += int(d.point_ids.max()) + 1 if len(d) else 0
    logger.info("read %d scenes from %s: %d patches", len(parts), root, n_off)
    return PhotoTourData(
        np.concatenate(patches),
        np.concatenate(ids),
        np.concatenate(matches),
        root,
        "+".join(d.pairs_file for d in parts),
    )


# ----------------------------------------------------------------------------- 64 -> 32
def to_32(patches_uint8: np.ndarray) -> torch.Tensor:
    """(N, 64, 64) uint8 -> (N, 1, 32, 32) float32 tensor in [0, 1] (cv2 INTER_AREA on uint8,
    then / 255, as HardNet's ``cv2_scale`` + ``ToTensor``)."""
    return torch.from_numpy(patches_to_input(patches_uint8, 32, cv2.INTER_AREA))


# ----------------------------------------------------------------------------- pair sampler
class PatchPairSampler:
    """Infinite iterator of HardNet training batches.

    Each batch: ``B`` distinct 3D points (among those with >= 2 patches), two different patches of
    each -> ``(a, p)`` float32 tensors (B, 1, 32, 32) in [0, 1]; row i of ``a`` and ``p`` show the
    same point, rows i != j show different points (so every off-diagonal pair is a negative).

    Args:
        data: a PhotoTourData.
        batch_size: B (capped at the number of usable points).
        rng: numpy Generator or int seed.
        augment: random flip / rot90, the same transform on a[i] and p[i] (HardNet ``fliprot``).
        n_batches: stop after this many batches (None = infinite).
        p_night: probability that p[i] goes through the night model (``synth.day_to_night``,
            darkness uniform in [0.5, 1]): day-night pairs from day-only tracks.
    """

    def __init__(
        self,
        data: PhotoTourData,
        batch_size: int,
        rng: np.random.Generator | int | None = None,
        augment: bool = False,
        n_batches: int | None = None,
        p_night: float = 0.0,
    ) -> None:
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.augment = augment
        self.p_night = float(p_night)
        self.n_batches = n_batches
        self._count = 0
        self.patches32 = to_32(data.patches)  # (N, 1, 32, 32) float32
        self.point_ids = np.asarray(data.point_ids, np.int64)
        order = np.argsort(self.point_ids, kind="stable")
        uniq, start, counts = np.unique(
            self.point_ids[order], return_index=True, return_counts=True
        )
        keep = counts >= 2
        if not keep.any():
            raise ValueError(f"{data.root}: no 3D point has two patches; cannot sample pairs")
        self._order = order
        self._start = start[keep]
        self._counts = counts[keep]
        self.points = uniq[keep]
        self.batch_size = int(min(batch_size, len(self.points)))
        if self.batch_size < batch_size:
            logger.warning(
                "batch size %d capped at %d usable 3D points", batch_size, self.batch_size
            )

    def __len__(self) -> int:
        return self.n_batches if self.n_batches is not None else len(self.points) // self.batch_size

    def sample_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Patch indices (ia, ip) of one batch, each (B,) int64."""
        k = self.rng.choice(len(self.points), self.batch_size, replace=False)
        c = self._counts[k]
        i = np.floor(self.rng.random(len(k)) * c).astype(np.int64)
        j = np.floor(self.rng.random(len(k)) * (c - 1)).astype(np.int64)
        j = j + (j >= i)  # j != i
        ia = self._order[self._start[k] + i]
        ip = self._order[self._start[k] + j]
        return ia, ip

    def _augment(self, a: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = a.shape[0]
        rot = torch.from_numpy(self.rng.random(b) < 0.5)
        flip = torch.from_numpy(self.rng.random(b) < 0.5)
        out = []
        for x in (a, p):
            x = torch.where(rot[:, None, None, None], x.transpose(2, 3), x)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            out.append(x.contiguous())
        return out[0], out[1]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n_batches is not None and self._count >= self.n_batches:
            raise StopIteration
        self._count += 1
        ia, ip = self.sample_indices()
        a = self.patches32[torch.from_numpy(ia)]
        p = self.patches32[torch.from_numpy(ip)]
        if self.augment:
            a, p = self._augment(a, p)
        p = night_patches(p, self.rng, self.p_night)
        return a, p


def night_patches(
    x: torch.Tensor,
    rng: np.random.Generator,
    share: float,
    darkness: tuple[float, float] = (0.5, 1.0),
) -> torch.Tensor:
    """(N, 1, P, P) float [0, 1] -> a copy with a random ``share`` of the rows put through the
    night model (``synth.day_to_night``, darkness uniform in ``darkness``); ``x`` if none."""
    from descriptors.data.synth import day_to_night

    rows = np.flatnonzero(rng.random(len(x)) < share) if share > 0 else []
    if len(rows) == 0:
        return x
    x = x.clone()
    for i in rows:
        u8 = (x[i, 0].cpu().numpy() * 255 + 0.5).astype(np.uint8)
        dark = day_to_night(u8, rng, float(rng.uniform(*darkness)))
        x[i, 0] = torch.from_numpy(dark.astype(np.float32) / 255.0)
    return x


# ----------------------------------------------------------------------------- writer
def make_pairs(
    ids: np.ndarray, photo_of: np.ndarray, k: int, rng: np.random.Generator, same_photo_frac: float
) -> np.ndarray:
    """(2k, 2) patch index pairs: k matching (same id, distinct patches), k non-matching
    (different ids; a share ``same_photo_frac`` of them from the same photo). Shuffled."""
    n = len(ids)
    if k == 0 or n == 0:
        return np.zeros((0, 2), np.int64)
    _, start, counts = np.unique(ids, return_index=True, return_counts=True)  # ids contiguous
    pos_pts = np.flatnonzero(counts >= 2)
    q = rng.integers(0, len(pos_pts), k)
    c = counts[pos_pts[q]]
    i = np.floor(rng.random(k) * c).astype(np.int64)
    j = np.floor(rng.random(k) * (c - 1)).astype(np.int64)
    j = j + (j >= i)
    pos = np.stack([start[pos_pts[q]] + i, start[pos_pts[q]] + j], 1)

    if len(np.unique(ids)) < 2:
        raise ValueError("need at least two 3D points to make non-matching pairs")
    # photos holding >= 2 points can give same-photo negatives
    by_photo = {p: np.flatnonzero(photo_of == p) for p in np.unique(photo_of)}
    multi = np.array([len(np.unique(ids[by_photo[p]])) >= 2 for p in photo_of])
    multi_idx = np.flatnonzero(multi)
    neg = []
    n_same = int(round(k * same_photo_frac)) if len(multi_idx) else 0
    while len(neg) < k:
        if len(neg) < n_same:
            a = int(multi_idx[rng.integers(0, len(multi_idx))])
            cand = by_photo[int(photo_of[a])]
            b = int(cand[rng.integers(0, len(cand))])
        else:
            a, b = (int(x) for x in rng.integers(0, n, 2))
        if ids[a] != ids[b]:
            neg.append((a, b))
    pairs = np.concatenate([pos, np.asarray(neg, np.int64)])
    return pairs[rng.permutation(len(pairs))]


def write_phototour_folder(
    folder: str | Path,
    patches: np.ndarray,
    point_ids: np.ndarray,
    pairs: np.ndarray,
    interest: list | None = None,
) -> None:
    """Write patches / ids / pairs in the exact Brown layout into an existing folder.

    Args:
        patches: (N, 64, 64) uint8.
        point_ids: (N,) int 3D point ids.
        pairs: (M, 2) patch index pairs; the m50 file gets ``p1 id1 0 p2 id2 0 0`` lines and is
            named ``m50_<P>_<Q>_0.txt`` with P matching and Q non-matching pairs.
        interest: optional per-patch tuples written to interest.txt (else the sheet position).
    """
    folder = Path(folder)
    patches = np.asarray(patches, np.uint8)
    n = len(patches)
    for f in range(max(1, math.ceil(n / PER_SHEET))):
        sheet = np.zeros((PER_SHEET, PATCH, PATCH), np.uint8)
        chunk = patches[f * PER_SHEET : (f + 1) * PER_SHEET]
        sheet[: len(chunk)] = chunk
        img = (
            sheet.reshape(GRID, GRID, PATCH, PATCH)
            .transpose(0, 2, 1, 3)
            .reshape(SHEET_SIZE, SHEET_SIZE)
        )
        if not cv2.imwrite(str(folder / f"patches{f:04d}.bmp"), img):
            raise PhotoTourError(f"{folder / f'patches{f:04d}.bmp'}: cv2.imwrite failed")
    with open(folder / "info.txt", "w") as fh:
        fh.writelines(f"{int(i)} 0\n" for i in point_ids)
    with open(folder / "interest.txt", "w") as fh:
        if interest is None:
            interest = [
                (0, 64 * (g % GRID) + 32.0, 64 * (g // GRID) + 32.0, 1.0, 0.0) for g in range(n)
            ]
        for rec in interest:
            # reference image id, x, y, size (OpenCV diameter), orientation (rad, kornia)
            vid, *vals = rec
            fh.write(f"{int(vid)} " + " ".join(f"{v:.3f}" for v in vals) + "\n")
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    ids = np.asarray(point_ids, np.int64)
    is_match = ids[pairs[:, 0]] == ids[pairs[:, 1]] if len(pairs) else np.zeros(0, bool)
    name = f"m50_{int(is_match.sum())}_{int((~is_match).sum())}_0.txt"
    with open(folder / name, "w") as fh:
        fh.writelines(f"{a} {ids[a]} 0 {b} {ids[b]} 0 0\n" for a, b in pairs)
