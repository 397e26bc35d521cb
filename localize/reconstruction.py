"""Structure from motion from photographs with unknown poses (hloc ``reconstruction``).

Steps: a fresh COLMAP database with the images (cameras per ``camera_mode``), keypoints and
matches imported, geometric verification, mapping with ``mapper`` = ``incremental`` (hloc's),
``global`` (GLOMAP) or ``hierarchical``. The largest model is written to ``sfm_dir`` (COLMAP
binary), all models to ``sfm_dir/models/<i>``, statistics to
``sfm_dir/reconstruction_stats.json``; :func:`main` returns None when nothing registers. The
model is built in a scratch folder and moved in place; a non-empty ``sfm_dir`` needs
``overwrite=True``. :func:`main` has hloc's parameters; ours are keyword-only.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pycolmap

from descriptors.util import atomic_dir, setup_logging, write_json
from localize import colmap, colmap_db, colmap_sfm, extract_features, io, parsers
from localize import triangulation as tri
from localize.cli import ArgumentParser, cli_errors

logger = logging.getLogger(__name__)

STATS_FILE = "reconstruction_stats.json"
MODEL_FILES = ("cameras.bin", "images.bin", "points3D.bin", "frames.bin", "rigs.bin")


def model_stats(rec: pycolmap.Reconstruction | None, num_input_images: int) -> dict[str, Any]:
    """Counts of a model: ``num_input_images``, ``num_reg_images``, ``num_points3D``,
    ``num_observations``, ``mean_track_length``, ``mean_reprojection_error_px``,
    ``mean_observations_per_image``, ``registered`` (the ``"k of N registered"`` line)."""
    if rec is None:
        s = {
            "num_reg_images": 0,
            "num_points3D": 0,
            "num_observations": 0,
            "mean_track_length": 0.0,
            "mean_reprojection_error_px": 0.0,
            "mean_observations_per_image": 0.0,
        }
    else:
        s = tri._stats(rec)
    s["num_input_images"] = int(num_input_images)
    s["registered"] = f"{s['num_reg_images']} of {num_input_images} registered"
    return s


def _check_sfm_dir(sfm_dir: Path, overwrite: bool) -> None:
    if sfm_dir.exists() and not sfm_dir.is_dir():
        raise colmap.ColmapError(f"{sfm_dir}: exists and is not a folder")
    if sfm_dir.is_dir() and any(sfm_dir.iterdir()) and not overwrite:
        raise colmap.ColmapError(
            f"{sfm_dir}: folder exists and is not empty (another run?); "
            "pass overwrite=True (--overwrite) to replace it"
        )


def _largest(
    recs: Mapping[int, pycolmap.Reconstruction],
) -> tuple[int | None, pycolmap.Reconstruction | None]:
    best, best_n = None, 0
    for i, r in sorted(recs.items()):
        if r.num_reg_images() > best_n:
            best, best_n = i, r.num_reg_images()
    return best, (recs[best] if best is not None else None)


def run(
    sfm_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    pairs: str | os.PathLike,
    features: str | os.PathLike,
    matches: str | os.PathLike,
    camera_mode: str | pycolmap.CameraMode = pycolmap.CameraMode.AUTO,
    skip_geometric_verification: bool = False,
    min_match_score: float | None = None,
    image_list: Sequence[str] | str | os.PathLike | None = None,
    image_options: Mapping[str, Any] | None = None,
    mapper_options: Mapping[str, Any] | None = None,
    *,
    mapper: str = "incremental",
    overwrite: bool = False,
    num_threads: int = -1,
    random_seed: int = 0,
    verification: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[pycolmap.Reconstruction | None, dict[str, Any]]:
    """Photos + features + matches -> the largest model (see the module docstring).

    Args:
        image_list: names (or a list file) relative to ``image_dir``; default every image
            there (``extract_features.list_images``).
        num_threads: COLMAP threads (-1: all cores).
        random_seed: seed of every RANSAC / mapper (COLMAP's initial pair choice depends on it).
        verification: ``colmap_db.VerificationConf`` fields.
    Returns:
        (largest reconstruction or None, statistics: :func:`model_stats` plus ``mapper``,
        ``num_models``, ``model_sizes``, ``num_pairs``, ``num_pairs_imported``,
        ``num_pairs_verified``, ``num_pairs_empty``).
    """
    sfm_dir, image_dir = Path(sfm_dir), Path(image_dir)
    features, matches, pairs = Path(features), Path(matches), Path(pairs)
    for what, p in (("features", features), ("pairs", pairs), ("matches", matches)):
        if not p.is_file():
            raise FileNotFoundError(f"{what} file not found: {p}")
    if mapper not in colmap_sfm.MAPPERS:
        raise ValueError(f"mapper {mapper!r}: choose from {', '.join(colmap_sfm.MAPPERS)}")
    colmap_db.camera_mode(camera_mode)  # a bad mode fails before any work
    _check_sfm_dir(sfm_dir, overwrite)
    names = extract_features.list_images(image_dir, image_list)
    if len(names) < 2:
        raise colmap.ColmapError(f"{image_dir}: SfM needs at least two images, found {len(names)}")
    pair_list = parsers.parse_pairs(pairs)
    unknown = {n for p in pair_list for n in p if n not in set(names)}
    if unknown:
        raise ValueError(
            f"{pairs}: {len(unknown)} image(s) not among the {len(names)} images "
            f"of {image_dir}, e.g. {sorted(unknown)[0]!r}"
        )

    with atomic_dir(sfm_dir) as tmp:
        db_path = tmp / "database.db"
        image_ids = colmap_db.create_image_database(
            db_path, image_dir, names, camera_mode, image_options
        )
        keypoints, missing = io.read_keypoints(
            features, names, "reconstruction: keypoints", progress
        )
        if missing:
            raise ValueError(
                f"{features}: no features for image {missing[0]!r}; extract every image first"
            )
        colmap_db.import_features(db_path, image_ids, keypoints)
        match_dict, counts = tri.read_matches(
            matches, pair_list, {n: len(k) for n, k in keypoints.items()}, min_match_score
        )
        if skip_geometric_verification:
            n_imported = n_verified = colmap_db.import_verified_matches(
                db_path, image_ids, match_dict
            )
        else:
            n_imported = colmap_db.import_matches(db_path, image_ids, match_dict)
            n_verified = (
                colmap_db.geometric_verification(db_path, list(match_dict), verification)
                if match_dict
                else 0
            )
        logger.info(
            "%d images, %d pairs: %d with matches, %d verified",
            len(names),
            len(pair_list),
            n_imported,
            n_verified,
        )
        recs = (
            colmap_sfm.run_mapping(
                db_path,
                image_dir,
                tmp / "models",
                mapper,
                mapper_options,
                num_threads,
                random_seed,
                progress,
            )
            if n_verified
            else {}
        )
        best, rec = _largest(recs)
        if rec is not None:
            for f in MODEL_FILES:
                src_f = tmp / "models" / str(best) / f
                if src_f.is_file():
                    shutil.copy2(src_f, tmp / f)
        stats = {
            **model_stats(rec, len(names)),
            "mapper": mapper,
            "num_models": len(recs),
            "model_sizes": sorted((int(r.num_reg_images()) for r in recs.values()), reverse=True),
            "num_pairs": len(pair_list),
            "num_pairs_imported": n_imported,
            "num_pairs_verified": n_verified,
            "num_pairs_empty": counts["num_pairs_empty"],
        }
        write_json(tmp / STATS_FILE, stats)
    if rec is None:
        logger.warning(
            "%s: 0 of %d registered (no model; %d of %d pairs verified)",
            sfm_dir,
            len(names),
            n_verified,
            len(pair_list),
        )
    else:
        logger.info(
            "%s (%s mapper, %d model(s)): %d points, mean track length %.2f, mean "
            "reprojection error %.3f px",
            stats["registered"],
            mapper,
            len(recs),
            stats["num_points3D"],
            stats["mean_track_length"],
            stats["mean_reprojection_error_px"],
        )
    return rec, stats


def main(
    sfm_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    pairs: str | os.PathLike,
    features: str | os.PathLike,
    matches: str | os.PathLike,
    camera_mode: str | pycolmap.CameraMode = pycolmap.CameraMode.AUTO,
    verbose: bool = False,
    skip_geometric_verification: bool = False,
    min_match_score: float | None = None,
    image_list: Sequence[str] | str | os.PathLike | None = None,
    image_options: Mapping[str, Any] | None = None,
    mapper_options: Mapping[str, Any] | None = None,
    *,
    mapper: str = "incremental",
    **kwargs: Any,
) -> pycolmap.Reconstruction | None:
    """hloc's ``reconstruction.main`` (same parameters and defaults) plus ``mapper``
    (``'incremental' | 'global' | 'hierarchical'``) and the keywords of :func:`run`. Returns the
    largest model, or None when no model could be built (statistics in
    ``sfm_dir/reconstruction_stats.json``)."""
    if verbose:
        colmap.set_verbose(True)
    return run(
        sfm_dir,
        image_dir,
        pairs,
        features,
        matches,
        camera_mode,
        skip_geometric_verification,
        min_match_score,
        image_list,
        image_options,
        mapper_options,
        mapper=mapper,
        **kwargs,
    )[0]


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sfm_dir", type=Path, required=True, help="output model folder")
    p.add_argument("--image_dir", type=Path, required=True, help="image root")
    p.add_argument("--pairs", type=Path, required=True, help="pairs file")
    p.add_argument("--features", type=Path, required=True, help="features file")
    p.add_argument("--matches", type=Path, required=True, help="matches file of the pairs")
    p.add_argument("--camera_mode", default="AUTO", choices=colmap_db.CAMERA_MODES)
    p.add_argument("--mapper", default="incremental", choices=colmap_sfm.MAPPERS)
    p.add_argument("--skip_geometric_verification", action="store_true")
    p.add_argument("--min_match_score", type=float)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty sfm_dir")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(None if argv is None else list(argv))


def cli(argv: Iterable[str] | None = None) -> pycolmap.Reconstruction | None:
    """Command line; known errors exit 2 with one line ``localize.reconstruction: <message>``."""
    a = _parse_args(argv)
    setup_logging()
    with cli_errors("localize.reconstruction"):
        rec, stats = run(
            a.sfm_dir,
            a.image_dir,
            a.pairs,
            a.features,
            a.matches,
            a.camera_mode,
            a.skip_geometric_verification,
            a.min_match_score,
            mapper=a.mapper,
            overwrite=a.overwrite,
        )
    print(f"{a.sfm_dir}: {stats['registered']}, {stats['num_points3D']} points")
    return rec


if __name__ == "__main__":
    cli()
