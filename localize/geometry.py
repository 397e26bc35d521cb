"""Pose math, the one home of it: quaternions, R/t <-> camera centre, pose errors.

Conventions (those of COLMAP text files, hloc and the Aachen submission format):

- a pose is world-to-camera (``cam_from_world``): ``x_cam = R x_world + t``;
- quaternions are ``qvec_wxyz`` (4,) float64, w first (pycolmap stores xyzw internally: only
  :func:`qt_to_rigid` / :func:`rigid_to_qt` convert);
- the camera centre is ``c = -R^T t`` (world coordinates, metres), the viewing direction the
  camera's z axis in world coordinates, ``R[2]``.

pycolmap's ``Rigid3d`` / ``Rotation3d`` do the work; this module only fixes the conventions.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import pycolmap

#: (q wxyz (4,), t (3,)) world-to-camera, or a pycolmap.Rigid3d
Pose = Union[tuple[np.ndarray, np.ndarray], pycolmap.Rigid3d]


def qt_to_rigid(qvec_wxyz: Sequence[float], tvec: Sequence[float]) -> pycolmap.Rigid3d:
    """(qw, qx, qy, qz), (tx, ty, tz) world-to-camera -> pycolmap.Rigid3d (q normalised).

    Raises:
        ValueError for a zero or non-finite quaternion.
    """
    q = np.asarray(qvec_wxyz, np.float64).reshape(4)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"invalid quaternion {q.tolist()}")
    q = q / n
    rot = pycolmap.Rotation3d(np.array([q[1], q[2], q[3], q[0]]))
    return pycolmap.Rigid3d(rot, np.asarray(tvec, np.float64).reshape(3))


def rigid_to_qt(rigid: pycolmap.Rigid3d) -> tuple[np.ndarray, np.ndarray]:
    """pycolmap.Rigid3d -> (qvec_wxyz (4,) float64 with qw >= 0, tvec (3,) float64)."""
    xyzw = np.asarray(rigid.rotation.quat, np.float64).reshape(4)
    q = np.array([xyzw[3], xyzw[0], xyzw[1], xyzw[2]])
    q /= np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    return q, np.asarray(rigid.translation, np.float64).reshape(3).copy()


def as_rigid(pose: Pose) -> pycolmap.Rigid3d:
    """A pycolmap.Rigid3d, or (q wxyz, t), -> pycolmap.Rigid3d."""
    if isinstance(pose, pycolmap.Rigid3d):
        return pose
    q, t = pose
    return qt_to_rigid(q, t)


def as_qt(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """A pycolmap.Rigid3d, or (q wxyz, t), -> (q (4,) float64, t (3,) float64)."""
    if isinstance(pose, pycolmap.Rigid3d):
        return rigid_to_qt(pose)
    q, t = pose
    return np.asarray(q, np.float64).reshape(4), np.asarray(t, np.float64).reshape(3)


def qvec_to_rotmat(qvec_wxyz: Sequence[float]) -> np.ndarray:
    """(4,) wxyz (normalised here) -> (3, 3) float64 rotation matrix."""
    return np.asarray(qt_to_rigid(qvec_wxyz, np.zeros(3)).rotation.matrix(), np.float64)


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) wxyz float64 with qw >= 0."""
    rot = pycolmap.Rotation3d(np.ascontiguousarray(R, np.float64).reshape(3, 3))
    q, _ = rigid_to_qt(pycolmap.Rigid3d(rot, np.zeros(3)))
    return q


def camera_center(pose: Pose) -> np.ndarray:
    """(3,) float64 camera centre ``-R^T t`` (world coordinates) of a world-to-camera pose."""
    return np.asarray(as_rigid(pose).tgt_origin_in_src(), np.float64).reshape(3)


def pose_from_center(R: np.ndarray, center: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera rotation (3, 3) and camera centre (3,) -> (qvec_wxyz (4,), t = -R c)."""
    R = np.asarray(R, np.float64).reshape(3, 3)
    return rotmat_to_qvec(R), -R @ np.asarray(center, np.float64).reshape(3)


def viewing_direction(pose: Pose) -> np.ndarray:
    """(3,) float64 unit optical axis (camera z) in world coordinates: ``R[2]``."""
    return np.asarray(as_rigid(pose).rotation.matrix(), np.float64)[2].copy()


def pose_error(
    q_est: Sequence[float], t_est: Sequence[float], q_gt: Sequence[float], t_gt: Sequence[float]
) -> tuple[float, float]:
    """Error of an estimated world-to-camera pose (the Aachen benchmark's definition).

    Returns:
        (dt_m, dR_deg): distance between the camera centres ``-R^T t`` in model units (metres),
        and the angle of the relative rotation ``R_est R_gt^T`` in degrees. ``q`` and ``-q``
        are the same rotation.
    """
    est, gt = qt_to_rigid(q_est, t_est), qt_to_rigid(q_gt, t_gt)
    dt = float(np.linalg.norm(camera_center(est) - camera_center(gt)))
    return dt, float(np.degrees(est.rotation.angle_to(gt.rotation)))


__all__ = [
    "Pose",
    "qt_to_rigid",
    "rigid_to_qt",
    "as_rigid",
    "as_qt",
    "qvec_to_rotmat",
    "rotmat_to_qvec",
    "camera_center",
    "pose_from_center",
    "viewing_direction",
    "pose_error",
]


def fundamental(
    K0: np.ndarray, R0: np.ndarray, t0: np.ndarray, K1: np.ndarray, R1: np.ndarray, t1: np.ndarray
) -> np.ndarray:
    """(3, 3) fundamental matrix with ``x1^T F x0 = 0`` from world-to-camera poses
    (``x ~ K (R X + t)``, pixel coordinates)."""
    R = R1 @ R0.T
    t = t1 - R @ t0
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(K1).T @ tx @ R @ np.linalg.inv(K0)


def epipolar_distance(F: np.ndarray, xy0: np.ndarray, xy1: np.ndarray) -> np.ndarray:
    """(N0, N1) float32 symmetric epipolar distance (pixels): the larger of the distance of x1
    to the line F x0 and of x0 to the line F^T x1. xy0 (N0, 2), xy1 (N1, 2) pixels."""
    h0 = np.concatenate([xy0, np.ones((len(xy0), 1))], 1)
    h1 = np.concatenate([xy1, np.ones((len(xy1), 1))], 1)
    l1 = h0 @ F.T  # (N0, 3) lines in image 1
    l0 = h1 @ F  # (N1, 3) lines in image 0
    alg = (l1 @ h1.T).astype(np.float32)  # (N0, N1) x1^T F x0
    n1 = np.linalg.norm(l1[:, :2], axis=1).astype(np.float32)[:, None]
    n0 = np.linalg.norm(l0[:, :2], axis=1).astype(np.float32)[None, :]
    a = np.abs(alg)
    return np.maximum(a / np.maximum(n1, 1e-12), a / np.maximum(n0, 1e-12))


def epipolar_error(F: np.ndarray, xy0: np.ndarray, xy1: np.ndarray) -> np.ndarray:
    """(N,) float64 symmetric epipolar distance (pixels) of corresponding points xy0[i] <->
    xy1[i], (N, 2) each: the larger of the distances of x1 to F x0 and of x0 to F^T x1."""
    h0 = np.concatenate([np.asarray(xy0, np.float64).reshape(-1, 2), np.ones((len(xy0), 1))], 1)
    h1 = np.concatenate([np.asarray(xy1, np.float64).reshape(-1, 2), np.ones((len(xy1), 1))], 1)
    l1, l0 = h0 @ F.T, h1 @ F
    alg = np.abs(np.sum(l1 * h1, 1))
    return np.maximum(
        alg / np.maximum(np.linalg.norm(l1[:, :2], axis=1), 1e-12),
        alg / np.maximum(np.linalg.norm(l0[:, :2], axis=1), 1e-12),
    )


def project(
    K: np.ndarray, R: np.ndarray, t: np.ndarray, X: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, 3) world points with a pinhole camera ``K`` (3, 3) (hloc pixel centres) and
    world-to-camera ``R`` (3, 3), ``t`` (3,). Returns (uv (N, 2) pixel-centre coords, depth (N,) metres)."""
    Xc = np.asarray(X, np.float64).reshape(-1, 3) @ np.asarray(R).T + np.asarray(t).reshape(3)
    z = Xc[:, 2]
    p = Xc @ np.asarray(K).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = p[:, :2] / p[:, 2:3]
    return uv, z
