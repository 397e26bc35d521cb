"""Triangulate a 3D point cloud from matches with the reference poses held fixed (hloc-style).

Steps (all COLMAP calls go through the adapter: :mod:`localize.colmap`, ``colmap_db``,
``colmap_sfm``):

1. a fresh COLMAP database ``<sfm_dir>/database.db`` holding the reference cameras / images
   (same ids as the reference model);
2. keypoints of every reference image from ``features.h5`` (hloc coordinates; the adapter adds
   0.5 for COLMAP);
3. the putative matches of every pair in ``pairs`` from ``matches.h5``;
4. geometric verification (two-view geometry per pair). Without it every pair keeps COLMAP's
   UNDEFINED two-view configuration and triangulation silently produces 0 points — hence step 6;
5. ``triangulate_points`` with the poses fixed; model written to ``sfm_dir`` (COLMAP binary);
6. statistics (points, mean track length, mean reprojection error, pair counts) are logged,
   returned by :func:`run` and written to ``<sfm_dir>/triangulation_stats.json`` for users; a
   RuntimeError is raised when no point came out.

hloc contract: ``main(sfm_dir, reference_model, image_dir, pairs, features, matches, ...)`` has
``hloc.triangulation.main``'s positional order and returns the pycolmap.Reconstruction; our
options are keywords (``conf`` / ``**kwargs``, see :data:`default_conf`). Every COLMAP option,
``ignore_two_view_tracks`` and the RANSAC seed included, is a field of
``colmap_sfm.TriangulationConf`` (``conf["triangulation"]``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pycolmap
from tqdm import tqdm

from descriptors.util import merge_conf, setup_logging, write_json
from localize import colmap, colmap_db, colmap_sfm, geometry, io, parsers
from localize.cli import (
    ArgumentParser,
    cli_errors,
    existing_dir,
    existing_file,
    finite_float,
    output_dir,
)

logger = logging.getLogger(__name__)

default_conf: dict[str, Any] = {
    "min_match_score": None,  # drop matches with a lower matching score (None: keep all)
    "verification": {},  # colmap_db.VerificationConf fields
    "triangulation": {},  # colmap_sfm.TriangulationConf fields (two-view tracks, seed, ...)
    "skip_missing_pairs": False,  # True: a pair absent from matches.h5 is a warning, not an error
    # how putative matches become verified: "estimate" (COLMAP two-view RANSAC, hloc's
    # estimate_two_view_geometries=True), "poses" (epipolar error against the reference poses,
    # hloc's default) or "skip" (every match is an inlier, hloc's skip_geometric_verification)
    "verification_mode": "estimate",
    "pose_max_error_px": 4.0,  # "poses": max symmetric epipolar distance of a kept match
    "mapper_options": {},  # pycolmap IncrementalPipelineOptions fields set last (hloc's)
}

VERIFICATION_MODES = ("estimate", "poses", "skip")

STATS_FILE = "triangulation_stats.json"


def _stats(rec: pycolmap.Reconstruction) -> dict[str, float]:
    n = int(rec.num_points3D())
    return {
        "num_points3D": n,
        "num_observations": int(rec.compute_num_observations()) if n else 0,
        "mean_track_length": float(rec.compute_mean_track_length()) if n else 0.0,
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()) if n else 0.0,
        "mean_observations_per_image": (
            float(rec.compute_mean_observations_per_reg_image()) if n else 0.0
        ),
        "num_reg_images": int(rec.num_reg_images()),
    }


def read_matches(
    matches: Path,
    pair_list: list[tuple[str, str]],
    num_keypoints: Mapping[str, int],
    min_match_score: float | None = None,
    skip_missing_pairs: bool = False,
) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, int]]:
    """{(name0, name1): (M, 2) int64 [idx0, idx1]} of every distinct non-empty pair (the form
    ``colmap_db.import_matches`` takes) and the counts of missing / empty pairs. Indices outside
    ``num_keypoints`` of their image raise ``io.H5Error`` (``io.check_match_range``)."""
    out: dict[tuple[str, str], np.ndarray] = {}
    n_missing = n_empty = 0
    seen: set[frozenset[str]] = set()
    with contextlib.ExitStack() as files:  # the file opened once for all pairs
        src = io.open_for_reading(files, matches)
        for n0, n1 in tqdm(pair_list, desc="triangulation: matches", unit="pair", disable=None):
            key = frozenset((n0, n1))
            if n0 == n1 or key in seen:
                continue
            seen.add(key)
            if not io.has_pair(src, n0, n1):
                if not skip_missing_pairs:
                    raise ValueError(
                        f"{matches}: no matches for pair ({n0}, {n1}); was it "
                        "matched with this pairs file?"
                    )
                n_missing += 1
                continue
            m, s = io.get_matches(src, n0, n1)
            io.check_match_range(m, num_keypoints[n0], num_keypoints[n1], matches, n0, n1)
            if min_match_score is not None:
                m = m[s >= float(min_match_score)]
            if len(m) == 0:
                n_empty += 1
                continue
            out[(n0, n1)] = m
    if n_missing:
        logger.warning("%d pair(s) absent from %s were skipped", n_missing, matches)
    if n_empty:
        logger.info("%d pair(s) have no matches", n_empty)
    return out, {"num_pairs_empty": n_empty, "num_pairs_missing": n_missing}


def _pose_verified(
    reference: pycolmap.Reconstruction,
    image_ids: Mapping[str, int],
    keypoints: Mapping[str, np.ndarray],
    matches: Mapping[tuple[str, str], np.ndarray],
    max_error_px: float,
) -> dict[tuple[str, str], np.ndarray]:
    """Matches whose symmetric epipolar distance under the reference poses is at most
    ``max_error_px`` (hloc's pose-based verification); (M, 2) index arrays per pair."""
    cams = {}
    out = {}
    for (n0, n1), m in matches.items():
        for n in (n0, n1):
            if n not in cams:
                cams[n] = colmap.camera_matrices(reference, image_ids[n])
        F = geometry.fundamental(*cams[n0], *cams[n1])
        d = geometry.epipolar_error(F, keypoints[n0][m[:, 0]], keypoints[n1][m[:, 1]])
        out[(n0, n1)] = m[d <= max_error_px]
    return out


def run(
    sfm_dir: str | os.PathLike,
    reference_model: str | os.PathLike | pycolmap.Reconstruction,
    image_dir: str | os.PathLike,
    pairs: str | os.PathLike | Iterable[tuple[str, str]],
    features: str | os.PathLike,
    matches: str | os.PathLike,
    conf: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[pycolmap.Reconstruction, dict[str, Any]]:
    """Build a triangulated model from the reference poses and the feature matches.

    Args:
        sfm_dir: output directory; receives ``database.db``, the COLMAP binary model
            (cameras/images/points3D.bin) and :data:`STATS_FILE`.
        reference_model: model directory (or pycolmap.Reconstruction) with the posed database
            images; its 3D points (if any) are ignored.
        image_dir: image root (names relative to it); only used for point colours.
        pairs: pairs file (``name0 name1`` per line) or list of (name0, name1) db-db pairs.
        features: features.h5 holding keypoints of every reference image.
        matches: matches.h5 holding every pair of ``pairs``.
        conf / kwargs: overrides of :data:`default_conf`.
    Returns:
        (reconstruction with 3D points, statistics: ``num_points3D``, ``num_observations``,
        ``mean_track_length``, ``mean_reprojection_error_px``, ``mean_observations_per_image``,
        ``num_reg_images``, ``num_pairs``, ``num_pairs_imported``, ``num_pairs_verified``,
        ``num_pairs_empty``, ``num_pairs_missing``); the statistics are also written to
        ``sfm_dir/triangulation_stats.json``.
    Raises:
        RuntimeError when triangulation produces 0 points (with the counts of imported and
        verified pairs, to tell missing matches from failed verification).
    """
    conf = merge_conf(default_conf, conf, kwargs, where="triangulation")
    if conf["verification_mode"] not in VERIFICATION_MODES:
        raise ValueError(
            f"verification_mode {conf['verification_mode']!r}: choose from "
            f"{', '.join(VERIFICATION_MODES)}"
        )
    sfm_dir = Path(sfm_dir)
    sfm_dir.mkdir(parents=True, exist_ok=True)
    features, matches = Path(features), Path(matches)
    reference = (
        reference_model
        if isinstance(reference_model, pycolmap.Reconstruction)
        else colmap.read_model(reference_model)
    )
    image_ids = colmap.image_ids_by_name(reference)
    pair_list = (
        parsers.parse_pairs(pairs)
        if isinstance(pairs, (str, os.PathLike))
        else [tuple(p) for p in pairs]
    )
    unknown = {n for p in pair_list for n in p if n not in image_ids}
    if unknown:
        raise ValueError(
            f"{pairs}: {len(unknown)} image(s) not in the reference model, e.g. "
            f"{sorted(unknown)[0]!r}"
        )

    db_path = colmap_db.create_database(sfm_dir / "database.db", reference)

    keypoints, missing_feats = io.read_keypoints(
        features, sorted(image_ids), "triangulation: keypoints"
    )
    if missing_feats:
        raise ValueError(
            f"{features}: no features for {len(missing_feats)} reference image(s), "
            f"e.g. {missing_feats[0]!r}; extract the database images first"
        )
    colmap_db.import_features(db_path, image_ids, keypoints)

    match_dict, counts = read_matches(
        matches,
        pair_list,
        {n: len(k) for n, k in keypoints.items()},
        conf["min_match_score"],
        conf["skip_missing_pairs"],
    )
    mode = conf["verification_mode"]
    if mode == "estimate":
        n_imported = colmap_db.import_matches(db_path, image_ids, match_dict)
        n_verified = colmap_db.geometric_verification(
            db_path, list(match_dict) or pair_list, conf["verification"] or None
        )
    else:
        n_imported = len(match_dict)
        if mode == "poses":
            match_dict = _pose_verified(
                reference, image_ids, keypoints, match_dict, float(conf["pose_max_error_px"])
            )
        n_verified = colmap_db.import_verified_matches(db_path, image_ids, match_dict)
    logger.info("imported matches of %d pairs, %d verified (%s)", n_imported, n_verified, mode)

    rec = colmap_sfm.triangulate(
        reference,
        db_path,
        image_dir,
        sfm_dir,
        conf["triangulation"] or None,
        mapper_options=conf["mapper_options"] or None,
    )
    stats = {
        **_stats(rec),
        "num_pairs": len(pair_list),
        "num_pairs_imported": n_imported,
        "num_pairs_verified": n_verified,
        **counts,
    }
    logger.info(
        "triangulated %d points, mean track length %.2f, mean reprojection error "
        "%.3f px (%d/%d pairs verified)",
        stats["num_points3D"],
        stats["mean_track_length"],
        stats["mean_reprojection_error_px"],
        n_verified,
        n_imported,
    )
    write_json(sfm_dir / STATS_FILE, stats)
    if stats["num_points3D"] == 0:
        raise colmap.ColmapError(
            f"triangulation into {sfm_dir} produced 0 points: {len(pair_list)} pairs, "
            f"{n_imported} with matches imported, {n_verified} geometrically verified"
            + (
                " (no verified pair: the two-view geometries stayed UNDEFINED; check the matches "
                "and verification thresholds)"
                if n_verified == 0
                else " (check that the reference poses agree with the matches)"
            )
        )
    return rec, stats


def main(
    sfm_dir: str | os.PathLike,
    reference_model: str | os.PathLike | pycolmap.Reconstruction,
    image_dir: str | os.PathLike,
    pairs: str | os.PathLike | Iterable[tuple[str, str]],
    features: str | os.PathLike,
    matches: str | os.PathLike,
    skip_geometric_verification: bool = False,
    estimate_two_view_geometries: bool = False,
    min_match_score: float | None = None,
    verbose: bool = False,
    mapper_options: Mapping[str, Any] | None = None,
    *,
    conf: Mapping[str, Any] | None = None,
) -> pycolmap.Reconstruction:
    """hloc's ``triangulation.main``, same parameters and defaults: verification against the
    reference poses unless ``estimate_two_view_geometries`` (COLMAP RANSAC) or
    ``skip_geometric_verification``. ``conf``: further :data:`default_conf` keys. Returns the
    reconstruction (statistics in ``sfm_dir/triangulation_stats.json``)."""
    c = dict(conf or {})
    c.setdefault(
        "verification_mode",
        "skip"
        if skip_geometric_verification
        else "estimate"
        if estimate_two_view_geometries
        else "poses",
    )
    if min_match_score is not None:
        c["min_match_score"] = min_match_score
    if mapper_options:
        c["mapper_options"] = {**c.get("mapper_options", {}), **mapper_options}
    if verbose:
        colmap.set_verbose(True)
    return run(sfm_dir, reference_model, image_dir, pairs, features, matches, c)[0]


def _parse_args(argv):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sfm_dir", type=output_dir, required=True, help="output model folder")
    p.add_argument(
        "--reference_model",
        type=existing_dir,
        required=True,
        help="COLMAP model with the known poses",
    )
    p.add_argument("--image_dir", type=existing_dir, required=True, help="image root")
    p.add_argument("--pairs", type=existing_file, required=True, help="db-db pairs file")
    p.add_argument("--features", type=existing_file, required=True, help="features file")
    p.add_argument("--matches", type=existing_file, required=True, help="matches file of the pairs")
    p.add_argument("--min_match_score", type=finite_float, help="drop matches scoring below this")
    return p.parse_args(argv)


def cli(argv: Iterable[str] | None = None) -> pycolmap.Reconstruction:
    """Command line; known errors exit 2 with one line ``localize.triangulation: <message>``."""
    a = _parse_args(None if argv is None else list(argv))
    setup_logging()
    with cli_errors("localize.triangulation"):
        return main(
            a.sfm_dir,
            a.reference_model,
            a.image_dir,
            a.pairs,
            a.features,
            a.matches,
            min_match_score=a.min_match_score,
        )


if __name__ == "__main__":
    cli()
