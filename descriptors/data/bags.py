"""Weakly-labelled keypoint bags (recipe ``wlrn``): synthetic UKB-like objects, samplers, eval.

The wlrn paper (Markus et al., arXiv 1603.09095) learns descriptors from *bags* of keypoint patches
labelled only at bag level: two bags from two views of the same object match, bags from different
objects do not; keypoint correspondences are never given. It trains on UKB (2550 objects x 4
views; 2200 objects train, the rest validation/test) with 75 keypoints per image.

Synthetic equivalent written here (nothing downloaded):

- an **object** is a square window of a bundled photo (``synth.photo_names(split)``, or of every
  JPG / PNG under ``conf['photo_dir']``, ``photos.find_photos``); windows of
  one photo do not overlap (a gap of ``window_gap`` px), so different objects share no content;
- a **view** of an object is the photo warped by a random homography about that window
  (``synth.random_homography`` + ``synth.warp``) into a canvas of ``view_size + 2 * pad`` px, then
  a photometric change (``synth.photometric``); the canvas margin holds real photo content, so
  patches near the view border are not cut from black;
- a **bag** = the ``bag_size`` strongest DoG keypoints (``descriptors.patches.detect_dog``) detected in the
  central ``view_size`` x ``view_size`` part of one view, cut as 32x32 patches with
  ``descriptors.patches.extract_patches`` (``mr_size``: 12 sigma by default, OpenCV orientation
  converted with ``opencv_angle_to_ori``). Views with fewer keypoints are topped up by repeating
  keypoints (rare; logged), views with fewer than ``min_keypoints`` drop the object.

TRAIN photos make ``split='train'``, TEST photos ``split='test'`` (disjoint): held-out bag pairs
from TEST photos measure the bag-level ROC-AUC of "do these two bags show the same object"
(``bag_pairs`` + ``bag_pair_auc``; the wlrn matching score with tau tuned per descriptor, as the
paper does for its retrieval comparison).

Samplers (bag labels only; keypoint correspondences are never exposed): ``BagTripletSampler``
(the paper's (K, K+, K-) triplets), ``BagBatchSampler`` (K objects x 2 views for the batch-all
loss), ``BagPairSampler`` (pairs labelled match / non-match).

On disk (``<root>/<split>/bags.npz``, written to a temp file then renamed): ``patches`` (M, n, 32,
32) uint8, ``object_ids`` (M,), ``view_ids`` (M,), ``photo`` (M,) photo index, ``photo_names``,
``keypoints`` (M, n, 4) float32 [x, y, size, angle_deg] in view pixels, ``conf`` (JSON string).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from descriptors.patches import MR_SIZE
from descriptors.util import ToolkitError, atomic_write

logger = logging.getLogger(__name__)

DEFAULT_ROOT: str = "datasets/bags-synth"
BAGS_FILE: str = "bags.npz"

BAGS_CONF: dict = {
    "view_size": 128,  # side (px) of the part of a view where keypoints are detected
    "pad": 48,  # canvas margin (px) around it, real photo content
    "window_gap": 16,  # gap (px) between object windows of one photo
    "views_per_object": 4,  # UKB: 4 views per object
    "bag_size": 75,  # keypoints per bag (paper: 75 per image)
    "min_keypoints": 32,  # views with fewer keypoints drop the object
    "homography_strength": 0.25,  # synth.random_homography corner jitter
    "max_rotation_deg": 40.0,
    "scale_range": (0.7, 1.4),
    "photometric_strength": 1.0,
    "contrast_threshold": 0.004,  # DoG threshold (low: small, weakly textured views)
    "min_size": 2.0,  # OpenCV keypoint size range kept (px)
    "max_size": 24.0,
    "min_photo_side": 384,  # small photos are upscaled to at least this
    "max_objects_per_photo": 12,  # windows kept per photo (big photos would dominate)
    "patch_size": 32,
    "mr_size": MR_SIZE,  # patch side in DoG sigmas (12, hloc's support)
    "photo_dir": None,  # folder of JPG / PNG photos (recursive) instead of the bundled
}


class BagsError(ToolkitError, RuntimeError):
    """A bags file is missing or malformed (one-line message naming the file)."""


@dataclass
class BagSet:
    """Bags of keypoint patches with object labels.

    Attributes:
        patches: (M, n, P, P) uint8 patches; bag i = patches[i].
        object_ids: (M,) int64 object of each bag (bags with equal ids match).
        view_ids: (M,) int64 view index of each bag within its object.
        photo: (M,) int64 index into ``photo_names``.
        photo_names: source photo of each photo index.
        keypoints: (M, n, 4) float32 [x, y, size, angle_deg] in the view's pixels.
        conf: generation settings.
    """

    patches: np.ndarray
    object_ids: np.ndarray
    view_ids: np.ndarray
    photo: np.ndarray
    photo_names: list[str]
    keypoints: np.ndarray
    conf: dict

    def __len__(self) -> int:
        return len(self.patches)

    @property
    def bag_size(self) -> int:
        return int(self.patches.shape[1])

    @property
    def n_objects(self) -> int:
        return int(len(np.unique(self.object_ids)))

    def bag_tensor(self, idx: np.ndarray | list[int] | int) -> torch.Tensor:
        """Bags ``idx`` as float32 in [0, 1]: (len(idx), n, 1, P, P); (n, 1, P, P) for an int."""
        x = torch.from_numpy(self.patches[idx].astype(np.float32) / 255.0)
        return x.unsqueeze(-3)


# ----------------------------------------------------------------------------- generation
def _object_windows(h: int, w: int, size: int, pad: int, gap: int) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping ``size`` windows, ``pad`` px from the photo edge."""
    out = []
    span_y, span_x = h - 2 * pad, w - 2 * pad
    ny = max(0, (span_y + gap) // (size + gap))
    nx = max(0, (span_x + gap) // (size + gap))
    if ny == 0 or nx == 0:
        return out
    # centre the grid inside the usable area
    oy = pad + (span_y - (ny * size + (ny - 1) * gap)) // 2
    ox = pad + (span_x - (nx * size + (nx - 1) * gap)) // 2
    for i in range(ny):
        for j in range(nx):
            out.append((ox + j * (size + gap), oy + i * (size + gap)))
    return out


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], np.float64)


def _make_view(
    gray: np.ndarray, x0: int, y0: int, cfg: dict, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One view of the object at window (x0, y0): returns (canvas uint8, xy, size, angle)."""
    from ..patches import detect_dog
    from . import synth

    s, pad = int(cfg["view_size"]), int(cfg["pad"])
    h_loc = synth.random_homography(
        s,
        s,
        rng,
        strength=cfg["homography_strength"],
        max_rotation_deg=cfg["max_rotation_deg"],
        scale_range=tuple(cfg["scale_range"]),
    )
    H = _translation(pad, pad) @ h_loc @ _translation(-x0, -y0)
    canvas = synth.warp(gray, H, (s + 2 * pad, s + 2 * pad))
    canvas = synth.photometric(canvas, rng, cfg["photometric_strength"])
    _, xy, size, angle, _ = detect_dog(
        canvas[pad : pad + s, pad : pad + s],
        max_keypoints=10 * int(cfg["bag_size"]),
        contrast_threshold=cfg["contrast_threshold"],
        min_size=cfg["min_size"],
    )
    keep = size <= cfg["max_size"]
    xy, size, angle = xy[keep] + pad, size[keep], angle[keep]
    n = int(cfg["bag_size"])
    return canvas, xy[:n], size[:n], angle[:n]


def make_bags(
    split: str,
    n_objects: int | None = None,
    seed: int = 0,
    conf: dict | None = None,
    progress: bool = True,
) -> BagSet:
    """Generate a synthetic bag set in memory (see module docstring).

    Args:
        split: ``'train'`` (TRAIN photos) or ``'test'`` (TEST photos).
        n_objects: at most this many objects (random windows over all photos); None = all.
        seed: RNG seed; the output is a deterministic function of the arguments.
        conf: overrides for ``BAGS_CONF``.
    Returns:
        BagSet with ``n_objects * views_per_object`` bags (fewer if windows are dropped).
    """
    from ..patches import extract_patches, opencv_angle_to_ori

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    cfg = {**BAGS_CONF, **(conf or {})}
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, 7])
    from .photos import load_photo_source, photo_list

    names = photo_list(photo_dir=cfg.get("photo_dir") or "", split=split)
    photos = [load_photo_source(nm, gray=True, min_side=int(cfg["min_photo_side"])) for nm in names]
    cands = []
    for pi, g in enumerate(photos):
        wins = _object_windows(
            g.shape[0], g.shape[1], int(cfg["view_size"]), int(cfg["pad"]), int(cfg["window_gap"])
        )
        keep = rng.permutation(len(wins))[: int(cfg["max_objects_per_photo"])]
        cands += [(pi, *wins[k]) for k in sorted(keep)]
    order = rng.permutation(len(cands))
    n_want = len(cands) if n_objects is None else int(n_objects)
    nv, n, ps = int(cfg["views_per_object"]), int(cfg["bag_size"]), int(cfg["patch_size"])
    patches, kps, obj_ids, view_ids, photo_idx = [], [], [], [], []
    n_topped = 0
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # kornia on one small image: threads cost more than they give
    try:
        bar = tqdm(total=n_want, desc=f"bags-synth {split}", disable=None if progress else True)
        for ci in order:
            if len(obj_ids) // max(nv, 1) >= n_want:
                break
            pi, x0, y0 = cands[ci]
            views = [_make_view(photos[pi], x0, y0, cfg, rng) for _ in range(nv)]
            if min(len(v[1]) for v in views) < int(cfg["min_keypoints"]):
                continue
            oid = len(obj_ids) // nv
            for vi, (canvas, xy, size, angle) in enumerate(views):
                if len(xy) < n:  # top up by repeating keypoints
                    rep = rng.choice(len(xy), n - len(xy), replace=True)
                    xy, size, angle = (np.concatenate([a, a[rep]]) for a in (xy, size, angle))
                    n_topped += 1
                p = extract_patches(
                    canvas, xy, size, opencv_angle_to_ori(angle), ps, float(cfg["mr_size"])
                )
                patches.append((p[:, 0].numpy() * 255.0 + 0.5).astype(np.uint8))
                kps.append(
                    np.concatenate([xy, size[:, None], angle[:, None]], 1).astype(np.float32)
                )
                obj_ids.append(oid)
                view_ids.append(vi)
                photo_idx.append(pi)
            bar.update(1)
        bar.close()
    finally:
        torch.set_num_threads(n_threads)
    if not obj_ids:
        raise BagsError(
            f"bags-synth {split}: no window gave {cfg['min_keypoints']} keypoints in all views"
        )
    if len(obj_ids) // nv < n_want and n_objects is not None:
        logger.warning(
            "bags-synth %s: only %d objects (asked for %d)", split, len(obj_ids) // nv, n_want
        )
    if n_topped:
        logger.info("bags-synth %s: %d views topped up to %d keypoints", split, n_topped, n)
    return BagSet(
        np.stack(patches),
        np.asarray(obj_ids, np.int64),
        np.asarray(view_ids, np.int64),
        np.asarray(photo_idx, np.int64),
        list(names),
        np.stack(kps),
        cfg,
    )


def write_bags(bags: BagSet, path: str | Path) -> Path:
    """Write a BagSet to ``path`` (.npz), atomically (``descriptors.util.atomic_write``)."""
    path = Path(path)
    with atomic_write(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            patches=bags.patches,
            object_ids=bags.object_ids,
            view_ids=bags.view_ids,
            photo=bags.photo,
            photo_names=np.array(bags.photo_names),
            keypoints=bags.keypoints,
            conf=np.array(json.dumps(bags.conf)),
        )
    return path


def read_bags(path: str | Path) -> BagSet:
    """Read a bags file (``bags.npz``, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / BAGS_FILE
    if not path.is_file():
        raise BagsError(f"{path}: bags file not found")
    try:
        z = np.load(path, allow_pickle=False)
        bags = BagSet(
            z["patches"],
            z["object_ids"].astype(np.int64),
            z["view_ids"].astype(np.int64),
            z["photo"].astype(np.int64),
            [str(s) for s in z["photo_names"]],
            z["keypoints"],
            json.loads(str(z["conf"])),
        )
    except (KeyError, ValueError, OSError) as e:
        raise BagsError(f"{path}: not a bags file ({type(e).__name__}: {e})") from None
    if bags.patches.ndim != 4 or len(bags.object_ids) != len(bags.patches):
        raise BagsError(
            f"{path}: patches {bags.patches.shape} / object_ids {bags.object_ids.shape} do not fit"
        )
    return bags


def ensure_bags(
    folder: str | Path, n_objects: int | None = None, seed: int = 0, conf: dict | None = None
) -> BagSet:
    """Read ``<folder>/bags.npz``; generate and write it first if missing.

    The photo split is the folder name when it is ``train`` or ``test`` (else ``train``).
    """
    folder = Path(folder)
    f = folder / BAGS_FILE
    if not f.is_file():
        split = folder.name if folder.name in ("train", "test") else "train"
        logger.info("generating synthetic bags (%s photos) in %s", split, folder)
        write_bags(make_bags(split, n_objects=n_objects, seed=seed, conf=conf), f)
    return read_bags(f)


# ----------------------------------------------------------------------------- samplers
def _other_object_bag(
    bags: BagSet, oid: int, rng: np.random.Generator, same_photo: bool = False
) -> int:
    """A random bag of another object (of the same photo as ``oid`` if ``same_photo`` and the
    photo has another object)."""
    pool = np.arange(len(bags))
    if same_photo:
        ph = bags.photo[bags.object_ids == oid][0]
        cand = np.flatnonzero((bags.photo == ph) & (bags.object_ids != oid))
        if len(cand):
            return int(cand[rng.integers(0, len(cand))])
    while True:
        j = int(pool[rng.integers(0, len(pool))])
        if bags.object_ids[j] != oid:
            return j


class _ObjectIndex:
    def __init__(self, bags: BagSet) -> None:
        if bags.n_objects < 2:
            raise ValueError("need bags of at least two objects to sample non-matching pairs")
        self.by_obj = {
            int(o): np.flatnonzero(bags.object_ids == o) for o in np.unique(bags.object_ids)
        }
        self.photo = bags.photo
        # real scenes (``real_bags``): an object spans several photos; then only such objects
        # give matching pairs, from two different photos (two scales of one photo never match)
        multi = [o for o, ix in self.by_obj.items() if len(np.unique(bags.photo[ix])) > 1]
        self.multi_photo = bool(multi)
        self.objs = np.array(
            multi if multi else [o for o, ix in self.by_obj.items() if len(ix) >= 2]
        )
        if len(self.objs) == 0:
            raise ValueError("no object has two views; cannot sample matching bags")

    def matching(self, rng: np.random.Generator) -> tuple[int, int]:
        """Two bags of one object: of two different photos for real scenes, else any two views
        (synthetic objects: one photo each)."""
        o = int(self.objs[rng.integers(0, len(self.objs))])
        if not self.multi_photo:
            i, j = rng.choice(self.by_obj[o], 2, replace=False)
            return int(i), int(j)
        ix = self.by_obj[o]
        i = int(ix[rng.integers(0, len(ix))])
        other = ix[self.photo[ix] != self.photo[i]]
        return i, int(other[rng.integers(0, len(other))])


class BagTripletSampler:
    """Infinite iterator of bag triplets (K, K+, K-) -- the wlrn training unit.

    Each item: ``(anchor, positive, negative)``, each (T, n, 1, P, P) float32 in [0, 1]; anchor[t]
    and positive[t] are two views of one object, negative[t] a bag of another object. Only these
    bag labels are used; keypoint correspondences are never looked at.

    ``same_photo_neg``: probability that the negative is another object cut from the same photo
    as the anchor (same texture statistics, so only keypoint-level evidence separates them;
    without it a net can separate most bags by photo-level texture alone).
    """

    def __init__(
        self,
        bags: BagSet,
        triplets: int,
        rng: np.random.Generator | int | None = None,
        same_photo_neg: float = 0.5,
    ) -> None:
        self.bags = bags
        self.triplets = int(triplets)
        self.same_photo_neg = float(same_photo_neg)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._ix = _ObjectIndex(bags)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self

    def sample_indices(self) -> np.ndarray:
        """(T, 3) bag indices [anchor, positive, negative]."""
        out = []
        for _ in range(self.triplets):
            a, p = self._ix.matching(self.rng)
            same = self.rng.random() < self.same_photo_neg
            out.append(
                (a, p, _other_object_bag(self.bags, int(self.bags.object_ids[a]), self.rng, same))
            )
        return np.asarray(out, np.int64)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.sample_indices()
        return (
            self.bags.bag_tensor(idx[:, 0]),
            self.bags.bag_tensor(idx[:, 1]),
            self.bags.bag_tensor(idx[:, 2]),
        )


class BagBatchSampler:
    """Infinite iterator of bag minibatches for the batch-all wlrn loss.

    Each item ``(bags, object_ids)``: bags (K * V, n, 1, P, P) float32 in [0, 1], ``V`` views of
    each of ``K`` objects; object_ids (K * V,) int64. Objects are drawn ``objects_per_photo`` at
    a time from the same photo (their bags are the hard negatives: same texture statistics, so
    only keypoint-level evidence separates them), the rest of the batch from other photos.
    """

    def __init__(
        self,
        bags: BagSet,
        objects: int,
        rng: np.random.Generator | int | None = None,
        views: int = 2,
        objects_per_photo: int = 2,
    ) -> None:
        self.bags = bags
        self.objects = int(objects)
        self.views = int(views)
        self.per_photo = max(1, int(objects_per_photo))
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._ix = _ObjectIndex(bags)
        if self.objects < 2:
            raise ValueError("a bag batch needs at least two objects")
        if self.objects > len(self._ix.objs):
            logger.warning(
                "bag batch of %d objects capped at the %d available",
                self.objects,
                len(self._ix.objs),
            )
            self.objects = len(self._ix.objs)
        self._by_photo: dict[int, list[int]] = {}
        for o in self._ix.objs:
            ph = int(bags.photo[self._ix.by_obj[int(o)][0]])
            self._by_photo.setdefault(ph, []).append(int(o))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def sample_objects(self) -> list[int]:
        chosen: list[int] = []
        photos = list(self.rng.permutation(sorted(self._by_photo)))
        while len(chosen) < self.objects:
            if not photos:
                photos = list(self.rng.permutation(sorted(self._by_photo)))
            objs = [o for o in self._by_photo[int(photos.pop())] if o not in chosen]
            take = min(self.per_photo, len(objs), self.objects - len(chosen))
            chosen += [int(o) for o in self.rng.choice(objs, take, replace=False)] if take else []
        return chosen

    def sample_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """(K * V,) bag indices and their object ids."""
        idx, lab = [], []
        for o in self.sample_objects():
            cand = self._ix.by_obj[o]
            v = self.rng.choice(cand, min(self.views, len(cand)), replace=False)
            idx += [int(i) for i in v]
            lab += [o] * len(v)
        return np.asarray(idx, np.int64), np.asarray(lab, np.int64)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx, lab = self.sample_indices()
        return self.bags.bag_tensor(idx), torch.from_numpy(lab)


class BagPairSampler:
    """Infinite iterator of labelled bag pairs: ``(bags_a, bags_b, label)``.

    bags_a, bags_b: (B, n, 1, P, P) float32 in [0, 1]; label (B,) float32, 1 = same object (other
    view), 0 = different objects; half of each batch is matching (``pos_frac``).
    """

    def __init__(
        self,
        bags: BagSet,
        batch_size: int,
        rng: np.random.Generator | int | None = None,
        pos_frac: float = 0.5,
    ) -> None:
        self.bags = bags
        self.batch_size = int(batch_size)
        self.pos_frac = float(pos_frac)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._ix = _ObjectIndex(bags)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_pos = int(round(self.batch_size * self.pos_frac))
        rows = []
        for k in range(self.batch_size):
            if k < n_pos:
                a, b = self._ix.matching(self.rng)
                rows.append((a, b, 1))
            else:
                a = int(self.rng.integers(0, len(self.bags)))
                rows.append(
                    (a, _other_object_bag(self.bags, int(self.bags.object_ids[a]), self.rng), 0)
                )
        r = np.asarray(rows, np.int64)
        return (
            self.bags.bag_tensor(r[:, 0]),
            self.bags.bag_tensor(r[:, 1]),
            torch.from_numpy(r[:, 2].astype(np.float32)),
        )


# ----------------------------------------------------------------------------- evaluation
def bag_pairs(
    bags: BagSet,
    rng: np.random.Generator | int | None = 0,
    neg_per_pos: int = 1,
    same_photo_frac: float = 0.5,
) -> np.ndarray:
    """Evaluation pairs: every matching pair (same object, different views) plus
    ``neg_per_pos`` random non-matching pairs per matching one, a share ``same_photo_frac`` of
    them between two objects of the same photo (harder: same texture) -> (K, 3) int64
    [i, j, label]."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    pos = [
        (int(i), int(j), 1)
        for o in np.unique(bags.object_ids)
        for k, i in enumerate(np.flatnonzero(bags.object_ids == o))
        for j in np.flatnonzero(bags.object_ids == o)[k + 1 :]
    ]
    n_neg = neg_per_pos * len(pos)
    n_same = int(round(same_photo_frac * n_neg))
    # photos with >= 2 objects can give same-photo negatives
    multi = [
        p for p in np.unique(bags.photo) if len(np.unique(bags.object_ids[bags.photo == p])) >= 2
    ]
    if not multi:
        n_same = 0
    neg: list[tuple[int, int, int]] = []
    while len(neg) < n_neg:
        if len(neg) < n_same:
            cand = np.flatnonzero(bags.photo == multi[int(rng.integers(0, len(multi)))])
            i, j = (int(cand[v]) for v in rng.integers(0, len(cand), 2))
        else:
            i, j = (int(v) for v in rng.integers(0, len(bags), 2))
        if bags.object_ids[i] != bags.object_ids[j]:
            neg.append((i, j, 0))
    return np.asarray(pos + neg, np.int64).reshape(-1, 3)


@torch.no_grad()
def describe_bags(
    describe: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    bags: BagSet,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Descriptors of every bag: (M, n, D) float32 on CPU.

    Args:
        describe: a model or any callable (B, 1, P, P) float32 [0, 1] -> (B, D).
    """
    was_training = None
    if isinstance(describe, torch.nn.Module):
        was_training = describe.training
        describe.eval()
        if device is None:
            device = next(iter(describe.parameters()), torch.empty(0)).device
    m, n = len(bags), bags.bag_size
    flat = bags.patches.reshape(m * n, *bags.patches.shape[2:])
    out = []
    for i in range(0, len(flat), batch_size):
        x = torch.from_numpy(flat[i : i + batch_size].astype(np.float32) / 255.0)[:, None]
        if device is not None:
            x = x.to(device)
        d = describe(x)
        out.append(torch.as_tensor(d).float().cpu())
    if was_training:
        describe.train()
    return torch.cat(out).reshape(m, n, -1)


def bag_pair_scores(
    desc: torch.Tensor,
    pairs: np.ndarray,
    tau: float | np.ndarray = 0.8,
    beta: float | None = None,
    symmetric: bool = True,
) -> np.ndarray:
    """Bag matching score S(K_i, K_j) of each pair (the wlrn criterion).

    S = fraction of keypoints of K_i whose nearest neighbour in K_j has d^2 <= tau (hard count,
    ``beta=None``) or the sigmoid soft count with ``beta``; ``symmetric`` averages S(i,j), S(j,i).

    Args:
        desc: (M, n, D) bag descriptors (``describe_bags``).
        pairs: (K, >=2) bag index pairs.
        tau: threshold on squared distance; an array gives one column per value.
    Returns:
        (K,) scores, or (K, len(tau)) for an array ``tau``.
    """
    taus = np.atleast_1d(np.asarray(tau, np.float64))
    a, b = desc[torch.from_numpy(pairs[:, 0])], desc[torch.from_numpy(pairs[:, 1])]
    ab = a @ b.transpose(1, 2)
    d2 = ((a * a).sum(-1)[..., None] + (b * b).sum(-1)[:, None, :] - 2 * ab).clamp_min(0)
    mins = [d2.min(2).values]  # (K, n) per keypoint of K_i
    if symmetric:
        mins.append(d2.min(1).values)  # per keypoint of K_j
    cols = []
    for t in taus:
        s = 0.0
        for dm in mins:
            if beta is None:
                s = s + (dm <= t).float().mean(1)
            else:
                s = s + torch.sigmoid(-beta * (dm - t)).mean(1)
        cols.append((s / len(mins)).numpy())
    out = np.stack(cols, 1)
    return out[:, 0] if np.ndim(tau) == 0 else out


def bag_pair_auc(
    describe: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    bags: BagSet,
    pairs: np.ndarray | None = None,
    taus: np.ndarray | None = None,
    beta: float | None = None,
) -> dict:
    """ROC-AUC of "this bag pair shows the same object" from the bag matching score.

    As in the paper's matching-based retrieval, the threshold tau is tuned per descriptor: the AUC
    is computed for each tau of a grid (default squared distances 0.05 .. 2.0) and the best is
    reported with its tau (``auc_by_tau`` keeps all).

    Returns:
        {"auc": best AUC, "tau": its tau, "auc_by_tau": {tau: auc}, "n_pos", "n_neg"}.
    """
    from sklearn.metrics import roc_auc_score

    if pairs is None:
        pairs = bag_pairs(bags)
    if taus is None:
        taus = np.round(np.linspace(0.05, 2.0, 40), 4)
    desc = describe_bags(describe, bags)
    scores = bag_pair_scores(desc, pairs, np.asarray(taus), beta=beta)
    y = pairs[:, 2]
    aucs = {float(t): float(roc_auc_score(y, scores[:, k])) for k, t in enumerate(taus)}
    best = max(aucs, key=aucs.get)
    return {
        "auc": aucs[best],
        "tau": best,
        "auc_by_tau": aucs,
        "n_pos": int(y.sum()),
        "n_neg": int((1 - y).sum()),
    }
