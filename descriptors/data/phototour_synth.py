"""Synthetic PhotoTour: a set in the exact Brown layout from the bundled photos.

``write_synthetic_phototour`` follows the DoG keypoints of a photo through several random
homography + photometric (and sometimes night-style) views, and cuts a 64x64 patch around each
tracked keypoint with ``descriptors.patches.extract_patches`` (the 12-sigma support of every
training patch set), its scale and orientation carried through the local affine approximation
of the homography, so the patches of one 3D point are canonicalised the way Brown's are. TRAIN photos
make the ``train`` split, TEST photos the ``test`` split (disjoint). The folder is written by
``descriptors.data.phototour.write_phototour_folder`` and read by ``read_phototour``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from descriptors.data import synth
from descriptors.data.phototour import PATCH, make_pairs, write_phototour_folder
from descriptors.patches import MR_SIZE, detect_dog, extract_patches, opencv_angle_to_ori
from descriptors.util import atomic_dir

logger = logging.getLogger(__name__)

DEFAULT_SYNTH_ROOT: str = "datasets/phototour-synth"

SYNTH_CONF: dict = {
    "n_views": 6,  # warped views made per photo (each point uses 2..4 of them)
    "homography_strength": 0.2,  # synth.random_homography corner jitter
    "max_rotation_deg": 30.0,
    "scale_range": (0.75, 1.33),
    "photometric_strength": 0.8,
    "night_prob": 0.1,  # probability a view is rendered night-style
    "night_darkness": (0.4, 0.8),
    "contrast_threshold": 0.01,  # DoG detector threshold (low: we want many points)
    "min_size": 2.0,  # smallest DoG keypoint size kept (OpenCV size, pixels)
    "max_size": 48.0,  # largest one (a 6*size patch must fit in the photo)
    "nms_radius": 3.0,  # keypoints closer than this (px) are one 3D point
    "scale_limits": (0.6, 1.7),  # local scale change sqrt|det J| kept in this range
    "max_anisotropy": 1.6,  # ratio of J's singular values kept below this
    "min_photo_side": 384,  # small photos are upscaled to at least this side
    "same_photo_negative_frac": 0.5,  # share of non-matching pairs drawn within one photo
    # detection noise added per view (Brown's patches come from per-image detections):
    "jitter_xy": 0.08,  # centre noise std, in units of the keypoint size
    "jitter_log_scale": 0.07,  # std of log(size) noise
    "jitter_ori_deg": 6.0,  # orientation noise std, degrees
}


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


def transform_keypoints(
    H: np.ndarray, xy: np.ndarray, size: np.ndarray, ori: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carry keypoints (centre, OpenCV size, kornia orientation in radians) through H.

    The local affine map J = dH/dx is approximated by its closest similarity:
    scale = sqrt|det J|; rotation theta_J = atan2(J01 - J10, J00 + J11), which is the angle of
    kornia's rotation matrix [[cos, sin], [-sin, cos]] nearest to J, so ori' = ori + theta_J.

    Returns:
        xy' (N, 2), size' (N,), ori' (N,) radians, scale (N,), anisotropy (N,) = s_max / s_min.
    """
    xy2 = synth.apply_homography(H, xy)
    J = synth.homography_jacobian(H, xy)
    det = np.linalg.det(J)
    scale = np.sqrt(np.abs(det))
    theta = np.arctan2(J[:, 0, 1] - J[:, 1, 0], J[:, 0, 0] + J[:, 1, 1])
    sv = np.linalg.svd(J, compute_uv=False)
    aniso = sv[:, 0] / np.maximum(sv[:, 1], 1e-12)
    aniso[det <= 0] = np.inf  # orientation flipped: reject
    ori2 = np.asarray(ori, np.float64) + theta
    ori2 = (ori2 + np.pi) % (2 * np.pi) - np.pi
    return xy2, np.asarray(size, np.float64) * scale, ori2, scale, aniso


def _photo_tracks(
    name: str, rng: np.random.Generator, conf: dict
) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Detect keypoints in one photo and follow them into ``n_views`` warped views.

    Returns:
        xy (K, 2) reference keypoints; valid (K, V) bool, True where the keypoint stays inside
        the view and is not distorted too much; geo = per view (xy' (K,2), size' (K,),
        ori' (K,) radians) with detection noise added; views = list of V uint8 images.
    """

    gray = synth.load_photo(name, gray=True, min_side=conf["min_photo_side"])
    h, w = gray.shape
    _, xy, size, angle, _ = detect_dog(
        gray,
        max_keypoints=100000,
        contrast_threshold=conf["contrast_threshold"],
        min_size=conf["min_size"],
    )
    ok = size <= conf["max_size"]
    xy, size, angle = xy[ok], size[ok], angle[ok]
    keep = _nms_keypoints(xy, conf["nms_radius"])
    xy, size, angle = xy[keep], size[keep], angle[keep]
    ori = opencv_angle_to_ori(angle).astype(np.float64)

    views, valid, geo = [], [], []
    for _ in range(conf["n_views"]):
        H = synth.random_homography(
            h,
            w,
            rng,
            strength=conf["homography_strength"],
            max_rotation_deg=conf["max_rotation_deg"],
            scale_range=conf["scale_range"],
        )
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
        inside = (
            (xy2[:, 0] - rad >= 0)
            & (xy2[:, 0] + rad <= w - 1)
            & (xy2[:, 1] - rad >= 0)
            & (xy2[:, 1] + rad <= h - 1)
        )
        lo, hi = conf["scale_limits"]
        good = inside & (scale >= lo) & (scale <= hi) & (aniso <= conf["max_anisotropy"])
        views.append(img)
        valid.append(good)
        geo.append((xy2, size2, ori2))
    valid = np.stack(valid, 1)  # (K, V)
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


def write_synthetic_phototour(
    out_root: str | Path,
    split: str,
    n_points: int,
    views_per_point: tuple[int, int] = (2, 4),
    n_pairs: int | None = None,
    seed: int = 0,
    conf: dict | None = None,
    photos: list[str] | None = None,
    progress: bool = True,
) -> Path:
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

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cfg = {**SYNTH_CONF, **(conf or {})}
    vmin, vmax = int(views_per_point[0]), int(views_per_point[1])
    if not 2 <= vmin <= vmax <= cfg["n_views"]:
        raise ValueError(
            f"views_per_point {views_per_point} must satisfy 2 <= min <= max <= "
            f"n_views={cfg['n_views']}"
        )
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
    it = tqdm(photos, desc=f"phototour-synth {split}: views", disable=None if progress else True)
    for name in it:
        xy, valid, geo, views = _photo_tracks(name, rng, cfg)
        usable = np.flatnonzero(valid.sum(1) >= vmin)
        per_photo.append((name, valid, geo, views, usable))
    alloc = _allocate([len(p[4]) for p in per_photo], n_points)
    if sum(alloc) < n_points:
        logger.warning(
            "phototour-synth %s: only %d usable 3D points (asked for %d)",
            split,
            sum(alloc),
            n_points,
        )

    # 2) choose points and views, cut patches
    records = []  # (photo_idx, patch uint8 (k,64,64), view ids, xy, size, ori)
    for pi, ((name, valid, geo, views, usable), k) in enumerate(
        zip(
            tqdm(
                per_photo,
                desc=f"phototour-synth {split}: patches",
                disable=None if progress else True,
            ),
            alloc,
        )
    ):
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
                meta[(int(kp), v)] = (
                    float(xy2[j, 0]),
                    float(xy2[j, 1]),
                    float(size2[j]),
                    float(ori2[j]),
                )
        for kp, vs in zip(chosen, sel):
            records.append(
                (
                    pi,
                    np.stack([cut[(int(kp), int(v))] for v in vs]),
                    [pi * cfg["n_views"] + int(v) for v in vs],
                    [meta[(int(kp), int(v))] for v in vs],
                )
            )

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
    final = Path(out_root) / split
    with atomic_dir(final) as tmp:
        write_phototour_folder(tmp, patches, info_ids, pairs, interest)
    logger.info(
        "wrote %s: %d patches of %d 3D points, %d pairs", final, n_total, len(records), len(pairs)
    )
    return final


def ensure_synthetic_phototour(
    root: str | Path = DEFAULT_SYNTH_ROOT,
    n_train: int = 8000,
    n_test: int = 4000,
    n_test_pairs: int = 10000,
    n_train_pairs: int = 10000,
    seed: int = 0,
) -> Path:
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
