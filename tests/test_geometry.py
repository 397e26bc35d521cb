"""localize.geometry: quaternion / matrix conversions, camera centres, pose errors."""

from __future__ import annotations

import math

import numpy as np
import pycolmap
import pytest

from localize import geometry as geo


def _random_q(rng) -> np.ndarray:
    q = rng.normal(size=4)
    return q / np.linalg.norm(q)


def _rot(axis: str, deg: float) -> np.ndarray:
    """Right-handed rotation matrix about one axis, written out by hand."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def test_quaternion_matrix_round_trip_and_convention():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q, t = _random_q(rng), rng.normal(size=3)
        q2, t2 = geo.rigid_to_qt(geo.qt_to_rigid(q, t))
        assert q2[0] >= 0 and np.allclose(q2, q * np.sign(q[0])) and np.allclose(t2, t)
        R = geo.qvec_to_rotmat(q)
        assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1.0)
        assert np.allclose(geo.rotmat_to_qvec(R), q * np.sign(q[0]))
    # w first: 90 deg about z is (cos 45, 0, 0, sin 45)
    q = geo.rotmat_to_qvec(_rot("z", 90))
    assert np.allclose(q, [math.sqrt(0.5), 0, 0, math.sqrt(0.5)])
    assert np.allclose(geo.qvec_to_rotmat([2.0, 0, 0, 0]), np.eye(3))  # normalised
    with pytest.raises(ValueError, match="quaternion"):
        geo.qt_to_rigid([0, 0, 0, 0], [0, 0, 0])


def test_camera_center_direction_and_pose_from_center():
    R = _rot("y", 30) @ _rot("x", -10)  # world-to-camera
    c = np.array([1.0, -2.0, 5.0])
    q, t = geo.pose_from_center(R, c)
    assert np.allclose(t, -R @ c)
    assert np.allclose(geo.camera_center((q, t)), c)
    assert np.allclose(geo.camera_center(geo.qt_to_rigid(q, t)), c)
    assert np.allclose(geo.viewing_direction((q, t)), R[2])
    # the optical axis maps to the camera's +z
    assert np.allclose(R @ geo.viewing_direction((q, t)), [0, 0, 1])
    rigid = geo.as_rigid((q, t))
    assert isinstance(rigid, pycolmap.Rigid3d)
    qq, tt = geo.as_qt(rigid)
    assert np.allclose(qq, q) and np.allclose(tt, t)


def test_pose_error_definition():
    R0 = _rot("y", 20)
    q0, t0 = geo.pose_from_center(R0, [0.0, 0.0, 0.0])
    # rotate 10 deg about the optical axis and move the centre by 1 m
    R1 = _rot("z", 10) @ R0
    q1, t1 = geo.pose_from_center(R1, [1.0, 0.0, 0.0])
    dt, dr = geo.pose_error(q1, t1, q0, t0)
    assert dt == pytest.approx(1.0) and dr == pytest.approx(10.0)
    # q and -q are one rotation; the error is symmetric
    assert geo.pose_error(-q1, t1, q0, t0) == pytest.approx((dt, dr))
    assert geo.pose_error(q0, t0, q1, t1) == pytest.approx((dt, dr))
    # same rotation, different translation: only the centre moves (c = -R^T t)
    dt2, dr2 = geo.pose_error(q0, t0 + R0 @ np.array([0.0, 0.3, 0.4]), q0, t0)
    assert dt2 == pytest.approx(0.5) and dr2 == pytest.approx(0.0, abs=1e-6)
    # agrees with the trace formula on random poses
    rng = np.random.default_rng(1)
    for _ in range(10):
        qa, qb = _random_q(rng), _random_q(rng)
        ta, tb = rng.normal(size=3), rng.normal(size=3)
        Ra, Rb = geo.qvec_to_rotmat(qa), geo.qvec_to_rotmat(qb)
        want_dr = math.degrees(math.acos(np.clip((np.trace(Ra @ Rb.T) - 1) / 2, -1, 1)))
        want_dt = np.linalg.norm(-Ra.T @ ta + Rb.T @ tb)
        assert geo.pose_error(qa, ta, qb, tb) == pytest.approx((want_dt, want_dr), abs=1e-6)
