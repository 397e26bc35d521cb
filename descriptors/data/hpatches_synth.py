"""Synthetic HPatches: a set in the real hpatches-release layout from the bundled photos.

The synthetic writer (:func:`write_synthetic_hpatches`) emits exactly that layout under
``<root>/hpatches-release`` and ``<root>/tasks`` (split ``full``, ``illum``, ``view`` in
``splits.json``; task csvs for split ``full``), plus the full images in the hpatches-sequences
layout ``<root>/images/<seq>/{1..6}.png`` + ``H_1_k`` (for full-image matching) and
``<root>/meta.json`` (photos, jitter levels, measured overlaps).

How the synthetic patches are made (mirrors the HPatches construction, see the
hpatches-dataset README: detect in the reference image, jitter the frame, reproject to the
target image with the ground-truth homography):

1. a TEST photo (``descriptors.data.synth.photo_names('test')``) is the reference image 1;
2. image k = 2..6 (target k-1 = 1..5 of the release) is the photo warped by ``H_1_k`` and
   photometrically changed. ``i_`` sequences: ``H_1_k = I`` and an illumination change of
   growing strength (``synth.photometric``, strength 0.5 + 0.2 k). ``v_`` sequences: a random
   homography of growing strength (``synth.random_homography``, perspective 0.04 + 0.03 k,
   rotation up to 6 k degrees, scale 2^[-0.1 k, 0.1 k]) and only a mild photometric change
   (strength 0.15), as in real viewpoint sequences shot minutes apart;
3. DoG keypoints (``descriptors.patches.detect_dog``) of image 1, greedy suppression of near duplicates,
   kept when every jittered frame lies inside every target image; the strongest ``n_patches``;
4. ``ref`` = upright-by-DoG-orientation patch at the keypoint; ``e/h/t k`` = the same frame with
   an affine jitter (below) in reference coordinates, mapped into image k by the local affine
   approximation of ``H_1_k`` (its Jacobian at the jittered centre), then sampled;
5. every patch is 65x65 with the toolkit's support (side = ``MR_SIZE`` sigma = 6 * kp.size).
   ``ref`` is cut by ``descriptors.patches.extract_patches(..., patch_size=65)``; jittered
   patches need an anisotropic frame that ``extract_patches`` cannot express, so they go
   through :func:`_extract_affine_patches`, the same kornia sampler with the same LAF scale
   convention (identical output to ``extract_patches`` for an identity jitter; tested).

Jitter levels (our choice; uniform in +-amplitude, drawn independently per patch and per target
image). The hpatches-dataset README gives median ellipse overlaps with the original frame of
~0.85 (easy) and ~0.72 (hard); the amplitudes below were tuned so that the median IoU of the
jittered and exact square regions is 0.86 / 0.72 / 0.61 (measured on every generated set and
stored in meta.json as ``overlap_median``; tough, absent from that README, set to ~0.6):

=====  ===========  =================  ==============  ============================
level  rotation     position (x, y)    scale           anisotropy (axes a : 1/a,
                    (frac. of side)    (x 2^u)         a = 2^v, random direction)
=====  ===========  =================  ==============  ============================
e      +-8 deg      +-0.06             u in +-0.12     v in [0, 0.12]
h      +-18 deg     +-0.13             u in +-0.26     v in [0, 0.26]
t      +-30 deg     +-0.20             u in +-0.40     v in [0, 0.40]
=====  ===========  =================  ==============  ============================

Readers, format writers and the task generators: ``descriptors.data.hpatches``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    import torch

from descriptors.data import synth
from descriptors.data.hpatches import (
    LEVELS,
    PATCH_SIZE,
    HPatchesError,
    build_splits,
    make_retrieval_lists,
    make_verification_pairs,
    write_image_sequence,
    write_patch_file,
    write_tasks,
)
from descriptors.data.synth import homography_jacobian
from descriptors.patches import MR_SIZE, detect_dog, extract_patches, opencv_angle_to_ori
from descriptors.util import atomic_dir, write_json

logger = logging.getLogger(__name__)


@dataclass
class JitterLevel:
    """Amplitudes of the affine jitter of one level (uniform in +-amplitude)."""

    rot_deg: float
    pos_frac: float  # of the patch side, per axis
    scale_log2: float  # scale factor 2^u, u in +-scale_log2
    aniso_log2: float  # axis ratio a:1/a with a = 2^v, v in [0, aniso_log2], random axis


JITTER: dict[str, JitterLevel] = {
    "e": JitterLevel(rot_deg=8.0, pos_frac=0.06, scale_log2=0.12, aniso_log2=0.12),
    "h": JitterLevel(rot_deg=18.0, pos_frac=0.13, scale_log2=0.26, aniso_log2=0.26),
    "t": JitterLevel(rot_deg=30.0, pos_frac=0.20, scale_log2=0.40, aniso_log2=0.40),
}


@dataclass
class SynthConf:
    """Defaults of :func:`write_synthetic_hpatches`."""

    image_side: int = 480  # long side of the reference image, pixels
    min_kp_size: float = 3.0  # OpenCV kp.size floor (smaller blobs give blurry patches)
    contrast_threshold: float = 0.02
    max_patch_side: float = 0.25  # drop frames wider than this fraction of the short side
    photometric_i: tuple[float, float] = (0.5, 0.2)  # strength = a + b k for i_ sequences
    photometric_v: float = 0.15
    homography_strength: tuple[float, float] = (0.04, 0.03)  # perspective a + b k
    rotation_per_k: float = 6.0  # degrees, max rotation = k * this
    scale_log2_per_k: float = 0.1
    verif_pairs_per_patch: int = 10  # verification pairs per patch of the split
    queries_frac: float = 0.25  # fraction of the ref patches used as retrieval queries
    jitter: dict = field(default_factory=lambda: {k: asdict(v) for k, v in JITTER.items()})


def _rot(a: np.ndarray) -> np.ndarray:
    """(..., ) radians -> (..., 2, 2) rotation matrices."""
    c, s = np.cos(a), np.sin(a)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _ref_lafs(xy: np.ndarray, size: np.ndarray, ori: np.ndarray, mr_size: float) -> np.ndarray:
    """(N, 2, 3) kornia LAFs exactly as ``extract_patches`` builds them."""
    import kornia.feature as KF
    import torch

    half = mr_size * (np.asarray(size, np.float32) / 2.0) / 2.0
    c = torch.from_numpy(np.asarray(xy, np.float32))[None]
    s = torch.from_numpy(half)[None, :, None, None]
    o = torch.from_numpy(np.rad2deg(np.asarray(ori, np.float32)))[None, :, None]
    return KF.laf_from_center_scale_ori(c, s, o)[0].numpy().astype(np.float64)


def _extract_affine_patches(
    images: list[np.ndarray], lafs: list[np.ndarray], patch_size: int = PATCH_SIZE
) -> list[np.ndarray]:
    """Sample patches at general affine frames with the sampler of ``extract_patches``
    (kornia ``extract_patches_from_pyramid``), all images in one batched call.

    Args:
        images: B arrays (H, W) uint8 grayscale, all the same size.
        lafs: B arrays (N, 2, 3) kornia LAFs [A | centre] (A maps [-1, 1]^2 to pixels), same N.
    Returns:
        B arrays (N, P, P) uint8.
    """
    import kornia.feature as KF
    import torch

    n = len(lafs[0]) if lafs else 0
    if n == 0:
        return [np.zeros((0, patch_size, patch_size), np.uint8) for _ in images]
    img = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)[:, None]
    laf = torch.from_numpy(np.stack(lafs).astype(np.float32))
    with torch.no_grad():
        p = KF.extract_patches_from_pyramid(img, laf, patch_size)[:, :, 0]
    p = p.clamp_(0, 1).numpy()
    return list((p * 255.0 + 0.5).astype(np.uint8))


def _to_uint8(p: torch.Tensor) -> np.ndarray:
    """(N, P, P) float tensor in [0, 1] -> uint8 (rounded)."""
    a = p.detach().cpu().numpy()
    return (np.clip(a, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _sample_jitter(
    rng: np.random.Generator, n: int, lvl: JitterLevel
) -> tuple[np.ndarray, np.ndarray]:
    """-> J (n, 2, 2) (acts on unit-square patch coords) and t (n, 2) centre shift in units of
    the patch side (in the patch frame)."""
    dth = np.deg2rad(rng.uniform(-lvl.rot_deg, lvl.rot_deg, n))
    sc = 2.0 ** rng.uniform(-lvl.scale_log2, lvl.scale_log2, n)
    a = 2.0 ** rng.uniform(0, lvl.aniso_log2, n)
    phi = rng.uniform(0, np.pi, n)
    D = np.zeros((n, 2, 2))
    D[:, 0, 0], D[:, 1, 1] = np.sqrt(a), 1.0 / np.sqrt(a)
    J = sc[:, None, None] * _rot(dth) @ _rot(phi) @ D @ _rot(-phi)
    t = rng.uniform(-lvl.pos_frac, lvl.pos_frac, (n, 2))
    return J, t


_UNIT_SQUARE = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)


def _laf_corners(lafs: np.ndarray) -> np.ndarray:
    """(N, 2, 3) -> (N, 4, 2) pixel corners of the sampled square."""
    return np.einsum("nij,kj->nki", lafs[:, :, :2], _UNIT_SQUARE) + lafs[:, None, :, 2]


def _square_iou(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """IoU of convex quads (N, 4, 2) pairwise."""
    out = np.zeros(len(c1))
    for i, (a, b) in enumerate(zip(c1, c2)):
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        inter, _ = cv2.intersectConvexConvex(a32, b32)
        ua, ub = abs(cv2.contourArea(a32)), abs(cv2.contourArea(b32))
        out[i] = inter / max(ua + ub - inter, 1e-9)
    return out


def _jittered_lafs(
    ref_lafs: np.ndarray, J: np.ndarray, t: np.ndarray, H: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Jitter reference LAFs in the patch frame, then map into the target image through the
    local affine approximation of H. Returns (lafs in reference image, lafs in target image)."""
    A = ref_lafs[:, :, :2]
    c = ref_lafs[:, :, 2]
    # shift t is a fraction of the side (= 2 units of the unit square)
    c_j = c + np.einsum("nij,nj->ni", A, 2.0 * t)
    A_j = A @ J
    ref_j = np.concatenate([A_j, c_j[:, :, None]], 2)
    c_k = synth.apply_homography(H, c_j)
    A_k = homography_jacobian(H, c_j) @ A_j
    return ref_j, np.concatenate([A_k, c_k[:, :, None]], 2)


def _suppress(xy: np.ndarray, size: np.ndarray, min_dist_frac: float = 0.5) -> np.ndarray:
    """Greedy suppression (input sorted strongest first): drop a keypoint closer than
    ``min_dist_frac * size`` to a kept one of similar scale (ratio < 1.5). Returns kept indices."""
    xy = np.asarray(xy, np.float64)
    size = np.asarray(size, np.float64)
    kept = np.zeros(len(xy), bool)
    for i in range(len(xy)):
        if kept.any():
            r = size[i] / size[kept]
            d = np.hypot(*(xy[kept] - xy[i]).T)
            clash = (
                (r > 1 / 1.5) & (r < 1.5) & (d < min_dist_frac * np.maximum(size[i], size[kept]))
            )
            if clash.any():
                continue
        kept[i] = True
    return np.flatnonzero(kept)


def _resize_long_side(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = side / max(h, w)
    if abs(s - 1) < 1e-6:
        return img
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


def make_sequence_images(
    photo: np.ndarray, kind: str, rng: np.random.Generator, conf: SynthConf | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images 1..6 of one synthetic sequence and H_1_k.

    Args:
        photo: (H, W, 3) uint8 reference image (image 1).
        kind: ``'i'`` (illumination only, H = I) or ``'v'`` (homography + mild photometric).
    Returns:
        images (6 arrays, same size as photo), homographies (5 arrays (3, 3), H_1_2..H_1_6).
    """
    conf = conf or SynthConf()
    h, w = photo.shape[:2]
    imgs, Hs = [photo], []
    for k in range(1, 6):
        if kind == "i":
            H = np.eye(3)
            img = synth.photometric(photo, rng, conf.photometric_i[0] + conf.photometric_i[1] * k)
        elif kind == "v":
            a, b = conf.homography_strength
            H = synth.random_homography(
                h,
                w,
                rng,
                strength=a + b * k,
                max_rotation_deg=conf.rotation_per_k * k,
                scale_range=(2 ** (-conf.scale_log2_per_k * k), 2 ** (conf.scale_log2_per_k * k)),
            )
            img = synth.photometric(synth.warp(photo, H), rng, conf.photometric_v)
        else:
            raise ValueError(f"unknown sequence kind {kind!r} (expected 'i' or 'v')")
        imgs.append(img)
        Hs.append(H)
    return imgs, Hs


def make_sequence_patches(
    images: list[np.ndarray],
    Hs: list[np.ndarray],
    n_patches: int,
    rng: np.random.Generator,
    conf: SynthConf | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Patches of one sequence in the release layout from its 6 images and H_1_k.

    Returns:
        ({type: (N, 65, 65) uint8}, info) with info = {"keypoints": (N, 4) x, y, size, angle,
        "iou": {level: (5N,) IoU of the jittered vs the exact frame}}.
    """
    conf = conf or SynthConf()
    levels = {k: JitterLevel(**v) if isinstance(v, dict) else v for k, v in conf.jitter.items()}
    gray = [synth.to_gray(im) for im in images]
    h, w = gray[0].shape
    _, xy, size, angle, _ = detect_dog(
        gray[0],
        max_keypoints=max(8 * n_patches, 200),
        contrast_threshold=conf.contrast_threshold,
        min_size=conf.min_kp_size,
    )
    side = MR_SIZE * size / 2.0
    ok = side <= conf.max_patch_side * min(h, w)
    xy, size, angle = xy[ok], size[ok], angle[ok]
    keep = _suppress(xy, size)
    xy, size, angle = xy[keep], size[keep], angle[keep]
    ori = opencv_angle_to_ori(angle)
    n = len(xy)
    if n < 2:
        raise HPatchesError(f"only {n} DoG keypoints in a synthetic sequence image ({w}x{h})")
    ref_lafs = _ref_lafs(xy, size, ori, MR_SIZE)
    valid = np.all(
        (_laf_corners(ref_lafs) >= 1) & (_laf_corners(ref_lafs) <= [w - 2, h - 2]), axis=(1, 2)
    )
    lafs_k: dict[str, np.ndarray] = {}
    ref_jit: dict[str, np.ndarray] = {}
    for L in LEVELS:
        for k in range(1, 6):
            J, t = _sample_jitter(rng, n, levels[L])
            ref_j, tgt = _jittered_lafs(ref_lafs, J, t, Hs[k - 1])
            cor = _laf_corners(tgt)
            valid &= np.all(np.isfinite(cor) & (cor >= 1) & (cor <= [w - 2, h - 2]), axis=(1, 2))
            lafs_k[f"{L}{k}"] = tgt
            ref_jit[f"{L}{k}"] = ref_j
    sel = np.flatnonzero(valid)[:n_patches]
    if len(sel) < 2:
        raise HPatchesError(
            f"only {len(sel)} usable keypoints in a synthetic sequence "
            f"(image {w}x{h}); use a larger image_side"
        )
    m = len(sel)
    out = {
        "ref": _to_uint8(
            extract_patches(gray[0], xy[sel], size[sel], ori[sel], patch_size=PATCH_SIZE)[:, 0]
        )
    }
    # one batched sampler call: image k holds the e/h/t frames of target k
    per_k = _extract_affine_patches(
        [gray[k] for k in range(1, 6)],
        [np.concatenate([lafs_k[f"{L}{k}"][sel] for L in LEVELS]) for k in range(1, 6)],
    )
    for k in range(1, 6):
        for li, L in enumerate(LEVELS):
            out[f"{L}{k}"] = per_k[k - 1][li * m : (li + 1) * m]
    ref_c = _laf_corners(ref_lafs[sel])
    ious = {
        L: np.concatenate(
            [_square_iou(ref_c, _laf_corners(ref_jit[f"{L}{k}"][sel])) for k in range(1, 6)]
        )
        for L in LEVELS
    }
    info = {"keypoints": np.stack([xy[sel, 0], xy[sel, 1], size[sel], angle[sel]], 1), "iou": ious}
    return out, info


def write_synthetic_hpatches(
    root: str | Path,
    n_seq: int = 8,
    n_patches: int = 100,
    seed: int = 0,
    conf: SynthConf | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic HPatches set in the real layout.

    Args:
        root: dataset root, e.g. ``datasets/hpatches-synth``; gets ``hpatches-release/``,
            ``tasks/`` (splits.json + split ``full`` csvs), ``images/`` and ``meta.json``.
        n_seq: sequences, alternating ``i_`` / ``v_``, one TEST photo each (cycled, then the
            photo is mirrored and re-cropped so names stay unique).
        n_patches: patches per sequence (fewer if a photo has too few usable keypoints).
        seed: numpy seed (everything is deterministic given it).
        overwrite: replace an existing root; otherwise an existing complete set is kept.
    Returns:
        Path of the ``hpatches-release`` folder.
    """
    conf = conf or SynthConf()
    root = Path(root)
    if (root / "meta.json").is_file() and not overwrite:
        logger.info("synthetic HPatches already at %s", root)
        return root / "hpatches-release"
    if root.exists() and not overwrite:
        raise HPatchesError(f"{root}: exists without meta.json; pass overwrite=True")
    with atomic_dir(root) as tmp:
        rng = np.random.default_rng(seed)
        photos = synth.photo_names("test")
        data: dict[str, dict[str, np.ndarray]] = {}
        ious: dict[str, list] = {L: [] for L in LEVELS}
        used = {}
        bad: set[str] = set()
        j = 0  # index into the photo cycle
        for i in tqdm(range(n_seq), desc="synthetic hpatches", leave=False, disable=None):
            kind = "i" if i % 2 == 0 else "v"
            while True:
                if len(bad) == len(photos):
                    raise HPatchesError("no TEST photo gives enough keypoints for a sequence")
                name = photos[j % len(photos)]
                rep = j // len(photos)
                j += 1
                if name in bad:
                    continue
                photo = synth.load_photo(name)
                if rep % 2 == 1:
                    photo = np.ascontiguousarray(photo[:, ::-1])
                photo = _resize_long_side(photo, conf.image_side)
                imgs, Hs = make_sequence_images(photo, kind, rng, conf)
                try:
                    patches, info = make_sequence_patches(imgs, Hs, n_patches, rng, conf)
                except HPatchesError:
                    patches = None
                if patches is None or len(patches["ref"]) < max(2, n_patches // 4):
                    logger.info("photo %s: too few usable keypoints, skipped", name)
                    bad.add(name)
                    continue
                break
            seq = f"{kind}_{name}" + (f"{rep + 1}" if rep else "")
            while seq in data:
                seq += "x"
            for t, arr in patches.items():
                write_patch_file(tmp / "hpatches-release" / seq / f"{t}.png", arr)
            write_image_sequence(tmp / "images" / seq, imgs, Hs)
            data[seq] = patches
            used[seq] = {
                "photo": name,
                "mirrored": bool(rep % 2 == 1),
                "n_patches": int(len(patches["ref"])),
                "image_size": [int(photo.shape[1]), int(photo.shape[0])],
            }
            for L in LEVELS:
                ious[L].append(info["iou"][L])
        seqs = sorted(data)
        write_json(tmp / "tasks" / "splits" / "splits.json", build_splits(seqs), indent=1)
        lengths = {s: len(data[s]["ref"]) for s in seqs}
        total = sum(lengths.values())
        verif = make_verification_pairs(lengths, seqs, conf.verif_pairs_per_patch * total, seed=42)
        n_q = max(1, int(conf.queries_frac * total))
        q, d = make_retrieval_lists(data, seqs, n_q, total, seed=42)
        write_tasks(tmp / "tasks", "full", verif, q, d)
        meta = {
            "generator": "descriptors.data.hpatches_synth.write_synthetic_hpatches",
            "n_seq": n_seq,
            "n_patches": n_patches,
            "seed": seed,
            "sequences": used,
            "conf": asdict(conf),
            "overlap_median": {L: float(np.median(np.concatenate(ious[L]))) for L in LEVELS},
            "tasks": {"verif_pairs": len(verif["pos"]), "queries": len(q), "distractors": len(d)},
        }
        write_json(tmp / "meta.json", meta, indent=1)
    logger.info(
        "wrote synthetic HPatches (%d sequences) to %s; median IoU %s",
        n_seq,
        root,
        meta["overlap_median"],
    )
    return root / "hpatches-release"
