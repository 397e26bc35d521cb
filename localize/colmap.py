"""The pycolmap adapter (pinned 4.2.x): query lists, models, database, triangulation, PnP.

Triangulation, localization and the dataset writers go through the functions below, so a
pycolmap API change is fixed in one place. Pose math (quaternions, camera centres, pose errors)
lives in :mod:`localize.geometry`; model files read by hand (the folder check, the fast image
list of ``images.bin`` / ``.txt``) in :mod:`localize.colmap_model`.

Conventions
-----------
- Keypoints handed IN by callers are hloc coordinates: the centre of the top-left pixel is
  (0, 0). COLMAP puts the *corner* of the top-left pixel at (0, 0). This module adds 0.5 before
  anything reaches COLMAP (database keypoints, PnP 2D points) and never hands COLMAP
  coordinates back out (results are poses, ids and 3D points only).
- Poses are world-to-camera (``cam_from_world``). Quaternions outside this module are
  ``qvec_wxyz`` (w first, as in COLMAP text files and the Aachen submission format);
  pycolmap stores xyzw internally.
- Database ids (camera, rig, frame, image) are the SAME as in the reference model; each
  reference image sits in a trivial rig (rig_id = camera_id) and frame (frame_id = image_id).
- Bad input -> ``ColmapError`` (a ``RuntimeError``) with a one-line message naming the file
  and the problem.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pycolmap
from tqdm import tqdm

from descriptors.util import atomic_dir, atomic_write
from localize.colmap_model import ColmapError, model_format
from localize.geometry import qt_to_rigid, rigid_to_qt
from localize.parsers import check_name, read_text_lines

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


@contextlib.contextmanager
def _colmap_logging(min_level: int = 1):
    """COLMAP's glog INFO lines only when this module's logger is at DEBUG; otherwise messages
    below ``min_level`` (0 INFO, 1 WARNING, 2 ERROR) are hidden."""
    old = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 0 if logger.isEnabledFor(logging.DEBUG) else min_level
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = old


def set_verbose(verbose: bool) -> None:
    """COLMAP's glog INFO lines on (``verbose``) or off (warnings and errors only) for every
    later pycolmap call; for command-line entry points (``--verbose``)."""
    pycolmap.logging.minloglevel = 0 if verbose else 1
    if verbose:
        logger.setLevel(logging.DEBUG)


# ------------------------------------------------------------------------------------------
# Default options (dict conf at the top, as every module)
# ------------------------------------------------------------------------------------------
@dataclass
class VerificationConf:
    """Geometric verification of putative matches (pycolmap TwoViewGeometryOptions)."""

    min_num_inliers: int = 15
    max_error_px: float = 4.0  # RANSAC threshold (pixels) for E / F / H
    confidence: float = 0.9999
    max_num_trials: int = 10000
    min_inlier_ratio: float = 0.1
    random_seed: int = 0  # RANSAC seed (-1 = random): deterministic by default


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
# Cameras and query lists
# ------------------------------------------------------------------------------------------
#: largest focal length accepted, in units of the image's longer side (a 1e308 px focal is a typo)
MAX_FOCAL_PER_SIDE = 1e4


def check_camera(cam: pycolmap.Camera) -> pycolmap.Camera:
    """Range checks of intrinsics: width and height >= 1, every param finite, focal length(s)
    in ``(0, MAX_FOCAL_PER_SIDE * max(w, h)]``. Returns ``cam``.

    Raises:
        ValueError saying which value is out of range.
    """
    w, h = int(cam.width), int(cam.height)
    if w < 1 or h < 1:
        raise ValueError(f"image size {w}x{h}: width and height must be >= 1")
    params = np.asarray(cam.params, np.float64)
    if not np.isfinite(params).all():
        raise ValueError(f"camera params must be finite, got {params.tolist()}")
    f = params[list(cam.focal_length_idxs())]
    if not ((f > 0).all() and (f <= MAX_FOCAL_PER_SIDE * max(w, h)).all()):
        raise ValueError(
            f"focal length {f.tolist()} px out of range (0, "
            f"{MAX_FOCAL_PER_SIDE * max(w, h):g}] for a {w}x{h} image"
        )
    return cam


def camera_from_query_line(line: str) -> tuple[str, pycolmap.Camera]:
    """Parse one ``name MODEL width height params...`` line (hloc's ``parse_image_list``).

    Args:
        line: e.g. ``query/night/nexus5x/x.jpg SIMPLE_RADIAL 1600 1200 1400.5 800 600 0.0123``.
    Returns:
        (name, pycolmap.Camera) with camera_id left unset (INVALID).
    Raises:
        ValueError: with a message describing what is wrong with the line.
    """
    fields = line.strip().split()
    if len(fields) < 5:
        raise ValueError(f"expected 'name MODEL width height params...', got {line.strip()!r}")
    name, model, w, h, *params = fields
    try:
        width, height = int(w), int(h)
        params_f = [float(p) for p in params]
    except ValueError as e:
        raise ValueError(f"non-numeric width/height/params in {line.strip()!r}") from e
    try:
        cam = pycolmap.Camera(model=model, width=width, height=height, params=params_f)
    except (RuntimeError, ValueError) as e:  # pycolmap: unknown model name
        raise ValueError(f"cannot build a {model} camera from {line.strip()!r}: {e}") from e
    if not cam.verify_params():
        raise ValueError(
            f"model {model} expects a different number of params than "
            f"{len(params_f)} in {line.strip()!r}"
        )
    return name, check_camera(cam)


def parse_query_list(path: PathLike) -> list[tuple[str, pycolmap.Camera]]:
    """Read a query list with intrinsics (``queries/*_time_queries_with_intrinsics.txt``).

    Empty lines and lines starting with ``#`` are skipped. Order is file order.

    Returns:
        list of (name, pycolmap.Camera).
    Raises:
        FileNotFoundError if the file is missing; ColmapError naming file and line number for a
        malformed line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"query list not found: {path}")
    out = []
    for lineno, line in enumerate(read_text_lines(path), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            out.append(camera_from_query_line(s))
        except ValueError as e:
            raise ColmapError(f"{path}:{lineno}: {e}") from None
        check_name(out[-1][0], f"{path}:{lineno}")  # relative, inside the image root
    return out


def camera_from_dict(cam: Mapping) -> pycolmap.Camera:
    """``{model, width, height, params}`` -> pycolmap.Camera (camera_id unset)."""
    try:
        c = pycolmap.Camera(
            model=str(cam["model"]),
            width=int(cam["width"]),
            height=int(cam["height"]),
            params=[float(p) for p in cam["params"]],
        )
    except KeyError as e:
        raise ColmapError(f"camera dict is missing key {e}: {dict(cam)}") from None
    if not c.verify_params():
        raise ColmapError(f"wrong number of params for {cam['model']}: {list(cam['params'])}")
    try:
        return check_camera(c)
    except ValueError as e:
        raise ColmapError(f"camera {dict(cam)}: {e}") from None


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------
def build_reference_reconstruction(
    cameras: Sequence[Mapping], images: Sequence[Mapping]
) -> pycolmap.Reconstruction:
    """In-memory reconstruction with posed images and no 3D points.

    Args:
        cameras: list of ``{model, width, height, params}``; camera id = list index + 1.
        images: list of ``{name, camera_idx (0-based into cameras), qvec_wxyz, tvec}``
            (world-to-camera); image id = list index + 1.
    """
    rec = pycolmap.Reconstruction()
    for i, c in enumerate(cameras):
        cam = camera_from_dict(c)
        cam.camera_id = i + 1
        rec.add_camera_with_trivial_rig(cam)
    seen = set()
    for j, im in enumerate(images):
        try:
            name, ci = str(im["name"]), int(im["camera_idx"])
            pose = qt_to_rigid(im["qvec_wxyz"], im["tvec"])
        except KeyError as e:
            raise ColmapError(f"image dict #{j} is missing key {e}") from None
        if not 0 <= ci < len(cameras):
            raise ColmapError(f"image {name}: camera_idx {ci} out of range [0, {len(cameras)})")
        if name in seen:
            raise ColmapError(f"duplicate image name {name}")
        seen.add(name)
        image = pycolmap.Image(name=name, camera_id=ci + 1, image_id=j + 1)
        rec.add_image_with_trivial_frame(image, pose)
    return rec


def write_reference_model(
    out_dir: PathLike, cameras: Sequence[Mapping], images: Sequence[Mapping]
) -> Path:
    """Write a COLMAP binary model (cameras.bin, images.bin, points3D.bin; no points).

    Also writes rigs.bin / frames.bin as pycolmap 4.2 does. The folder is written next to
    ``out_dir`` and swapped in whole (``descriptors.util.atomic_dir``): an existing ``out_dir``
    is replaced. See ``build_reference_reconstruction`` for the argument format.

    Returns:
        Path of ``out_dir``.
    """
    out_dir = Path(out_dir)
    rec = build_reference_reconstruction(cameras, images)
    with atomic_dir(out_dir) as tmp:
        rec.write_binary(str(tmp))
    return out_dir


def read_model(path: PathLike) -> pycolmap.Reconstruction:
    """Read a COLMAP model directory (binary or text).

    Raises:
        ColmapError naming the directory when it or one of cameras/images/points3D is missing,
        or when pycolmap cannot parse it.
    """
    path = Path(path)
    model_format(path)
    try:
        rec = pycolmap.Reconstruction(str(path))
    except (RuntimeError, ValueError) as e:
        raise ColmapError(f"cannot read COLMAP model {path}: {str(e).splitlines()[0]}") from None
    return rec


def image_ids_by_name(reconstruction: pycolmap.Reconstruction) -> dict[str, int]:
    """name -> image_id for every image of a reconstruction."""
    return {im.name: int(i) for i, im in reconstruction.images.items()}


def image_track(image: pycolmap.Image) -> dict[int, int]:
    """{keypoint index -> point3D_id} of one image's observations that have a 3D point (the
    indices come from COLMAP's own list, so the cost is the image's observations only)."""
    return {
        int(i): int(image.point2D(int(i)).point3D_id) for i in image.get_observation_point2D_idxs()
    }


def point_tracks(reconstruction: pycolmap.Reconstruction) -> dict[str, dict[int, int]]:
    """image name -> {keypoint index -> point3D_id} for every observation with a 3D point.

    Keypoint indices are those of the features imported with ``import_features`` (the index
    into the image's hloc keypoint array). Images without observations map to ``{}``.
    """
    return {im.name: image_track(im) for im in reconstruction.images.values()}


def points_xyz(reconstruction: pycolmap.Reconstruction) -> dict[int, np.ndarray]:
    """point3D_id -> (3,) float64 world coordinates."""
    return {
        int(i): np.asarray(p.xyz, np.float64).copy() for i, p in reconstruction.points3D.items()
    }


def registered_image_ids(reconstruction: pycolmap.Reconstruction) -> list[int]:
    """Sorted ids of the registered images."""
    return sorted(int(i) for i in reconstruction.reg_image_ids())


def image_keypoints(
    reconstruction: pycolmap.Reconstruction, image_id: int
) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, xy (N, 2) float64 hloc pixel coordinates of every keypoint of the image,
    point3D ids (N,) int64 with -1 where the keypoint has no 3D point)."""
    im = reconstruction.images[int(image_id)]
    pts = im.points2D
    xy = np.array([p.xy for p in pts], np.float64).reshape(-1, 2) - 0.5
    ids = np.array([p.point3D_id if p.has_point3D() else -1 for p in pts], np.int64)
    return im.name, xy, ids


def points_xyz_track_length(
    reconstruction: pycolmap.Reconstruction, ids: Iterable[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(xyz (K, 3) float64 world coordinates, track length (K,) int64) of 3D points ``ids``."""
    pts = [reconstruction.points3D[int(i)] for i in ids]
    return (
        np.array([p.xyz for p in pts], np.float64).reshape(-1, 3),
        np.array([p.track.length() for p in pts], np.int64),
    )


def point_observations(reconstruction: pycolmap.Reconstruction, point3D_id: int) -> dict[int, int]:
    """{image_id -> keypoint index} of the images observing one 3D point."""
    return {
        int(e.image_id): int(e.point2D_idx)
        for e in reconstruction.points3D[int(point3D_id)].track.elements
    }


# ------------------------------------------------------------------------------------------
# Database
# ------------------------------------------------------------------------------------------
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


def _check_db(db_path: PathLike) -> Path:
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ColmapError(f"COLMAP database not found: {db_path}")
    return db_path


def database_image_ids(db_path: PathLike) -> dict[str, int]:
    """name -> image_id of every image in a COLMAP database."""
    with pycolmap.Database.open(str(_check_db(db_path))) as db:
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
    with pycolmap.Database.open(str(_check_db(db_path))) as db:
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
    with pycolmap.Database.open(str(_check_db(db_path))) as db:
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
    with pycolmap.Database.open(str(_check_db(db_path))) as db:
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


def project_points(
    reconstruction: pycolmap.Reconstruction, image_id: int, xyz: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into one image of a reconstruction.

    Args:
        xyz: (N, 3) float world coordinates.
    Returns:
        uv (N, 2) float64 hloc pixel coordinates (pixel centre at integers; NaN behind the
        camera) and depth (N,) float64 along the optical axis.
    """
    im = reconstruction.images[int(image_id)]
    cam = reconstruction.cameras[im.camera_id]
    T = np.asarray(im.cam_from_world().matrix(), np.float64)
    X = np.asarray(xyz, np.float64).reshape(-1, 3)
    Xc = X @ T[:, :3].T + T[:, 3]
    uv = np.full((len(X), 2), np.nan)
    front = Xc[:, 2] > 1e-9
    if front.any():
        uv[front] = np.asarray(cam.img_from_cam(Xc[front]), np.float64).reshape(-1, 2) - 0.5
    return uv, Xc[:, 2]


def camera_matrices(
    reconstruction: pycolmap.Reconstruction, image_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K (3, 3) in hloc pixel coordinates, R (3, 3), t (3,)) of an image (world-to-camera,
    distortion ignored): x_hloc ~ K (R X + t)."""
    im = reconstruction.images[int(image_id)]
    cam = reconstruction.cameras[im.camera_id]
    K = np.asarray(cam.calibration_matrix(), np.float64).copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    T = np.asarray(im.cam_from_world().matrix(), np.float64)
    return K, T[:, :3].copy(), T[:, 3].copy()


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
    db_path = _check_db(db_path)
    conf = _as_conf(VerificationConf, options)
    with tempfile.TemporaryDirectory(prefix="colmap_pairs_") as tmpdir:
        if isinstance(pairs, (str, os.PathLike)):
            pairs_path = Path(pairs)
            if not pairs_path.is_file():
                raise ColmapError(f"pairs file not found: {pairs_path}")
        else:  # pycolmap reads the pairs from a file: a scratch one, deleted afterwards
            pairs_path = Path(tmpdir) / "pairs.txt"
            pairs_path.write_text("\n".join(f"{a} {b}" for a, b in pairs) + "\n")
        with _colmap_logging():
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
    with pycolmap.Database.open(str(_check_db(db_path))) as db:
        pair_ids, geoms = db.read_two_view_geometries()
        for pid, g in zip(pair_ids, geoms):
            n = len(g.inlier_matches)
            if g.config not in bad and n > 0:
                i0, i1 = pycolmap.pair_id_to_image_pair(int(pid))
                out[(int(i0), int(i1))] = n
    return out


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
    db_path = _check_db(db_path)
    conf = _as_conf(TriangulationConf, options)
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
    with _colmap_logging(1 if extract_colors else 2):
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
    with _colmap_logging(2):
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
    db_path = _check_db(db_path)
    o = mapper_options(mapper, options, num_threads, random_seed)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    with _colmap_logging(2):
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


def set_options(target: Any, options: Mapping[str, Any], where: str) -> Any:
    """Set pycolmap option fields from a (nested) dict; an unknown field is a ValueError naming
    it. Returns ``target``."""
    for k, v in options.items():
        if not hasattr(target, k):
            raise ValueError(f"{where}: unknown pycolmap option {k!r} of {type(target).__name__}")
        if isinstance(v, Mapping):
            set_options(getattr(target, k), v, f"{where}.{k}")
        else:
            setattr(target, k, v)
    return target


def _as_conf(cls, options):
    if options is None:
        return cls()
    if isinstance(options, cls):
        return options
    if isinstance(options, Mapping):
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} option(s): {sorted(unknown)}")
        return cls(**options)
    raise TypeError(f"options must be {cls.__name__}, a dict or None, got {type(options)}")


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
    "ColmapError",
    "VerificationConf",
    "TriangulationConf",
    "camera_from_query_line",
    "parse_query_list",
    "camera_from_dict",
    "build_reference_reconstruction",
    "write_reference_model",
    "read_model",
    "image_ids_by_name",
    "image_track",
    "point_tracks",
    "points_xyz",
    "create_database",
    "database_image_ids",
    "import_features",
    "import_matches",
    "import_verified_matches",
    "project_points",
    "camera_matrices",
    "geometric_verification",
    "verified_pairs",
    "triangulate",
    "estimate_absolute_pose",
    "set_verbose",
    "MAPPERS",
    "CAMERA_MODES",
    "camera_mode",
    "create_image_database",
    "mapper_options",
    "run_mapping",
    "align_to_centers",
]
