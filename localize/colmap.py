"""The pycolmap adapter (pinned 4.2.x), part 1: cameras, query lists, models and queries on a
reconstruction, plus the helpers the other parts share (COLMAP log level, option dicts).

The adapter is three modules, one job each; every pycolmap call of the toolkit sits in one of
them, so a pycolmap API change is fixed in one place:

- :mod:`localize.colmap` (this one): cameras and query lists with intrinsics, reference models
  (build / write / read) and queries on a ``pycolmap.Reconstruction`` (ids, tracks, points,
  projection);
- :mod:`localize.colmap_db`: the COLMAP database (reference or image import, keypoints,
  matches, geometric verification);
- :mod:`localize.colmap_sfm`: estimation (triangulation with fixed poses, mapping with unknown
  poses, Sim3 alignment, absolute pose of a query).

Pose math (quaternions, camera centres, pose errors) lives in :mod:`localize.geometry`; model
files read by hand (the folder check, the fast image list of ``images.bin`` / ``.txt``) in
:mod:`localize.colmap_model`.

Conventions
-----------
- Keypoints handed IN by callers are hloc coordinates: the centre of the top-left pixel is
  (0, 0). COLMAP puts the *corner* of the top-left pixel at (0, 0). The adapter adds 0.5 before
  anything reaches COLMAP (database keypoints, PnP 2D points) and never hands COLMAP
  coordinates back out (results are poses, ids, hloc keypoints and 3D points only).
- Poses are world-to-camera (``cam_from_world``). Quaternions outside the adapter are
  ``qvec_wxyz`` (w first, as in COLMAP text files and the Aachen submission format);
  pycolmap stores xyzw internally.
- Database ids (camera, rig, frame, image) are the SAME as in the reference model; each
  reference image sits in a trivial rig (rig_id = camera_id) and frame (frame_id = image_id).
- Bad input -> ``ColmapError`` (a ``RuntimeError``) with a one-line message naming the file
  and the problem.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pycolmap

from descriptors.util import atomic_dir
from localize.colmap_model import ColmapError, model_format
from localize.geometry import qt_to_rigid
from localize.parsers import check_name, read_text_lines

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


@contextlib.contextmanager
def colmap_logging(min_level: int = 1):
    """COLMAP's glog INFO lines only when the adapter's logger (``localize.colmap``) is at
    DEBUG; otherwise messages below ``min_level`` (0 INFO, 1 WARNING, 2 ERROR) are hidden."""
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


def as_conf(cls, options):
    """``options`` (None, an instance of the dataclass ``cls`` or a dict of its fields) -> an
    instance of ``cls``; an unknown field is a ValueError."""
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


__all__ = [
    "ColmapError",
    "PathLike",
    "MAX_FOCAL_PER_SIDE",
    "set_verbose",
    "colmap_logging",
    "set_options",
    "as_conf",
    "check_camera",
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
    "registered_image_ids",
    "image_keypoints",
    "points_xyz_track_length",
    "point_observations",
    "project_points",
    "camera_matrices",
]
