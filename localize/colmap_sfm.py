"""The pycolmap adapter, part 3: estimation.

Triangulation of database matches with the reference poses fixed (:func:`triangulate`),
mapping with unknown poses (:func:`run_mapping`: pycolmap's incremental, global (GLOMAP) or
hierarchical mapper), a robust Sim3 to reference camera centres (:func:`align_to_centers`) and
the absolute pose of a query from 2D-3D matches (:func:`estimate_absolute_pose`). The database
is :mod:`localize.colmap_db`; conventions (hloc keypoints, world-to-camera poses):
:mod:`localize.colmap`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pycolmap
from tqdm import tqdm

from localize.colmap import PathLike, as_conf, colmap_logging, read_model, set_options
from localize.colmap_db import check_db, verified_pairs
from localize.geometry import rigid_to_qt

logger = logging.getLogger("localize.colmap")  # the adapter's one logger (set_verbose)


@dataclass
class TriangulationConf:
    """Triangulation against fixed reference poses (pycolmap IncrementalPipelineOptions)."""

    min_num_matches: int = 15  # pairs with fewer verified inliers are ignored
    tri_min_angle_deg: float = 1.5  # COLMAP triangulation.min_angle
    tri_max_error_px: float = 4.0  # COLMAP triangulation.complete/merge max reproj error
    filter_max_reproj_error_px: float = 4.0  # mapper.filter_max_reproj_error
    num_threads: int = -1
    extract_colors: bool | None = None  # None: True iff every image file exists under image_dir
    refine_intrinsics: bool = False
    # COLMAP's default (True) drops every track seen by only two images. With fixed, verified
    # reference poses those points are valid, and small reference sets (synthetic Aachen: ~2
    # views per point) lose most of their points without them (measured by the triangulate.py
    # owner: 194 vs 2420 points on an 18-view scene). hloc on real Aachen never notices.
    ignore_two_view_tracks: bool = False
    random_seed: int = 0  # triangulation / mapper RANSAC seed (-1 = random)


# ------------------------------------------------------------------------------------------
# Triangulation (known poses)
# ------------------------------------------------------------------------------------------
def triangulate(
    reference: pycolmap.Reconstruction | PathLike,
    db_path: PathLike,
    image_dir: PathLike,
    out_dir: PathLike,
    options: TriangulationConf | Mapping | None = None,
    mapper_options: Mapping[str, Any] | None = None,
) -> pycolmap.Reconstruction:
    """Triangulate 3D points from verified database matches with the reference poses fixed.

    Args:
        reference: Reconstruction or model dir with the posed reference images (same ids as the
            database, see ``create_database``). Not modified.
        image_dir: image root (only used for point colours; may be missing, then no colours).
        out_dir: where the triangulated COLMAP binary model is written.
        options: TriangulationConf or a dict of its fields.
        mapper_options: pycolmap ``IncrementalPipelineOptions`` fields (nested dicts for
            ``mapper`` / ``triangulation``), applied last (hloc's ``mapper_options``).
    Returns:
        Reconstruction with points3D and their tracks.
    """
    db_path = check_db(db_path)
    conf = as_conf(TriangulationConf, options)
    if isinstance(reference, pycolmap.Reconstruction):
        rec = pycolmap.Reconstruction(reference)  # copy
    else:
        rec = read_model(reference)
    image_dir = Path(image_dir)
    extract_colors = conf.extract_colors
    if extract_colors is None:
        extract_colors = image_dir.is_dir() and all(
            (image_dir / im.name).is_file() for im in rec.images.values()
        )
    o = pycolmap.IncrementalPipelineOptions()
    o.min_num_matches = int(conf.min_num_matches)
    o.num_threads = int(conf.num_threads)
    o.extract_colors = bool(extract_colors)
    o.triangulation.min_angle = float(conf.tri_min_angle_deg)
    o.triangulation.complete_max_reproj_error = float(conf.tri_max_error_px)
    o.triangulation.merge_max_reproj_error = float(conf.tri_max_error_px)
    o.triangulation.ignore_two_view_tracks = bool(conf.ignore_two_view_tracks)
    o.triangulation.random_seed = int(conf.random_seed)
    o.mapper.filter_max_reproj_error = float(conf.filter_max_reproj_error_px)
    o.mapper.filter_min_tri_angle = float(conf.tri_min_angle_deg)
    o.mapper.random_seed = int(conf.random_seed)
    o.random_seed = int(conf.random_seed)
    set_options(o, mapper_options or {}, "mapper_options")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_verified = len(verified_pairs(db_path))
    if n_verified == 0:
        logger.warning(
            "%s has no verified image pairs: run geometric_verification first; "
            "the model will have no points",
            db_path,
        )
    # pycolmap insists the image path exists even when colours are not extracted
    # and tries to read them for colours anyway (one warning per image): silence that case.
    image_arg = image_dir if image_dir.is_dir() else out_dir
    with colmap_logging(1 if extract_colors else 2):
        rec = pycolmap.triangulate_points(
            rec,
            str(db_path),
            str(image_arg),
            str(out_dir),
            clear_points=True,
            options=o,
            refine_intrinsics=bool(conf.refine_intrinsics),
        )
    logger.info("triangulated %d points (%d verified pairs)", len(rec.points3D), n_verified)
    return rec


# ------------------------------------------------------------------------------------------
# Structure from motion (unknown poses)
# ------------------------------------------------------------------------------------------
MAPPERS = ("incremental", "global", "hierarchical")


def mapper_options(
    mapper: str,
    options: Mapping[str, Any] | None = None,
    num_threads: int = -1,
    random_seed: int = 0,
) -> Any:
    """pycolmap options of ``mapper``: ``IncrementalPipelineOptions``,
    ``GlobalPipelineOptions`` or ``HierarchicalPipelineOptions``, with the thread count and
    every RANSAC / mapper seed set, then ``options`` (nested dicts) applied last."""
    if mapper not in MAPPERS:
        raise ValueError(f"mapper {mapper!r}: choose from {', '.join(MAPPERS)}")
    if mapper == "incremental":
        o = pycolmap.IncrementalPipelineOptions()
        o.num_threads = num_threads
        o.random_seed = random_seed
        o.mapper.random_seed = random_seed
        o.triangulation.random_seed = random_seed
    elif mapper == "global":
        o = pycolmap.GlobalPipelineOptions()
        o.num_threads = num_threads
        o.random_seed = random_seed
        o.mapper.num_threads = num_threads
        o.mapper.random_seed = random_seed
        o.mapper.rotation_averaging.random_seed = random_seed
        o.mapper.global_positioning.random_seed = random_seed
        o.mapper.global_positioning.use_gpu = False
        o.mapper.bundle_adjustment.ceres.use_gpu = False
        o.mapper.retriangulation.random_seed = random_seed
    else:
        o = pycolmap.HierarchicalPipelineOptions()
        o.num_threads = num_threads
        o.incremental_options.num_threads = num_threads
        o.incremental_options.random_seed = random_seed
        o.incremental_options.mapper.random_seed = random_seed
        o.incremental_options.triangulation.random_seed = random_seed
    return set_options(o, options or {}, "mapper_options")


def run_mapping(
    db_path: PathLike,
    image_dir: PathLike,
    models_dir: PathLike,
    mapper: str = "incremental",
    options: Mapping[str, Any] | None = None,
    num_threads: int = -1,
    random_seed: int = 0,
    progress: bool = True,
) -> dict[int, pycolmap.Reconstruction]:
    """Unknown poses from the verified matches of a database: pycolmap's
    ``incremental_mapping``, ``global_mapping`` (GLOMAP) or ``hierarchical_mapping``.

    Args:
        models_dir: where pycolmap writes one sub-folder per model (``0``, ``1``, ...).
        options / num_threads / random_seed: see :func:`mapper_options`.
        progress: a tqdm bar of registered images (incremental mapper only; the others have no
            callback).
    Returns:
        {model index: Reconstruction}; empty when no model could be built.
    """
    db_path = check_db(db_path)
    o = mapper_options(mapper, options, num_threads, random_seed)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    with colmap_logging(2):
        if mapper == "incremental":
            with pycolmap.Database.open(str(db_path)) as db:
                total = db.num_images()
            bar = tqdm(
                total=total,
                desc="mapping (incremental)",
                unit="img",
                disable=None if progress else True,
            )

            def _init() -> None:
                bar.reset(total)
                bar.update(2)

            try:
                recs = pycolmap.incremental_mapping(
                    str(db_path),
                    str(image_dir),
                    str(models_dir),
                    options=o,
                    initial_image_pair_callback=_init,
                    next_image_callback=lambda: bar.update(1),
                )
            finally:
                bar.close()
        elif mapper == "global":
            recs = pycolmap.global_mapping(str(db_path), str(image_dir), str(models_dir), options=o)
        else:
            recs = pycolmap.hierarchical_mapping(
                str(db_path), str(image_dir), str(models_dir), options=o
            )
    return dict(recs or {})


def align_to_centers(
    reconstruction: pycolmap.Reconstruction,
    centers: Mapping[str, np.ndarray],
    max_error: float,
    min_common_images: int = 3,
) -> pycolmap.Sim3d | None:
    """Robust Sim3 (LO-RANSAC on camera centres, pycolmap ``align_reconstruction_to_locations``)
    taking ``reconstruction``'s frame to the frame of ``centers``.

    Args:
        centers: image name -> (3,) reference camera centre (e.g. metres).
        max_error: RANSAC inlier threshold on the centre distance, in the units of ``centers``.
    Returns:
        the ``tgt_from_src`` Sim3d, or None when fewer than ``min_common_images`` registered
        images have a reference centre or RANSAC fails. ``reconstruction`` is not modified.
    """
    names = [im.name for im in reconstruction.images.values() if im.has_pose and im.name in centers]
    if len(names) < min_common_images:
        return None
    ro = pycolmap.RANSACOptions()
    ro.max_error = float(max_error)
    ro.random_seed = 0
    locs = np.stack([np.asarray(centers[n], np.float64) for n in names])
    try:
        return pycolmap.align_reconstruction_to_locations(
            reconstruction, names, locs, int(min_common_images), ro
        )
    except (RuntimeError, ValueError):
        return None


# ------------------------------------------------------------------------------------------
# Absolute pose
# ------------------------------------------------------------------------------------------
def estimate_absolute_pose(
    points2D: np.ndarray,
    points3D: np.ndarray,
    camera: pycolmap.Camera,
    max_error_px: float = 12.0,
    min_num_inliers: int = 4,
    refine_focal: bool = False,
    refine_extra_params: bool = False,
    random_seed: int = 0,
) -> tuple[dict | None, str]:
    """LO-RANSAC P3P + non-linear refinement (pycolmap ``estimate_and_refine_absolute_pose``).

    Args:
        points2D: (N, 2) hloc pixel coordinates (0.5 is added here).
        points3D: (N, 3) world coordinates.
        camera: query intrinsics (not modified).
        max_error_px: RANSAC inlier threshold in pixels (hloc uses 12 for Aachen).
        min_num_inliers: a pose with fewer inliers counts as a failure.
        random_seed: RANSAC seed (-1 = random); fixed by default so runs are reproducible.
    Returns:
        (result, reason). On success result is a dict with ``cam_from_world`` (pycolmap.Rigid3d,
        world-to-camera), ``qvec_wxyz`` (4,), ``tvec`` (3,), ``num_inliers`` (int) and
        ``inlier_mask`` (N,) bool, and reason is ``"ok"``. On failure result is None and reason
        says why (too few correspondences, RANSAC failed, too few inliers). Never raises for a
        failed estimate; raises ValueError for inconsistent array shapes.
    """
    p2 = np.asarray(points2D, np.float64).reshape(-1, 2)
    p3 = np.asarray(points3D, np.float64).reshape(-1, 3)
    if len(p2) != len(p3):
        raise ValueError(f"points2D ({len(p2)}) and points3D ({len(p3)}) differ in length")
    n = len(p2)
    if n < 4:
        return None, f"too few 2D-3D correspondences ({n} < 4)"
    finite = np.isfinite(p2).all(1) & np.isfinite(p3).all(1)
    if finite.sum() < 4:
        return None, f"too few finite 2D-3D correspondences ({int(finite.sum())} < 4)"
    est = pycolmap.AbsolutePoseEstimationOptions()
    est.ransac.max_error = float(max_error_px)
    est.estimate_focal_length = False
    est.ransac.random_seed = int(random_seed)
    ref = pycolmap.AbsolutePoseRefinementOptions()
    ref.refine_focal_length = bool(refine_focal)
    ref.refine_extra_params = bool(refine_extra_params)
    ref.print_summary = False
    cam = copy.copy(camera)  # refinement may touch intrinsics: work on a copy
    try:
        ret = pycolmap.estimate_and_refine_absolute_pose(
            p2[finite] + 0.5, p3[finite], cam, est, ref
        )
    except (RuntimeError, ValueError) as e:  # pycolmap rejects degenerate input
        return None, f"pose estimation error: {str(e).splitlines()[0]}"
    if ret is None:
        return None, f"RANSAC found no pose from {int(finite.sum())} correspondences"
    mask = np.zeros(n, bool)
    mask[np.flatnonzero(finite)] = np.asarray(ret["inlier_mask"], bool).reshape(-1)
    num_inliers = int(ret.get("num_inliers", mask.sum()))
    if num_inliers < min_num_inliers:
        return None, f"too few inliers ({num_inliers} < {min_num_inliers})"
    rigid = ret["cam_from_world"]
    q, t = rigid_to_qt(rigid)
    return {
        "cam_from_world": rigid,
        "qvec_wxyz": q,
        "tvec": t,
        "num_inliers": num_inliers,
        "inlier_mask": mask,
    }, "ok"


__all__ = [
    "TriangulationConf",
    "triangulate",
    "MAPPERS",
    "mapper_options",
    "run_mapping",
    "align_to_centers",
    "estimate_absolute_pose",
]
