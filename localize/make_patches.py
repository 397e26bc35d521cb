"""Patch datasets from any posed image collection, the way Brown's PhotoTour data was made.

Usage: ``python -m pipelines.make_patches``.

Input: images + camera poses (a COLMAP model, or Strecha's ``gt_dense_cameras``). Output: the
Brown layout ``descriptors.data.phototour.read_phototour`` reads (``patchesNNNN.bmp`` sheets of
64x64 patches, ``info.txt``, ``interest.txt``, ``m50_<P>_<Q>_0.txt``) plus ``summary.json``,
one scene per folder. Steps: DoG + RootSIFT on resized images, covisible pairs from the poses,
guided matching within ``epipolar_px`` of the epipolar lines, triangulation from the fixed
poses, track filtering, one patch per observation at its own scale and orientation (12 sigma).
With ``night_copies`` = K > 0 each view is also rendered K times through the night model
(``synth.day_to_night`` on the full-resolution image, then the same resize) and every
observation's patch is cut from those renderings too: K extra patches of the same 3D point at
the same keypoint, from view ids ``V * k + v`` (k = 1..K, V views), so day-night positives see
the illumination change the way a night query does, not a night model applied to a 64x64 patch.
``interest.txt`` holds ``<view id> x y size ori`` in original pixels (size = OpenCV diameter,
ori in radians).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pycolmap
from tqdm import tqdm

from descriptors.patches import MR_SIZE, extract_patches, opencv_angle_to_ori
from descriptors.util import atomic_dir, write_json
from localize import (
    colmap,
    colmap_db,
    colmap_sfm,
    dog_features,
    geometry,
    pairs_from_poses,
    parsers,
)

logger = logging.getLogger(__name__)

confs: dict[str, dict[str, Any]] = {
    "default": {
        "resize_max": 1200,  # longer side (px) of the images the patches come from
        "max_keypoints": 6000,  # DoG keypoints per image (strongest first)
        "contrast_threshold": 0.01,  # lower than extraction's 0.02: more, harder points
        "edge_threshold": 10.0,
        "min_size": 2.0,  # OpenCV keypoint size (diameter, resized px)
        "num_matched": 6,  # covisible partners per view (pairs.from_poses)
        "max_view_angle_deg": 60.0,  # max angle between the viewing directions of a pair
        "epipolar_px": 1.5,  # guided matching band (symmetric epipolar distance, px)
        "ratio": 0.9,  # ratio test among the candidates inside the band
        "max_reproj_px": 1.0,  # every observation of a kept track reprojects within this
        "min_tri_angle_deg": 3.0,  # largest angle between two rays of a kept track
        "min_track_length": 2,
        "patch_size": 64,  # Brown layout
        "mr_size": MR_SIZE,
        "max_pairs": 100_000,  # m50 pairs (half matching); fewer if the scene is small
        "night_copies": 0,  # night renderings per view cut at the same keypoints (extra views)
        "night_darkness": [0.6, 1.3],  # synth.day_to_night darkness, uniform in this range
        "seed": 0,
    },
}
confs["fast"] = {**confs["default"], "resize_max": 640, "max_keypoints": 2000}


def _load_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise colmap.ColmapError(f"{path}: cannot read image")
    return img


def _night(gray: np.ndarray, name: str, conf: dict[str, Any], copy: int) -> np.ndarray:
    """Night rendering ``copy`` (1..K) of the full-resolution (h, w) uint8 image ``name``,
    same shape. Seeded by the conf's seed, the image's file name and ``copy``."""
    from descriptors.data.synth import day_to_night

    rng = np.random.default_rng([conf["seed"], copy, *Path(name).name.encode()])
    darkness = float(rng.uniform(*conf["night_darkness"]))
    return day_to_night(gray, rng, darkness)


def guided_matches(
    desc0: np.ndarray, desc1: np.ndarray, band: np.ndarray, ratio: float
) -> np.ndarray:
    """Mutual nearest neighbours restricted to ``band`` with a ratio test inside it.

    Args:
        desc0 (N0, D), desc1 (N1, D): unit descriptors; band (N0, N1) bool allowed candidates.
        ratio: keep when d1 < ratio * d2 (L2 distances; a single candidate always passes).
    Returns:
        (M, 2) int64 [idx0, idx1].
    """
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64)
    sim = desc0 @ desc1.T
    sim = np.where(band, sim, -4.0)
    nn01 = np.argmax(sim, 1)
    nn10 = np.argmax(sim, 0)
    i = np.arange(len(desc0))
    ok = (nn10[nn01] == i) & (sim[i, nn01] > -4.0)
    # ratio test along rows: second best inside the band
    top2 = (
        np.partition(-sim, 1, axis=1)[:, :2]
        if sim.shape[1] > 1
        else np.concatenate([-sim, np.full((len(sim), 1), 4.0)], 1)
    )
    s1, s2 = -top2[:, 0], -top2[:, 1]
    d1 = np.sqrt(np.maximum(2 - 2 * s1, 0))
    d2 = np.where(s2 > -4.0, np.sqrt(np.maximum(2 - 2 * s2, 0)), np.inf)
    ok &= d1 < ratio * d2
    return np.stack([i[ok], nn01[ok]], 1).astype(np.int64)


def _scaled_reference(
    rec: pycolmap.Reconstruction, sizes: dict[str, tuple[int, int, int, int]]
) -> pycolmap.Reconstruction:
    """Copy of ``rec`` (points cleared) whose cameras are rescaled to the resized images.
    sizes: name -> (w, h, new_w, new_h)."""
    out = pycolmap.Reconstruction(rec)
    for pid in list(out.points3D):
        out.delete_point3D(pid)
    done: dict[int, tuple[int, int]] = {}
    for im in out.images.values():
        w, h, nw, nh = sizes[im.name]
        cam = out.cameras[im.camera_id]
        if im.camera_id in done:
            if done[im.camera_id] != (nw, nh):
                raise colmap.ColmapError(
                    f"camera {im.camera_id} is shared by images of different sizes ({im.name})"
                )
            continue
        if (cam.width, cam.height) != (w, h):
            raise colmap.ColmapError(
                f"image {im.name} is {w}x{h} but its camera says {cam.width}x{cam.height}"
            )
        cam.rescale(nw, nh)
        done[im.camera_id] = (nw, nh)
    return out


def _tri_angle_deg(xyz: np.ndarray, centers: np.ndarray) -> float:
    """Largest angle (degrees) between rays from ``centers`` (K, 3) to point ``xyz`` (3,)."""
    r = centers - xyz[None]
    r /= np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    c = np.clip(r @ r.T, -1.0, 1.0)
    return float(np.degrees(np.arccos(c.min())))


def resolve_conf(conf: dict[str, Any] | str) -> dict[str, Any]:
    """A name of :data:`confs` or a dict of overrides of ``confs['default']`` -> the full conf
    (what :func:`build` uses and records in ``summary.json``); unknown names / keys raise."""
    if isinstance(conf, str):
        if conf not in confs:
            raise ValueError(f"unknown make_patches conf {conf!r}: {', '.join(confs)}")
        conf = confs[conf]
    unknown = set(conf) - set(confs["default"])
    if unknown:
        raise ValueError(f"unknown make_patches option(s): {sorted(unknown)}")
    conf = {**confs["default"], **conf}
    k, dark = conf["night_copies"], conf["night_darkness"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"make_patches night_copies must be an integer >= 0, not {k!r}")
    try:
        lo, hi = (float(v) for v in dark)
        ok = 0 <= lo <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"make_patches night_darkness must be [low, high], 0 <= low <= high: {dark!r}"
        )
    return conf


def build(
    conf: dict[str, Any] | str,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    reference: pycolmap.Reconstruction | str | os.PathLike | None = None,
    strecha: str | os.PathLike | None = None,
    names: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build a Brown-layout patch folder from posed images (see the module docstring).

    Args:
        conf: a name of :data:`confs` or a dict of overrides of ``confs['default']``.
        image_dir: image root; image names of the poses are relative to it.
        out_dir: the scene folder to write (replaced atomically when complete).
        reference: a COLMAP model directory or Reconstruction with the poses, or
        strecha: a Strecha ``gt_dense_cameras`` folder.
        names: only these images (default: every posed image whose file exists).
    Returns:
        the summary dict (also written to ``<out_dir>/summary.json``).
    """
    from descriptors.data.phototour import make_pairs, write_phototour_folder
    from descriptors.registry import load as load_descriptor

    conf = resolve_conf(conf)
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    if not image_dir.is_dir():
        raise colmap.ColmapError(f"image folder not found: {image_dir}")
    if (reference is None) == (strecha is None):
        raise ValueError("give exactly one of reference (a COLMAP model) or strecha")
    if strecha is not None:
        from localize.data.strecha import read_strecha_cameras

        rec = colmap.build_reference_reconstruction(*read_strecha_cameras(strecha))
    elif isinstance(reference, pycolmap.Reconstruction):
        rec = reference
    else:
        rec = colmap.read_model(reference)
    by_name = colmap.image_ids_by_name(rec)
    wanted = list(names) if names is not None else sorted(by_name)
    for n in wanted:  # names from the model: relative, inside image_dir (before any read)
        parsers.check_name(n, f"{reference if strecha is None else strecha}: image")
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise colmap.ColmapError(f"{len(missing)} image(s) have no pose, e.g. {missing[0]!r}")
    wanted = [n for n in wanted if (image_dir / n).is_file()]
    if len(wanted) < 2:
        raise colmap.ColmapError(f"{image_dir}: fewer than two posed images found")

    # 1. detection + RootSIFT on resized images
    rootsift = load_descriptor("rootsift")
    detect_keys = (
        "resize_max",
        "max_keypoints",
        "contrast_threshold",
        "edge_threshold",
        "min_size",
    )
    ex_conf = {**dog_features.default_conf, **{k: conf[k] for k in detect_keys}}
    feats: dict[str, dict[str, Any]] = {}
    sizes: dict[str, tuple[int, int, int, int]] = {}
    for name in tqdm(wanted, desc="make_patches: detect", disable=None if progress else True):
        gray = _load_gray(image_dir / name)
        prep = dog_features.prepare_image(gray, ex_conf)
        small, xy, size, angle = prep["small"], prep["xy"], prep["size"], prep["angle"]
        desc = dog_features.describe(small, prep["kps"], xy, size, angle, rootsift, ex_conf)
        # "xy": true positions (pixel centres at integers) for the geometry, as extraction stores
        # them; "xy_cut": OpenCV's positions, where extraction cuts its patches
        feats[name] = {
            "xy": xy - dog_features.OPENCV_XY_OFFSET,
            "xy_cut": xy,
            "size": size,
            "angle": angle,
            "desc": desc,
            "image": small,
            # the night renderings, prepared as the day image (resize_image)
            "night": [
                dog_features.resize_image(
                    _night(gray, name, conf, c), ex_conf["resize_max"], ex_conf["resize_force"]
                )[0]
                for c in range(1, conf["night_copies"] + 1)
            ],
        }
        sizes[name] = (gray.shape[1], gray.shape[0], small.shape[1], small.shape[0])
    # keep only the wanted images in the scaled reference (ids unchanged)
    ref = _scaled_reference(_subset(rec, set(feats)), sizes)
    ids = colmap.image_ids_by_name(ref)

    # 2-3. covisible pairs, guided matching with the known geometry
    pairs = pairs_from_poses.from_poses(ref, conf["num_matched"], conf["max_view_angle_deg"])
    seen, uniq = set(), []
    for a, b in pairs:
        k = (min(a, b), max(a, b))
        if k not in seen:
            seen.add(k)
            uniq.append(k)
    cams = {n: colmap.camera_matrices(ref, ids[n]) for n in feats}
    matches: dict[tuple[str, str], np.ndarray] = {}
    for a, b in tqdm(
        uniq, desc="make_patches: guided matching", disable=None if progress else True
    ):
        F = geometry.fundamental(*cams[a], *cams[b])
        band = (
            geometry.epipolar_distance(
                F, feats[a]["xy"].astype(np.float64), feats[b]["xy"].astype(np.float64)
            )
            <= conf["epipolar_px"]
        )
        matches[(a, b)] = guided_matches(feats[a]["desc"], feats[b]["desc"], band, conf["ratio"])
    n_matches = int(sum(len(m) for m in matches.values()))
    logger.info("%d pairs, %d guided matches", len(uniq), n_matches)

    # 4. triangulation from the fixed poses
    with tempfile.TemporaryDirectory(prefix=".make_patches_") as work_dir:
        work = Path(work_dir)  # scratch database + model: only the tracks are kept
        db = colmap_db.create_database(work / "database.db", ref)
        colmap_db.import_features(db, ids, {n: f["xy"] for n, f in feats.items()})
        colmap_db.import_verified_matches(db, ids, matches)
        tri = colmap_sfm.triangulate(
            ref,
            db,
            work / "no_images",
            work / "sfm",
            colmap_sfm.TriangulationConf(
                min_num_matches=5,
                tri_min_angle_deg=1.0,
                tri_max_error_px=2.0,
                filter_max_reproj_error_px=2.0,
                extract_colors=False,
                ignore_two_view_tracks=False,
            ),
        )

    # 5. track filter
    id2name = {i: n for n, i in ids.items()}
    centers = {i: np.asarray(im.projection_center(), np.float64) for i, im in tri.images.items()}
    tracks: list[list[tuple[str, int]]] = []
    errors: list[float] = []
    n_tri = len(tri.points3D)
    for pid, p in tri.points3D.items():
        els = [(int(e.image_id), int(e.point2D_idx)) for e in p.track.elements]
        if len({i for i, _ in els}) < conf["min_track_length"] or len(els) != len(
            {i for i, _ in els}
        ):
            continue
        xyz = np.asarray(p.xyz, np.float64)
        errs = []
        for iid, k in els:
            uv, depth = colmap.project_points(tri, iid, xyz[None])
            if not depth[0] > 0:
                errs.append(np.inf)
                break
            errs.append(float(np.linalg.norm(uv[0] - feats[id2name[iid]]["xy"][k])))
        if max(errs) > conf["max_reproj_px"]:
            continue
        if _tri_angle_deg(xyz, np.stack([centers[i] for i, _ in els])) < conf["min_tri_angle_deg"]:
            continue
        tracks.append([(id2name[i], k) for i, k in sorted(els)])
        errors.extend(errs)
    if len(tracks) < 2:
        raise colmap.ColmapError(
            f"{image_dir}: only {len(tracks)} tracks survived the filters "
            f"({n_tri} triangulated, {n_matches} guided matches)"
        )

    # 6. one patch per observation, grouped by image for one kornia pass each
    per_image: dict[str, list[tuple[int, int]]] = {}
    for t, tr in enumerate(tracks):
        for name, k in tr:
            per_image.setdefault(name, []).append((t, k))
    view_id = {n: i for i, n in enumerate(sorted(feats))}
    pt_ids, views, patch_list, interest = [], [], [], []
    for name in tqdm(
        sorted(per_image), desc="make_patches: patches", disable=None if progress else True
    ):
        f = feats[name]
        tk = np.asarray(per_image[name], np.int64)
        k = tk[:, 1]
        w, h, nw, nh = sizes[name]
        sx, sy = w / nw, h / nh
        rows = [
            (
                (f["xy"][kk, 0] + 0.5) * sx - 0.5,
                (f["xy"][kk, 1] + 0.5) * sy - 0.5,
                f["size"][kk] * (sx + sy) / 2,
                float(opencv_angle_to_ori(f["angle"][kk : kk + 1])[0]),
            )
            for kk in k
        ]
        images = [(view_id[name], f["image"])]
        images += [(view_id[name] + c * len(feats), n) for c, n in enumerate(f["night"], 1)]
        for vid, image in images:
            p = extract_patches(
                image,
                f["xy_cut"][k],
                f["size"][k],
                opencv_angle_to_ori(f["angle"][k]),
                patch_size=conf["patch_size"],
                mr_size=conf["mr_size"],
            )
            patch_list.append(np.clip(p[:, 0].numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8))
            pt_ids.append(tk[:, 0])
            views.append(np.full(len(tk), vid))
            interest.extend((vid, *r) for r in rows)
    pt = np.concatenate(pt_ids)
    order = np.lexsort((np.concatenate(views), pt))
    patches = np.concatenate(patch_list)[order]
    pt, photo = pt[order], np.concatenate(views)[order]
    interest = [interest[i] for i in order]
    rng = np.random.default_rng(conf["seed"])
    k_pairs = int(min(conf["max_pairs"] // 2, len(patches)))
    m50 = make_pairs(pt, photo, k_pairs, rng, same_photo_frac=0.5)

    lengths = np.array([len(t) for t in tracks])
    summary = {
        "views": len(feats),
        "pairs": len(uniq),
        "guided_matches": n_matches,
        "triangulated": n_tri,
        "tracks": len(tracks),
        "patches": int(len(patches)),
        "track_length_mean": float(lengths.mean()),
        "track_length_max": int(lengths.max()),
        "reproj_error_px_median": float(np.median(errors)),
        "reproj_error_px_max": float(np.max(errors)),
        "m50_pairs": int(len(m50)),
        "conf": conf,
        "images": str(image_dir),
        "poses": str(
            strecha
            if strecha is not None
            else (
                reference
                if not isinstance(reference, pycolmap.Reconstruction)
                else "<in-memory reconstruction>"
            )
        ),
        "view_ids": view_id,
    }
    with atomic_dir(out_dir) as tmp:
        write_phototour_folder(tmp, patches, pt, m50, interest=interest)
        write_json(tmp / "summary.json", summary)
    logger.info(
        "wrote %s: %d views, %d tracks, %d patches, track length %.2f, reprojection "
        "error median %.3f px",
        out_dir,
        summary["views"],
        summary["tracks"],
        summary["patches"],
        summary["track_length_mean"],
        summary["reproj_error_px_median"],
    )
    return summary


def _subset(rec: pycolmap.Reconstruction, names: set[str]) -> pycolmap.Reconstruction:
    """A poses-only copy of ``rec`` holding only the images named in ``names`` (ids kept)."""
    keep = {}
    for iid in sorted(rec.images):
        im = rec.images[iid]
        if im.name in names:
            keep[iid] = im
    if len(keep) == len(rec.images) and len(rec.points3D) == 0:
        return rec
    out = pycolmap.Reconstruction()
    for cid in sorted({im.camera_id for im in keep.values()}):
        out.add_camera_with_trivial_rig(rec.cameras[cid])
    for iid, im in keep.items():
        out.add_image_with_trivial_frame(
            pycolmap.Image(name=im.name, camera_id=im.camera_id, image_id=iid), im.cam_from_world()
        )
    return out


def main(
    conf: dict[str, Any] | str,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    strecha: str | os.PathLike | None = None,
    names: list[str] | None = None,
) -> Path:
    """hloc-style entry: build the patch folder, return ``out_dir``."""
    build(conf, image_dir, out_dir, reference=reference, strecha=strecha, names=names)
    return Path(out_dir)
