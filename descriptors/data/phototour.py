"""Brown / UBC PhotoTour patch datasets: reader, synthetic writer, training pair sampler.

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
synthetic ones). ``write_synthetic_phototour`` writes the same layout from the bundled photos:
DoG keypoints of a photo are followed through several random homography + photometric (and
sometimes night-style) views, and a 64x64 patch is cut around each tracked keypoint with
``descriptors.patches.extract_patches`` (same 12-sigma support as at test time), its scale and
orientation carried through the local affine approximation of the homography, so the patches of
one 3D point are canonicalised the way Brown's are. TRAIN photos make the ``train`` split, TEST
photos the ``test`` split (disjoint).

``PatchPairSampler`` yields HardNet-style batches: B distinct 3D points, two different patches of
each, resized 64 -> 32 with ``cv2.INTER_AREA`` on uint8 (as HardNet's ``cv2_scale``), returned as
float32 in [0, 1].
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from tqdm import tqdm

from descriptors.data.synth import homography_jacobian  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- constants / conf
SHEET_SIZE: int = 1024            # pixels per side of one patchesNNNN.bmp
PATCH: int = 64                   # side of a Brown patch
GRID: int = SHEET_SIZE // PATCH   # 16 patches per row / column
PER_SHEET: int = GRID * GRID      # 256 patches per sheet
DEFAULT_PAIRS_FILE: str = "m50_100000_100000_0.txt"
DEFAULT_SYNTH_ROOT: str = "datasets/phototour-synth"

SYNTH_CONF: dict = {
    "n_views": 6,                 # warped views made per photo (each point uses 2..4 of them)
    "homography_strength": 0.2,   # synth.random_homography corner jitter
    "max_rotation_deg": 30.0,
    "scale_range": (0.75, 1.33),
    "photometric_strength": 0.8,
    "night_prob": 0.1,            # probability a view is rendered night-style
    "night_darkness": (0.4, 0.8),
    "contrast_threshold": 0.01,   # DoG detector threshold (low: we want many points)
    "min_size": 2.0,              # smallest DoG keypoint size kept (OpenCV size, pixels)
    "max_size": 48.0,             # largest one (a 6*size patch must fit in the photo)
    "nms_radius": 3.0,            # keypoints closer than this (px) are one 3D point
    "scale_limits": (0.6, 1.7),   # local scale change sqrt|det J| kept in this range
    "max_anisotropy": 1.6,        # ratio of J's singular values kept below this
    "min_photo_side": 384,        # small photos are upscaled to at least this side
    "same_photo_negative_frac": 0.5,  # share of non-matching pairs drawn within one photo
    # detection noise added per view (Brown's patches come from per-image detections):
    "jitter_xy": 0.08,            # centre noise std, in units of the keypoint size
    "jitter_log_scale": 0.07,     # std of log(size) noise
    "jitter_ori_deg": 6.0,        # orientation noise std, degrees
}


class PhotoTourError(RuntimeError):
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
        raise PhotoTourError(f"{path}: sheet is {img.shape[1]}x{img.shape[0]}, expected "
                             f"{SHEET_SIZE}x{SHEET_SIZE}")
    # (16 rows, 64, 16 cols, 64) -> (row, col, 64, 64): y-major then x-major
    return img.reshape(GRID, PATCH, GRID, PATCH).transpose(0, 2, 1, 3).reshape(PER_SHEET, PATCH,
                                                                               PATCH)


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
                raise PhotoTourError(f"{path}:{ln}: expected '<pointID> <int>', got "
                                     f"{line.strip()[:60]!r}") from None
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
        raise PhotoTourError(f"{path}: cannot parse pairs file ({str(e).splitlines()[0]})") \
            from None
    if arr.size == 0:
        return np.zeros((0, 3), np.int64)
    if arr.shape[1] < 5:
        raise PhotoTourError(f"{path}: expected 7 integer columns, got {arr.shape[1]}")
    return np.stack([arr[:, 0], arr[:, 3], (arr[:, 1] == arr[:, 4]).astype(np.int64)], 1)


def read_phototour(root: str | Path, max_patches: int | None = None, cache: bool = False,
                   progress: bool = True) -> PhotoTourData:
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
    if cache and max_patches is None and cache_path.is_file() \
            and cache_path.stat().st_mtime >= info.stat().st_mtime:
        z = np.load(cache_path)
        return PhotoTourData(z["patches"], z["point_ids"], z["matches"], root,
                             str(z["pairs_file"]))

    point_ids = _read_info(info)
    n = len(point_ids)
    if max_patches is not None:
        n = min(n, int(max_patches))
        point_ids = point_ids[:n]
    sheets = _sheet_files(root)
    n_sheets = math.ceil(n / PER_SHEET)
    if len(sheets) * PER_SHEET < n:
        raise PhotoTourError(f"{root}: {len(sheets)} patches*.bmp sheets hold at most "
                             f"{len(sheets) * PER_SHEET} patches but info.txt lists {n}")
    patches = np.empty((n, PATCH, PATCH), np.uint8)
    it = sheets[:n_sheets]
    if progress and n_sheets > 20:
        it = tqdm(it, desc=f"read {root.name}", unit="sheet")
    for f, path in enumerate(it):
        sheet = _read_sheet(path)
        lo = f * PER_SHEET
        k = min(PER_SHEET, n - lo)
        patches[lo:lo + k] = sheet[:k]

    if pairs_path is not None:
        matches = read_pairs(pairs_path)
        if max_patches is not None:
            matches = matches[(matches[:, 0] < n) & (matches[:, 1] < n)]
        elif len(matches) and (matches[:, :2].min() < 0 or matches[:, :2].max() >= n):
            raise PhotoTourError(f"{pairs_path}: patch ids outside [0, {n}) of info.txt")
    else:
        matches = np.zeros((0, 3), np.int64)
    data = PhotoTourData(patches, point_ids, matches, root,
                         pairs_path.name if pairs_path else "")
    if cache and max_patches is None:
        tmp = cache_path.with_name(cache_path.name + ".tmp.npz")
        np.savez(tmp, patches=patches, point_ids=point_ids, matches=matches,
                 pairs_file=np.array(data.pairs_file))
        os.replace(tmp, cache_path)
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
    scenes = sorted(d for d in root.iterdir()
                    if not d.name.startswith(".") and (d / "info.txt").is_file())
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
    return PhotoTourData(np.concatenate(patches), np.concatenate(ids), np.concatenate(matches),
                         root, "+".join(d.pairs_file for d in parts))


# ----------------------------------------------------------------------------- 64 -> 32
def resize_patches(patches: np.ndarray, size: int = 32) -> np.ndarray:
    """(N, 64, 64) uint8 -> (N, size, size) uint8 with ``cv2.resize(..., INTER_AREA)`` per patch
    (one call per patch: the multi-channel code path rounds differently; ~8 us a patch)."""
    patches = np.asarray(patches)
    if patches.ndim != 3:
        raise ValueError(f"expected (N, H, W) patches, got shape {patches.shape}")
    n = len(patches)
    if patches.shape[1:] == (size, size):
        return patches.copy()
    out = np.empty((n, size, size), patches.dtype)
    for i in range(n):
        out[i] = cv2.resize(patches[i], (size, size), interpolation=cv2.INTER_AREA)
    return out


def to_32(patches_uint8: np.ndarray) -> torch.Tensor:
    """(N, 64, 64) uint8 -> (N, 1, 32, 32) float32 tensor in [0, 1] (cv2 INTER_AREA on uint8,
    then / 255, as HardNet's ``cv2_scale`` + ``ToTensor``)."""
    small = resize_patches(patches_uint8, 32)
    return torch.from_numpy(small.astype(np.float32) / 255.0)[:, None]


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
    """

    def __init__(self, data: PhotoTourData, batch_size: int,
                 rng: np.random.Generator | int | None = None, augment: bool = False,
                 n_batches: int | None = None) -> None:
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.augment = augment
        self.n_batches = n_batches
        self._count = 0
        self.patches32 = to_32(data.patches)                     # (N, 1, 32, 32) float32
        self.point_ids = np.asarray(data.point_ids, np.int64)
        order = np.argsort(self.point_ids, kind="stable")
        uniq, start, counts = np.unique(self.point_ids[order], return_index=True,
                                        return_counts=True)
        keep = counts >= 2
        if not keep.any():
            raise ValueError(f"{data.root}: no 3D point has two patches; cannot sample pairs")
        self._order = order
        self._start = start[keep]
        self._counts = counts[keep]
        self.points = uniq[keep]
        self.batch_size = int(min(batch_size, len(self.points)))
        if self.batch_size < batch_size:
            logger.warning("batch size %d capped at %d usable 3D points", batch_size,
                           self.batch_size)

    def __len__(self) -> int:
        return self.n_batches if self.n_batches is not None else len(self.points) // \
            self.batch_size

    def sample_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Patch indices (ia, ip) of one batch, each (B,) int64."""
        k = self.rng.choice(len(self.points), self.batch_size, replace=False)
        c = self._counts[k]
        i = np.floor(self.rng.random(len(k)) * c).astype(np.int64)
        j = np.floor(self.rng.random(len(k)) * (c - 1)).astype(np.int64)
        j = j + (j >= i)                                          # j != i
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
        return a, p


# ----------------------------------------------------------------------------- synthetic writer
def _nms_keypoints(xy: np.ndarray, radius: float) -> np.ndarray:
    """Indices of keypoints kept by greedy NMS in the given (strongest-first) order."""
    if len(xy) == 0:
        return np.zeros(0, np.int64)
    cell = max(radius, 1e-3)
    grid: dict[tuple[int, int], list[int]] = {}
    keep = []
    r2 = radius * radius
    for i, (x, y) in enumerate(xy):
        gx, gy = int(x // cell), int(y // cell)
        ok = True
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in grid.get((gx + dx, gy + dy), ()):
                    if (xy[j, 0] - x) ** 2 + (xy[j, 1] - y) ** 2 < r2:
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if ok:
            keep.append(i)
            grid.setdefault((gx, gy), []).append(i)
    return np.asarray(keep, np.int64)


def transform_keypoints(H: np.ndarray, xy: np.ndarray, size: np.ndarray, ori: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carry keypoints (centre, OpenCV size, kornia orientation in radians) through H.

    The local affine map J = dH/dx is approximated by its closest similarity:
    scale = sqrt|det J|; rotation theta_J = atan2(J01 - J10, J00 + J11), which is the angle of
    kornia's rotation matrix [[cos, sin], [-sin, cos]] nearest to J, so ori' = ori + theta_J.

    Returns:
        xy' (N, 2), size' (N,), ori' (N,) radians, scale (N,), anisotropy (N,) = s_max / s_min.
    """
    from .synth import apply_homography

    xy2 = apply_homography(H, xy)
    J = homography_jacobian(H, xy)
    det = np.linalg.det(J)
    scale = np.sqrt(np.abs(det))
    theta = np.arctan2(J[:, 0, 1] - J[:, 1, 0], J[:, 0, 0] + J[:, 1, 1])
    sv = np.linalg.svd(J, compute_uv=False)
    aniso = sv[:, 0] / np.maximum(sv[:, 1], 1e-12)
    aniso[det <= 0] = np.inf                                   # orientation flipped: reject
    ori2 = np.asarray(ori, np.float64) + theta
    ori2 = (ori2 + np.pi) % (2 * np.pi) - np.pi
    return xy2, np.asarray(size, np.float64) * scale, ori2, scale, aniso


def _photo_tracks(name: str, rng: np.random.Generator, conf: dict
                  ) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Detect keypoints in one photo and follow them into ``n_views`` warped views.

    Returns:
        xy (K, 2) reference keypoints; valid (K, V) bool, True where the keypoint stays inside
        the view and is not distorted too much; geo = per view (xy' (K,2), size' (K,),
        ori' (K,) radians) with detection noise added; views = list of V uint8 images.
    """
    from . import synth
    from ..patches import MR_SIZE, detect_dog, opencv_angle_to_ori

    gray = synth.load_photo(name, gray=True, min_side=conf["min_photo_side"])
    h, w = gray.shape
    _, xy, size, angle, _ = detect_dog(gray, max_keypoints=100000,
                                             contrast_threshold=conf["contrast_threshold"],
                                             min_size=conf["min_size"])
    ok = size <= conf["max_size"]
    xy, size, angle = xy[ok], size[ok], angle[ok]
    keep = _nms_keypoints(xy, conf["nms_radius"])
    xy, size, angle = xy[keep], size[keep], angle[keep]
    ori = opencv_angle_to_ori(angle).astype(np.float64)

    views, valid, geo = [], [], []
    for _ in range(conf["n_views"]):
        H = synth.random_homography(h, w, rng, strength=conf["homography_strength"],
                                    max_rotation_deg=conf["max_rotation_deg"],
                                    scale_range=conf["scale_range"])
        img = synth.warp(gray, H)
        img = synth.photometric(img, rng, conf["photometric_strength"])
        if rng.random() < conf["night_prob"]:
            img = synth.day_to_night(img, rng, float(rng.uniform(*conf["night_darkness"])))
        xy2, size2, ori2, scale, aniso = transform_keypoints(H, xy, size, ori)
        k = len(xy2)
        xy2 = xy2 + rng.normal(0, conf["jitter_xy"], (k, 2)) * size2[:, None]
        size2 = size2 * np.exp(rng.normal(0, conf["jitter_log_scale"], k))
        ori2 = ori2 + np.deg2rad(rng.normal(0, conf["jitter_ori_deg"], k))
        # the whole rotated support square (half side MR_SIZE*sigma/2, sigma = size/2) in frame
        rad = MR_SIZE * size2 / 4.0 * math.sqrt(2.0) + 1.0
        inside = ((xy2[:, 0] - rad >= 0) & (xy2[:, 0] + rad <= w - 1)
                  & (xy2[:, 1] - rad >= 0) & (xy2[:, 1] + rad <= h - 1))
        lo, hi = conf["scale_limits"]
        good = inside & (scale >= lo) & (scale <= hi) & (aniso <= conf["max_anisotropy"])
        views.append(img)
        valid.append(good)
        geo.append((xy2, size2, ori2))
    valid = np.stack(valid, 1)                                   # (K, V)
    return xy, valid, geo, views


def _allocate(avail: list[int], total: int) -> list[int]:
    """Split ``total`` over bins with capacities ``avail`` as evenly as possible."""
    alloc = [0] * len(avail)
    left = total
    open_bins = [i for i, a in enumerate(avail) if a > 0]
    while left > 0 and open_bins:
        share = max(1, left // len(open_bins))
        nxt = []
        for i in open_bins:
            take = min(share, avail[i] - alloc[i], left)
            alloc[i] += take
            left -= take
            if alloc[i] < avail[i]:
                nxt.append(i)
            if left == 0:
                break
        open_bins = nxt
    return alloc


def write_synthetic_phototour(out_root: str | Path, split: str, n_points: int,
                              views_per_point: tuple[int, int] = (2, 4),
                              n_pairs: int | None = None, seed: int = 0,
                              conf: dict | None = None, photos: list[str] | None = None,
                              progress: bool = True) -> Path:
    """Write a synthetic PhotoTour folder in the exact Brown layout to ``<out_root>/<split>``.

    Args:
        out_root: parent folder (e.g. ``datasets/phototour-synth``).
        split: ``'train'`` (TRAIN photos) or ``'test'`` (TEST photos); the two are disjoint.
        n_points: number of 3D points wanted (fewer, with a warning, if the photos run out).
        views_per_point: (min, max) patches per 3D point.
        n_pairs: pairs in the m50 file (half matching, half not); default min(10000, ...).
            The file is named ``m50_<K>_<K>_0.txt`` with K = n_pairs // 2.
        seed: RNG seed (the output is a deterministic function of the arguments).
        conf: overrides for ``SYNTH_CONF``.
        photos: a subset of the split's photos to use (default: all of them; tests use 1-2).
    Returns:
        Path of the written folder. Written to a temporary sibling and renamed into place.
    """
    from . import synth
    from ..patches import extract_patches

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cfg = {**SYNTH_CONF, **(conf or {})}
    vmin, vmax = int(views_per_point[0]), int(views_per_point[1])
    if not 2 <= vmin <= vmax <= cfg["n_views"]:
        raise ValueError(f"views_per_point {views_per_point} must satisfy 2 <= min <= max <= "
                         f"n_views={cfg['n_views']}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    split_photos = synth.photo_names(split)
    if photos is None:
        photos = split_photos
    else:
        bad = [p for p in photos if p not in split_photos]
        if bad:
            raise ValueError(f"photos {bad} are not {split} photos (train/test must stay disjoint)")

    # 1) tracks per photo
    per_photo = []
    it = tqdm(photos, desc=f"phototour-synth {split}: views", disable=not progress)
    for name in it:
        xy, valid, geo, views = _photo_tracks(name, rng, cfg)
        usable = np.flatnonzero(valid.sum(1) >= vmin)
        per_photo.append((name, valid, geo, views, usable))
    alloc = _allocate([len(p[4]) for p in per_photo], n_points)
    if sum(alloc) < n_points:
        logger.warning("phototour-synth %s: only %d usable 3D points (asked for %d)", split,
                       sum(alloc), n_points)

    # 2) choose points and views, cut patches
    records = []          # (photo_idx, patch uint8 (k,64,64), view ids, xy, size, ori)
    for pi, ((name, valid, geo, views, usable), k) in enumerate(
            zip(tqdm(per_photo, desc=f"phototour-synth {split}: patches",
                     disable=not progress), alloc)):
        if k == 0:
            continue
        chosen = np.sort(rng.choice(usable, k, replace=False))
        # per point, its views
        sel = []
        for kp in chosen:
            vs = np.flatnonzero(valid[kp])
            nv = int(rng.integers(vmin, vmax + 1))
            nv = min(nv, len(vs))
            sel.append(np.sort(rng.choice(vs, nv, replace=False)))
        # group extraction by view
        cut: dict[tuple[int, int], np.ndarray] = {}
        meta: dict[tuple[int, int], tuple[float, float, float, float]] = {}
        for v in range(len(views)):
            kps = [kp for kp, vs in zip(chosen, sel) if v in vs]
            if not kps:
                continue
            kps = np.asarray(kps)
            xy2, size2, ori2 = (g[kps] for g in geo[v])
            p = extract_patches(views[v], xy2, size2, ori2, patch_size=PATCH)
            p = (p[:, 0].numpy() * 255.0 + 0.5).astype(np.uint8)
            for j, kp in enumerate(kps):
                cut[(int(kp), v)] = p[j]
                meta[(int(kp), v)] = (float(xy2[j, 0]), float(xy2[j, 1]), float(size2[j]),
                                      float(ori2[j]))
        for kp, vs in zip(chosen, sel):
            records.append((pi, np.stack([cut[(int(kp), int(v))] for v in vs]),
                            [pi * cfg["n_views"] + int(v) for v in vs],
                            [meta[(int(kp), int(v))] for v in vs]))

    # 3) order: shuffle points, patches of one point contiguous, ids 0..P-1
    perm = rng.permutation(len(records))
    patches, info_ids, photo_of, interest = [], [], [], []
    for new_id, r in enumerate(perm):
        pi, pt, vids, mt = records[r]
        patches.append(pt)
        info_ids += [new_id] * len(pt)
        photo_of += [pi] * len(pt)
        interest += [(vid, *m) for vid, m in zip(vids, mt)]
    patches = np.concatenate(patches) if patches else np.zeros((0, PATCH, PATCH), np.uint8)
    info_ids = np.asarray(info_ids, np.int64)
    photo_of = np.asarray(photo_of, np.int64)

    # 4) pairs
    n_total = len(patches)
    if n_pairs is None:
        n_pairs = min(10000, 2 * n_total)
    pairs = make_pairs(info_ids, photo_of, n_pairs // 2, rng, cfg["same_photo_negative_frac"])

    # 5) write to a temp folder, then rename
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / split
    tmp = out_root / f".{split}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_phototour_folder(tmp, patches, info_ids, pairs, interest)
    if final.exists():
        old = out_root / f".{split}.old-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(tmp, final)
    logger.info("wrote %s: %d patches of %d 3D points, %d pairs", final, n_total,
                len(records), len(pairs))
    return final


def make_pairs(ids: np.ndarray, photo_of: np.ndarray, k: int, rng: np.random.Generator,
                same_photo_frac: float) -> np.ndarray:
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


def write_phototour_folder(folder: str | Path, patches: np.ndarray, point_ids: np.ndarray,
                           pairs: np.ndarray, interest: list | None = None) -> None:
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
        chunk = patches[f * PER_SHEET:(f + 1) * PER_SHEET]
        sheet[:len(chunk)] = chunk
        img = sheet.reshape(GRID, GRID, PATCH, PATCH).transpose(0, 2, 1, 3).reshape(SHEET_SIZE,
                                                                                    SHEET_SIZE)
        if not cv2.imwrite(str(folder / f"patches{f:04d}.bmp"), img):
            raise PhotoTourError(f"{folder / f'patches{f:04d}.bmp'}: cv2.imwrite failed")
    with open(folder / "info.txt", "w") as fh:
        fh.writelines(f"{int(i)} 0\n" for i in point_ids)
    with open(folder / "interest.txt", "w") as fh:
        if interest is None:
            interest = [(0, 64 * (g % GRID) + 32.0, 64 * (g // GRID) + 32.0, 1.0, 0.0)
                        for g in range(n)]
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


def ensure_synthetic_phototour(root: str | Path = DEFAULT_SYNTH_ROOT, n_train: int = 8000,
                               n_test: int = 4000, n_test_pairs: int = 10000,
                               n_train_pairs: int = 10000, seed: int = 0) -> Path:
    """Write ``<root>/train`` and ``<root>/test`` if either is missing; return ``root``.

    Args:
        n_train, n_test: 3D points per split (~3 patches each).
        n_test_pairs, n_train_pairs: pairs in each split's m50 file (half matching).
    """
    root = Path(root)
    for split, n, npairs in (("train", n_train, n_train_pairs), ("test", n_test, n_test_pairs)):
        if not (root / split / "info.txt").is_file():
            logger.info("generating synthetic PhotoTour %s split in %s", split, root)
            write_synthetic_phototour(root, split, n, n_pairs=npairs, seed=seed)
    return root
