"""The pycolmap adapter, part 2: the COLMAP database.

A database for known poses (:func:`create_database`: the reference model's cameras, rigs,
frames and images, same ids) or for unknown poses (:func:`create_image_database`: images
imported by COLMAP, cameras from EXIF / defaults); keypoints and matches written into it
(:func:`import_features`, :func:`import_matches`, :func:`import_verified_matches`); COLMAP's
two-view geometric verification (:func:`geometric_verification`, :func:`verified_pairs`).
Keypoints come in as hloc coordinates; 0.5 is added here. Conventions: :mod:`localize.colmap`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pycolmap

from descriptors.util import atomic_write
from localize.colmap import (
    ColmapError,
    PathLike,
    as_conf,
    colmap_logging,
    read_model,
    set_options,
)


@dataclass
class VerificationConf:
    """Geometric verification of putative matches (pycolmap TwoViewGeometryOptions)."""

    min_num_inliers: int = 15
    max_error_px: float = 4.0  # RANSAC threshold (pixels) for E / F / H
    confidence: float = 0.9999
    max_num_trials: int = 10000
    min_inlier_ratio: float = 0.1
    random_seed: int = 0  # RANSAC seed (-1 = random): deterministic by default


def create_database(db_path: PathLike, reference: pycolmap.Reconstruction | PathLike) -> Path:
    """Create a fresh COLMAP database holding the reference cameras, rigs, frames and images.

    Every id (camera, rig, frame, image) is the same as in ``reference``. An existing file at
    ``db_path`` is replaced.

    Args:
        reference: a Reconstruction, or a model directory (read with ``read_model``).
    Returns:
        ``db_path`` as a Path.
    """
    if not isinstance(reference, pycolmap.Reconstruction):
        reference = read_model(reference)
    db_path = Path(db_path)
    with atomic_write(db_path) as tmp, pycolmap.Database.open(str(tmp)) as db:
        for cam_id, cam in sorted(reference.cameras.items()):
            db.write_camera(cam, use_camera_id=True)
        for rig_id, rig in sorted(reference.rigs.items()):
            db.write_rig(rig, use_rig_id=True)
        for img_id, im in sorted(reference.images.items()):
            # keypoints / observations live in the keypoints table, not in the image row
            db.write_image(
                pycolmap.Image(name=im.name, camera_id=im.camera_id, image_id=img_id),
                use_image_id=True,
            )
        for frame_id, fr in sorted(reference.frames.items()):
            frame = pycolmap.Frame()
            frame.frame_id = frame_id
            frame.rig_id = fr.rig_id
            for d in fr.data_ids:
                frame.add_data_id(d)
            db.write_frame(frame, use_frame_id=True)
    return db_path


def check_db(db_path: PathLike) -> Path:
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ColmapError(f"COLMAP database not found: {db_path}")
    return db_path


def database_image_ids(db_path: PathLike) -> dict[str, int]:
    """name -> image_id of every image in a COLMAP database."""
    with pycolmap.Database.open(str(check_db(db_path))) as db:
        return {im.name: int(im.image_id) for im in db.read_all_images()}


def import_features(
    db_path: PathLike, image_ids: Mapping[str, int], keypoints: Mapping[str, np.ndarray]
) -> None:
    """Write keypoints into the database (replacing existing ones).

    Args:
        image_ids: image name -> database image id.
        keypoints: image name -> (N, 2) float hloc keypoints (pixel centre at integers);
            0.5 is added here for COLMAP. Names absent from ``image_ids`` raise.
    """
    with pycolmap.Database.open(str(check_db(db_path))) as db:
        for name, kps in keypoints.items():
            if name not in image_ids:
                raise ColmapError(f"{db_path}: image {name!r} is not in the database")
            kps = np.asarray(kps, np.float32).reshape(-1, 2)
            if not np.all(np.isfinite(kps)):
                raise ColmapError(f"non-finite keypoints for image {name!r}")
            iid = int(image_ids[name])
            if db.exists_keypoints(iid):
                db.update_keypoints(iid, kps + 0.5)
            else:
                db.write_keypoints(iid, kps + 0.5)


def import_matches(
    db_path: PathLike, image_ids: Mapping[str, int], matches: Mapping[tuple[str, str], np.ndarray]
) -> int:
    """Write raw (putative) matches for each pair into the database.

    Args:
        image_ids: image name -> database image id.
        matches: (name0, name1) -> (M, 2) int keypoint indices [idx0, idx1] (``io.get_matches``'
            form). A pair given in both orders is written once (the first); self-pairs and
            empty pairs are skipped.
    Returns:
        number of pairs written.
    """
    done: set[tuple[int, int]] = set()
    n = 0
    with pycolmap.Database.open(str(check_db(db_path))) as db:
        for (n0, n1), m in matches.items():
            for nm in (n0, n1):
                if nm not in image_ids:
                    raise ColmapError(f"{db_path}: image {nm!r} is not in the database")
            id0, id1 = int(image_ids[n0]), int(image_ids[n1])
            key = (min(id0, id1), max(id0, id1))
            m = np.asarray(m).reshape(-1, 2)
            if n0 == n1 or key in done or len(m) == 0:
                continue
            done.add(key)
            if m.min() < 0:
                raise ColmapError(f"negative keypoint index in matches of {n0} {n1}")
            if db.exists_matches(id0, id1):
                db.delete_matches(id0, id1)
            db.write_matches(id0, id1, np.ascontiguousarray(m, dtype=np.uint32))
            n += 1
    return n


def import_verified_matches(
    db_path: PathLike, image_ids: Mapping[str, int], matches: Mapping[tuple[str, str], np.ndarray]
) -> int:
    """Write matches that are already verified (e.g. against known poses) as raw matches AND
    as a calibrated two-view geometry whose inliers are all of them, so ``triangulate`` uses
    them without a RANSAC pass.

    Args:
        matches: (name0, name1) -> (M, 2) int keypoint indices [idx0, idx1]; empty pairs skipped.
    Returns:
        number of pairs written.
    """
    n = 0
    with pycolmap.Database.open(str(check_db(db_path))) as db:
        for (n0, n1), m in matches.items():
            for nm in (n0, n1):
                if nm not in image_ids:
                    raise ColmapError(f"{db_path}: image {nm!r} is not in the database")
            m = np.ascontiguousarray(np.asarray(m).reshape(-1, 2), dtype=np.uint32)
            if len(m) == 0 or n0 == n1:
                continue
            id0, id1 = int(image_ids[n0]), int(image_ids[n1])
            if db.exists_matches(id0, id1):
                db.delete_matches(id0, id1)
            if db.exists_two_view_geometry(id0, id1):
                db.delete_two_view_geometry(id0, id1)
            db.write_matches(id0, id1, m)
            g = pycolmap.TwoViewGeometry()
            g.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
            g.inlier_matches = m
            db.write_two_view_geometry(id0, id1, g)
            n += 1
    return n


def _two_view_options(conf: VerificationConf) -> pycolmap.TwoViewGeometryOptions:
    o = pycolmap.TwoViewGeometryOptions()
    o.min_num_inliers = int(conf.min_num_inliers)
    o.min_inlier_ratio = float(conf.min_inlier_ratio)
    o.ransac.max_error = float(conf.max_error_px)
    o.ransac.confidence = float(conf.confidence)
    o.ransac.max_num_trials = int(conf.max_num_trials)
    o.ransac.random_seed = int(conf.random_seed)
    return o


def geometric_verification(
    db_path: PathLike,
    pairs: PathLike | Iterable[tuple[str, str]],
    options: VerificationConf | Mapping | None = None,
) -> int:
    """Verify the raw matches of ``pairs`` with COLMAP's two-view geometry (E/F/H RANSAC).

    Writes a two-view geometry with a configuration and its inlier matches for each pair (pycolmap
    ``verify_matches``); pairs with too few inliers stay unverified and are ignored by
    triangulation.

    Args:
        pairs: a pairs file (``name0 name1`` per line) or an iterable of (name0, name1).
        options: VerificationConf, or a dict of its fields.
    Returns:
        number of verified image pairs in the database afterwards (see ``verified_pairs``).
    """
    db_path = check_db(db_path)
    conf = as_conf(VerificationConf, options)
    with tempfile.TemporaryDirectory(prefix="colmap_pairs_") as tmpdir:
        if isinstance(pairs, (str, os.PathLike)):
            pairs_path = Path(pairs)
            if not pairs_path.is_file():
                raise ColmapError(f"pairs file not found: {pairs_path}")
        else:  # pycolmap reads the pairs from a file: a scratch one, deleted afterwards
            pairs_path = Path(tmpdir) / "pairs.txt"
            pairs_path.write_text("\n".join(f"{a} {b}" for a, b in pairs) + "\n")
        with colmap_logging():
            pycolmap.verify_matches(str(db_path), str(pairs_path), _two_view_options(conf))
    return len(verified_pairs(db_path))


def verified_pairs(db_path: PathLike) -> dict[tuple[int, int], int]:
    """(image_id0, image_id1) -> number of inlier matches, for every pair whose two-view geometry
    is verified (a configuration other than UNDEFINED / DEGENERATE and >= 1 inlier)."""
    bad = {
        pycolmap.TwoViewGeometryConfiguration.UNDEFINED,
        pycolmap.TwoViewGeometryConfiguration.DEGENERATE,
    }
    out = {}
    with pycolmap.Database.open(str(check_db(db_path))) as db:
        pair_ids, geoms = db.read_two_view_geometries()
        for pid, g in zip(pair_ids, geoms):
            n = len(g.inlier_matches)
            if g.config not in bad and n > 0:
                i0, i1 = pycolmap.pair_id_to_image_pair(int(pid))
                out[(int(i0), int(i1))] = n
    return out


# ------------------------------------------------------------------------------------------
# Images imported by COLMAP (unknown poses)
# ------------------------------------------------------------------------------------------
CAMERA_MODES = tuple(pycolmap.CameraMode.__members__)


def camera_mode(mode: str | pycolmap.CameraMode) -> pycolmap.CameraMode:
    """``'AUTO' | 'SINGLE' | 'PER_FOLDER' | 'PER_IMAGE'`` (any case) or the enum -> the enum."""
    if isinstance(mode, pycolmap.CameraMode):
        return mode
    key = str(mode).upper()
    if key not in pycolmap.CameraMode.__members__:
        raise ValueError(f"camera_mode {mode!r}: choose from {', '.join(CAMERA_MODES)}")
    return pycolmap.CameraMode.__members__[key]


def create_image_database(
    db_path: PathLike,
    image_dir: PathLike,
    names: Sequence[str],
    mode: str | pycolmap.CameraMode = "AUTO",
    image_options: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """A fresh COLMAP database holding ``names`` (relative to ``image_dir``) as images with
    cameras guessed by COLMAP (``pycolmap.import_images``: EXIF focal length as the prior where
    present, else ``default_focal_length_factor`` x the longer side; cameras shared as
    ``mode`` says). An existing file at ``db_path`` is replaced.

    Args:
        image_options: pycolmap ``ImageReaderOptions`` fields (``camera_model``,
            ``camera_params``, ...).
    Returns:
        name -> image_id of every imported image.
    Raises:
        ColmapError when COLMAP imports fewer images than ``names`` (unreadable files).
    """
    db_path = Path(db_path)
    opts = set_options(pycolmap.ImageReaderOptions(), image_options or {}, "image_options")
    if db_path.exists():
        db_path.unlink()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with pycolmap.Database.open(str(db_path)):
        pass  # an empty database (import_images needs the file)
    with colmap_logging(2):
        pycolmap.import_images(
            str(db_path), str(image_dir), camera_mode(mode), image_names=list(names), options=opts
        )
    ids = database_image_ids(db_path)
    missing = [n for n in names if n not in ids]
    if missing:
        raise ColmapError(
            f"{Path(image_dir) / missing[0]}: COLMAP could not import this image "
            f"({len(missing)} of {len(names)} not imported)"
        )
    return ids


__all__ = [
    "VerificationConf",
    "create_database",
    "check_db",
    "database_image_ids",
    "import_features",
    "import_matches",
    "import_verified_matches",
    "geometric_verification",
    "verified_pairs",
    "CAMERA_MODES",
    "camera_mode",
    "create_image_database",
]
