"""Self-supervised training pairs: one photo, two renderings, exact pixel correspondence.

As in HNDesc (Melekhov et al., 3DV 2021, arXiv 2110.04773): a random square crop of a TRAIN
photo, two random homographies ``H_a``, ``H_b`` (``PairSample.H = H_b H_a^-1`` maps A to B), a mild
photometric change on A and a strong one on B (``synth.stylize``, the non-neural stylisation
stand-in: Reinhard colour transfer + edge-preserving smoothing + tone curve; night rendering;
colour shifts). DoG keypoints on the base image are warped into both views, scale and
orientation through the local Jacobian of the homography; keypoints whose patch would leave a
view are dropped. :class:`PairPatchSampler` yields ``(a, p)`` batches of (B, 1, 32, 32) float32
patches in [0, 1], row i of both showing the same scene point, from a lazily refreshed pool.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch

from descriptors.data import synth
from descriptors.data.photos import find_photos, load_photo_source, photo_list
from descriptors.patches import (
    MR_SIZE,
    PATCH_SIZE,
    detect_dog,
    extract_patches,
    opencv_angle_to_ori,
)
from descriptors.util import ToolkitError

logger = logging.getLogger(__name__)


class PairSamplerError(ToolkitError, RuntimeError):
    """The pair pool cannot give a batch of the requested size (one-line message)."""


@dataclass
class PairConf:
    """How one self-supervised pair is made (defaults: training strength)."""

    out_size: int = 256  # side of images A and B, pixels
    scale_range: tuple[float, float] = (0.5, 1.5)  # crop side = out_size / s
    homography_strength: float = 0.25  # synth.random_homography corner jitter
    max_rotation_deg: float = 30.0
    homography_scale: tuple[float, float] = (0.7, 1.3)
    photometric_a: float = 0.5  # synth.photometric strength on A
    photometric_b: float = 1.0  # ... on B
    p_night: float = 0.3  # probability of synth.day_to_night on B
    night_darkness: tuple[float, float] = (0.5, 1.0)
    p_style: float = 0.5  # probability of color_style_shift on B
    p_style_a: float = 0.2  # ... on A
    p_stylize: float = 0.7  # probability of the stylisation stand-in on B (HNDesc 0.7)
    two_homographies: bool = True  # A = warp(base, H_a), B = warp(base, H_b); False: H_a = I
    max_keypoints: int = 300  # DoG keypoints detected in A (strongest first)
    contrast_threshold: float = 0.02
    min_size: float = 2.0  # smallest OpenCV keypoint size kept
    max_size: float = 40.0  # largest (bigger patches mostly leave the 256 px frame)
    border_frac: float = 0.5  # keep if centre is >= border_frac * 3*size from the edge
    dedup_px: float = 2.0  # keypoints closer than this in A: keep the strongest
    photos: tuple[str, ...] = ()  # empty = synth.photo_names('train')
    photo_dir: str = ""  # folder of JPG / PNG photos (recursive); overrides photos
    patch_size: int = PATCH_SIZE
    mr_size: float = MR_SIZE
    #: re-detect DoG in each view and use the detection nearest the mapped keypoint (within
    #: ``redetect_px`` px or a quarter sigma, size ratio within ``redetect_size``, closest
    #: orientation among them): positives carry the detector's own position / scale /
    #: orientation noise, as patches of real tracks and of extraction do; unmatched are dropped
    redetect: bool = False
    redetect_px: float = 2.0
    redetect_size: float = 1.5


@dataclass
class PairSample:
    """One rendered pair with its ground-truth keypoint correspondence (N keypoints kept)."""

    photo: str
    img_a: np.ndarray  # (S, S, 3) uint8
    img_b: np.ndarray  # (S, S, 3) uint8
    H: np.ndarray  # (3, 3) float64, x_B ~ H x_A  (= H_b H_a^-1)
    xy_a: np.ndarray  # (N, 2) float32 pixel centres
    xy_b: np.ndarray  # (N, 2) float32
    size_a: np.ndarray  # (N,) float32 OpenCV KeyPoint.size
    size_b: np.ndarray  # (N,)
    ori_a: np.ndarray  # (N,) float32 radians, kornia convention
    ori_b: np.ndarray  # (N,)
    response: np.ndarray  # (N,) DoG response in A


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Temporarily limit torch intra-op threads (small kornia ops are faster on one thread)."""
    old = torch.get_num_threads()
    if n and n < old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def transfer_keypoints(
    H: np.ndarray, xy: np.ndarray, size: np.ndarray, ori: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map keypoints (xy, OpenCV size, kornia ori in radians) through homography H.

    Position exactly (``H x``); scale by ``sqrt(|det J|)``; orientation from the rotation part
    (polar decomposition) of ``J @ R(ori)`` with kornia's LAF rotation
    ``R(t) = [[cos t, sin t], [-sin t, cos t]]``.
    Returns xy (N, 2) float32, size (N,) float32, ori (N,) float32 radians.
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    ori = np.asarray(ori, np.float64).reshape(-1)
    if len(xy) == 0:
        z = np.zeros((0,), np.float32)
        return np.zeros((0, 2), np.float32), z, z.copy()
    xy_b = synth.apply_homography(H, xy)
    J = synth.homography_jacobian(H, xy)
    det = np.abs(np.linalg.det(J))
    size_b = np.asarray(size, np.float64) * np.sqrt(det)
    c, s = np.cos(ori), np.sin(ori)
    R = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)  # (N, 2, 2)
    M = J @ R
    U, _, Vt = np.linalg.svd(M)
    Q = U @ Vt
    ori_b = np.arctan2(Q[:, 0, 1], Q[:, 0, 0])
    return xy_b.astype(np.float32), size_b.astype(np.float32), ori_b.astype(np.float32)


def _dedup(xy: np.ndarray, resp: np.ndarray, radius: float) -> np.ndarray:
    """Indices of keypoints kept after greedy suppression of weaker ones within ``radius`` px."""
    if len(xy) == 0 or radius <= 0:
        return np.arange(len(xy))
    order = np.argsort(-resp, kind="stable")
    cell = np.floor(xy / radius).astype(np.int64)
    taken: dict[tuple[int, int], list[int]] = {}
    keep = []
    r2 = radius * radius
    for i in order:
        cx, cy = cell[i]
        close = False
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in taken.get((cx + dx, cy + dy), ()):
                    if ((xy[i] - xy[j]) ** 2).sum() < r2:
                        close = True
                        break
                if close:
                    break
            if close:
                break
        if not close:
            keep.append(i)
            taken.setdefault((cx, cy), []).append(i)
    return np.array(sorted(keep), np.int64)


def redetect(
    img: np.ndarray, xy: np.ndarray, size: np.ndarray, ori: np.ndarray, conf: PairConf
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Snap mapped keypoints to the view's own DoG detections (:attr:`PairConf.redetect`).

    Args:
        img: (H, W[, 3]) uint8 view; xy (N, 2) pixel centres, size (N,) OpenCV diameter, ori (N,)
            radians (kornia convention) of the keypoints mapped into it.
    Returns:
        xy (N, 2), size (N,), ori (N,) of the chosen detections (the input where none), and the
        (N,) bool mask of keypoints that found one.
    """
    _, dxy, dsize, dangle, _ = detect_dog(
        synth.to_gray(img),
        3 * max(len(xy), 1),
        contrast_threshold=conf.contrast_threshold,
        min_size=conf.min_size,
    )
    found = np.zeros(len(xy), bool)
    xy, size, ori = xy.copy(), size.copy(), ori.copy()
    if len(dxy) == 0 or len(xy) == 0:
        return xy, size, ori, found
    dori = opencv_angle_to_ori(dangle)
    d2 = ((xy[:, None, :] - dxy[None, :, :]) ** 2).sum(-1)
    radius = np.maximum(conf.redetect_px, size / 8.0)  # a quarter sigma (sigma = size / 2)
    ratio = dsize[None, :] / np.maximum(size[:, None], 1e-6)
    cand = (d2 <= radius[:, None] ** 2) & (ratio <= conf.redetect_size)
    cand &= ratio >= 1.0 / conf.redetect_size
    dang = np.abs(np.angle(np.exp(1j * (dori[None, :] - ori[:, None]))))
    cost = np.where(cand, dang, np.inf)
    best = cost.argmin(1)
    found = np.isfinite(cost[np.arange(len(xy)), best])
    xy[found], size[found], ori[found] = dxy[best[found]], dsize[best[found]], dori[best[found]]
    return xy, size, ori, found


def _inside(xy: np.ndarray, margin: np.ndarray, w: int, h: int) -> np.ndarray:
    return (
        (xy[:, 0] >= margin)
        & (xy[:, 1] >= margin)
        & (xy[:, 0] <= w - 1 - margin)
        & (xy[:, 1] <= h - 1 - margin)
    )


# ------------------------------------------------------------------------------------ one pair
_PHOTO_CACHE: dict[str, np.ndarray] = {}


def _photo(name: str, min_side: int) -> np.ndarray:
    key = f"{name}@{min_side}"
    if key not in _PHOTO_CACHE:
        if len(_PHOTO_CACHE) > 64:
            _PHOTO_CACHE.clear()
        _PHOTO_CACHE[key] = load_photo_source(name, gray=False, min_side=min_side)
    return _PHOTO_CACHE[key]


_NAMES_CACHE: dict[str, list[str]] = {}


def _names(conf: PairConf) -> list[str]:
    """Photo sources of ``conf`` (a photo folder is listed once per process)."""
    if conf.photo_dir:
        key = str(Path(conf.photo_dir).expanduser().resolve())
        if key not in _NAMES_CACHE:
            _NAMES_CACHE[key] = find_photos(key)
        return _NAMES_CACHE[key]
    return photo_list(conf.photos)


def make_pair(
    rng: np.random.Generator, conf: PairConf | None = None, photo: str | None = None
) -> PairSample:
    """Render one self-supervised pair with its exact keypoint correspondence (see module doc).

    Args:
        rng: random generator (all randomness comes from it).
        conf: ``PairConf``; defaults used if None.
        photo: force a photo name; must be a TRAIN photo unless ``conf.photos`` lists it (or a
            file of ``conf.photo_dir``).
    Returns:
        ``PairSample`` (N may be 0 on a textureless crop).
    """
    conf = conf or PairConf()
    names = _names(conf)
    if photo is None:
        photo = names[int(rng.integers(len(names)))]
    elif photo not in names:
        raise ValueError(f"photo '{photo}' is not a training photo (allowed: {', '.join(names)})")
    S = int(conf.out_size)
    lo, hi = conf.scale_range
    s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    img = _photo(photo, min_side=int(np.ceil(S / hi)))
    side = int(round(min(S / s, min(img.shape[:2]))))
    y0 = int(rng.integers(0, img.shape[0] - side + 1))
    x0 = int(rng.integers(0, img.shape[1] - side + 1))
    crop = img[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > S else cv2.INTER_CUBIC
    base = cv2.resize(crop, (S, S), interpolation=interp)
    if rng.random() < 0.5:
        base = np.ascontiguousarray(base[:, ::-1])

    def rand_h() -> np.ndarray:
        return synth.random_homography(
            S,
            S,
            rng,
            strength=conf.homography_strength,
            max_rotation_deg=conf.max_rotation_deg,
            scale_range=conf.homography_scale,
        )

    H_b = rand_h()
    H_a = rand_h() if conf.two_homographies else np.eye(3)
    img_b = synth.warp(base, H_b, (S, S))
    img_a = synth.warp(base, H_a, (S, S)) if conf.two_homographies else base
    if conf.photometric_a > 0:
        img_a = synth.photometric(img_a, rng, conf.photometric_a)
    if rng.random() < conf.p_style_a:
        img_a = synth.color_style_shift(img_a, rng)
    if rng.random() < conf.p_stylize:
        others = [n for n in names if n != photo] or names
        style = others[int(rng.integers(len(others)))]
        img_b = synth.stylize(img_b, rng, _photo(style, min_side=0))
    if conf.photometric_b > 0:
        img_b = synth.photometric(img_b, rng, conf.photometric_b)
    if rng.random() < conf.p_night:
        img_b = synth.day_to_night(img_b, rng, float(rng.uniform(*conf.night_darkness)))
    if rng.random() < conf.p_style:
        img_b = synth.color_style_shift(img_b, rng)

    # keypoints on the clean base image: the DoG detections are the scene points; both views
    # then show them under different geometry and photometry
    _, xy, size, angle, resp = detect_dog(
        synth.to_gray(base),
        conf.max_keypoints,
        contrast_threshold=conf.contrast_threshold,
        min_size=conf.min_size,
    )
    keep = np.nonzero(size <= conf.max_size)[0]
    xy, size, angle, resp = xy[keep], size[keep], angle[keep], resp[keep]
    keep = _dedup(xy, resp, conf.dedup_px)
    xy, size, angle, resp = xy[keep], size[keep], angle[keep], resp[keep]
    ori0 = opencv_angle_to_ori(angle)
    xy_b, size_b, ori_b = transfer_keypoints(H_b, xy, size, ori0)
    if conf.two_homographies:
        xy, size, ori = transfer_keypoints(H_a, xy, size, ori0)
    else:
        ori = ori0
    H = H_b @ np.linalg.inv(H_a)
    H = H / H[2, 2]
    found = np.ones(len(xy), bool)
    if conf.redetect:
        xy_b, size_b, ori_b, found_b = redetect(img_b, xy_b, size_b, ori_b, conf)
        xy, size, ori, found_a = redetect(img_a, xy, size, np.asarray(ori, np.float32), conf)
        found = found_a & found_b
    # half patch side = mr_size * sigma / 2 = mr_size * size / 4 (= 3 * size for MR_SIZE 12)
    ok = (
        _inside(xy, conf.border_frac * 0.25 * conf.mr_size * size, S, S)
        & _inside(xy_b, conf.border_frac * 0.25 * conf.mr_size * size_b, S, S)
        & np.isfinite(xy_b).all(1)
        & (size_b > 0)
        & found
    )
    ok = np.nonzero(ok)[0]
    return PairSample(
        photo=photo,
        img_a=img_a,
        img_b=img_b,
        H=H,
        xy_a=xy[ok].astype(np.float32),
        xy_b=xy_b[ok],
        size_a=size[ok].astype(np.float32),
        size_b=size_b[ok],
        ori_a=np.asarray(ori, np.float32)[ok],
        ori_b=ori_b[ok],
        response=resp[ok],
    )


def pair_patches(
    pair: PairSample, conf: PairConf | None = None, threads: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 patches at the corresponding keypoints of a pair: two (N, 1, P, P) float32 [0, 1]."""
    conf = conf or PairConf()
    with _torch_threads(threads):
        pa = extract_patches(
            pair.img_a,
            pair.xy_a,
            pair.size_a,
            pair.ori_a,
            patch_size=conf.patch_size,
            mr_size=conf.mr_size,
        )
        pb = extract_patches(
            pair.img_b,
            pair.xy_b,
            pair.size_b,
            pair.ori_b,
            patch_size=conf.patch_size,
            mr_size=conf.mr_size,
        )
    return pa, pb


# ------------------------------------------------------------------------------------- sampler
@dataclass
class _PoolEntry:
    pa: torch.Tensor  # (N, 1, P, P) uint8
    pb: torch.Tensor
    weight: np.ndarray  # (N,) sampling weight
    photo: str


class PairPatchSampler:
    """Infinite iterator of ``(a, p)`` patch batches from a lazily grown pool of pairs.

    Args:
        batch_size: B keypoints per batch (distinct: no keypoint twice in a batch).
        rng: ``numpy.random.Generator`` (pairs, crops, batch draws all come from it).
        conf: ``PairConf`` for rendering.
        pool_size: pairs kept in the pool (recycled).
        initial_pairs: pairs generated before the first batch.
        new_per_batch: pairs added per batch while the pool is growing.
        refresh_per_batch: pairs replaced (oldest first) per batch once the pool is full
            (fractional = every 1/x batches; 0 = frozen pool).
        max_per_pair: at most this many keypoints from one pair per batch (0 = B // 8), so each
            batch mixes many images (in-batch negatives mostly from other images, as HNDesc);
            raised to ceil(B / pool_size) when the pool is too small for that.
        weighting: 'uniform' or 'response' (keypoints drawn with probability ~ DoG response,
            the analogue of the difficulty-balancing code's ``--weight_function`` Hessian keypoint
            sampling).
        swap_prob: probability of swapping the roles of A and B for a pair's keypoints.
        return_pair_ids: also yield a (B,) int64 tensor of pool-pair ids.
        pairs_per_batch: 0 = B keypoints spread over the pool as above; K > 0 = HNDesc's
            batches: K distinct pool pairs, each with all its keypoints up to ``max_per_pair``
            (HNDesc: 16 crops x up to 200 keypoints), so B = the sum (<= K * max_per_pair) varies
            and ``batch_size`` is only the capacity the pool must reach before the first batch.
    Yields:
        ``(a, p)`` two (B, 1, P, P) float32 tensors in [0, 1] (``(a, p, ids)`` with ids).
    """

    def __init__(
        self,
        batch_size: int,
        rng: np.random.Generator,
        conf: PairConf | None = None,
        pool_size: int = 200,
        initial_pairs: int = 8,
        new_per_batch: int = 1,
        refresh_per_batch: float = 0.25,
        max_per_pair: int = 0,
        weighting: str = "uniform",
        swap_prob: float = 0.5,
        return_pair_ids: bool = False,
        min_keypoints: int = 4,
        pairs_per_batch: int = 0,
    ):
        if batch_size < 2:
            raise ValueError(f"PairPatchSampler: batch_size must be >= 2, got {batch_size}")
        if weighting not in ("uniform", "response"):
            raise ValueError(
                f"PairPatchSampler: weighting must be 'uniform' or 'response', got '{weighting}'"
            )
        self.batch_size = int(batch_size)
        self.rng = rng
        self.conf = conf or PairConf()
        self.pool_size = max(1, int(pool_size))
        self.initial_pairs = max(1, min(int(initial_pairs), self.pool_size))
        self.new_per_batch = max(0, int(new_per_batch))
        self.refresh_per_batch = float(refresh_per_batch)
        self.max_per_pair = int(max_per_pair) or max(2, self.batch_size // 8)
        self.weighting = weighting
        self.swap_prob = float(swap_prob)
        self.return_pair_ids = return_pair_ids
        self.min_keypoints = int(min_keypoints)
        self.pairs_per_batch = max(0, int(pairs_per_batch))
        self.pool: list[_PoolEntry] = []
        self._next_replace = 0
        self._refresh_debt = 0.0
        self.pairs_made = 0

    # -- pool management
    def _new_entry(self) -> _PoolEntry:
        for _ in range(20):
            pair = make_pair(self.rng, self.conf)
            if len(pair.xy_a) >= self.min_keypoints:
                break
        pa, pb = pair_patches(pair, self.conf)
        self.pairs_made += 1
        w = (
            np.maximum(pair.response, 1e-6)
            if self.weighting == "response"
            else np.ones(len(pa), np.float64)
        )
        to_u8 = lambda t: (t * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)  # noqa: E731
        return _PoolEntry(to_u8(pa), to_u8(pb), np.asarray(w, np.float64), pair.photo)

    def _add(self) -> None:
        e = self._new_entry()
        if len(self.pool) < self.pool_size:
            self.pool.append(e)
        else:
            self.pool[self._next_replace % self.pool_size] = e
            self._next_replace += 1

    def _grow(self) -> None:
        if not self.pool:
            for _ in range(self.initial_pairs):
                self._add()
        elif len(self.pool) < self.pool_size:
            for _ in range(self.new_per_batch):
                self._add()
        else:
            self._refresh_debt += self.refresh_per_batch
            while self._refresh_debt >= 1.0:
                self._add()
                self._refresh_debt -= 1.0
        # make sure a batch of distinct keypoints is possible at all
        tries = 0
        while self._capacity() < self.batch_size:
            self._add()
            tries += 1
            if tries > 10 * self.pool_size:
                raise PairSamplerError(
                    f"self-supervised pairs: cannot fill a batch of {self.batch_size} keypoints "
                    f"from a pool of {len(self.pool)} pairs ({self._capacity()} usable, at most "
                    f"{self._cap()} per pair): lower --batch_size, or raise the option pool_size "
                    "or pair_max_keypoints"
                )

    def _cap(self) -> int:
        """Per-pair keypoint cap: ``max_per_pair``, raised if a full pool could not fill B."""
        return max(self.max_per_pair, -(-self.batch_size // self.pool_size))

    def _capacity(self) -> int:
        return sum(min(len(e.pa), self._cap()) for e in self.pool)

    # -- batches
    def sample(self) -> tuple[torch.Tensor, ...]:
        """One batch (grows / refreshes the pool first)."""
        self._grow()
        B = self.batch_size
        counts = np.array([len(e.pa) for e in self.pool])
        caps = np.minimum(counts, self._cap())
        # how many keypoints from each pair: multinomial over pairs, then capped and topped up
        take = np.zeros(len(self.pool), np.int64)
        remaining = B
        if self.pairs_per_batch:  # HNDesc: K whole crops (up to max_per_pair keypoints)
            k = self.rng.choice(
                len(self.pool), min(self.pairs_per_batch, len(self.pool)), replace=False
            )
            take[k] = np.minimum(counts[k], self.max_per_pair)
            B, remaining = int(take.sum()), 0
        while remaining > 0:
            room = caps - take
            avail = np.nonzero(room > 0)[0]
            prob = room[avail] / room[avail].sum()
            draw = self.rng.multinomial(remaining, prob)
            add = np.minimum(draw, room[avail])
            take[avail] += add
            remaining = B - int(take.sum())
        a_list, p_list, id_list = [], [], []
        for k in np.nonzero(take)[0]:
            e = self.pool[k]
            w = e.weight / e.weight.sum()
            idx = self.rng.choice(len(e.pa), size=int(take[k]), replace=False, p=w)
            idx_t = torch.from_numpy(np.sort(idx))
            pa, pb = e.pa[idx_t], e.pb[idx_t]
            if self.rng.random() < self.swap_prob:
                pa, pb = pb, pa
            a_list.append(pa)
            p_list.append(pb)
            id_list.append(torch.full((len(idx),), int(k), dtype=torch.int64))
        perm = torch.from_numpy(self.rng.permutation(B))
        a = torch.cat(a_list)[perm].float().div_(255.0)
        p = torch.cat(p_list)[perm].float().div_(255.0)
        if self.return_pair_ids:
            return a, p, torch.cat(id_list)[perm]
        return a, p

    def __iter__(self) -> "PairPatchSampler":
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        return self.sample()


def conf_from_options(options: Any) -> PairConf:
    """Build a ``PairConf`` from a recipe's options (a ``RecipeOptions`` with ``pair``, or a dict
    with keys prefixed ``pair_``, e.g. ``pair_out_size``; the option ``photos`` = a photo folder
    sets ``photo_dir``); unknown ``pair_*`` keys raise ValueError."""
    if not isinstance(options, dict):
        from descriptors.recipes import options_dict

        options = options_dict(options)
    conf = PairConf()
    kw = {}
    if options.get("photos"):
        kw["photo_dir"] = str(options["photos"])
    for k, v in options.items():
        if not k.startswith("pair_"):
            continue
        name = k[len("pair_") :]
        if name not in conf.__dataclass_fields__:
            raise ValueError(
                f"unknown pair option '{k}' (PairConf fields: "
                f"{', '.join(conf.__dataclass_fields__)})"
            )
        kw[name] = tuple(v) if isinstance(v, list) else v
    return replace(conf, **kw)


__all__ = [
    "PairConf",
    "PairSample",
    "PairPatchSampler",
    "make_pair",
    "pair_patches",
    "transfer_keypoints",
    "conf_from_options",
]
