"""Textured-plane 3D worlds rendered with numpy + OpenCV (no GL): the toolkit's one renderer.

Both synthetic worlds use it: the street-scene plaza of the Aachen-layout writer
(``localize.data.scene.make_street_scene``, ``localize.data.aachen``) and the revisitop landmarks
(``localize.data.roxford_synth``). Camera, projection and look-at helpers live here too.

A scene is a list of textured rectangles (facades, kiosks, ground tiles) in a metric world. Each
plane is drawn with ``cv2.warpPerspective`` through its plane-induced homography (texture pixels
-> image pixels), restricted to the plane's polygon clipped to the camera's near plane, and
composited with a z-buffer of per-pixel inverse depth, so occlusion between planes is exact.

Frames and conventions
----------------------
- World: metres; x east, **y down** (ground is the plane y = 0, things above it have y < 0),
  z north. With y down an upright camera needs no axis flip, so COLMAP / OpenCV poses apply as is.
- Camera: x right, y down, z forward. Poses are world-to-camera: ``x_cam = R @ x_world + t``
  (COLMAP ``cam_from_world``); the camera centre is ``-R.T @ t``.
- ``K`` (3, 3) is in OpenCV / hloc pixel convention: pixel centres at integer coordinates, so
  ``u = K @ x_cam / z`` is directly comparable to hloc keypoints. COLMAP puts the pixel
  corner at 0: use ``colmap_params(K)`` to get COLMAP's ``f, cx, cy`` (cx + 0.5, cy + 0.5).
- Textures: texture pixel (col j, row i) centre lies at
  ``origin + (j + 0.5) * (w_m / Wt) * u_axis + (i + 0.5) * (h_m / Ht) * v_axis``
  (``Plane.texel_to_world``).
- Planes are double-sided. ``Plane.normal`` = u x v points AWAY from a viewer who sees the
  texture unmirrored (u right, v down); ``Plane.is_front_facing(center)`` tests that side.
- Images are (H, W, 3) uint8 RGB.

Main entry points: ``Plane``, ``Scene``, ``intrinsics``, ``look_at``, ``look_at_point``,
``Camera``, ``project``, ``render``, ``write_rgb``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from descriptors.data import synth
from localize import geometry

# Defaults ---------------------------------------------------------------------------------
NEAR_M = 0.05  # near clipping distance (metres)
DAY_SKY_TOP = (150, 185, 230)  # RGB sky gradient (top -> horizon)
DAY_SKY_HORIZON = (205, 220, 240)
NIGHT_SKY = (8, 10, 22)
NIGHT_AMBIENT = 0.08  # night lighting: ambient + sum of lamps gain / (1 + d^2 / r2)
NIGHT_LAMP_GAIN = 1.0
NIGHT_LAMP_R2 = 20.0
NIGHT_DARKNESS = 1.0  # synth.day_to_night darkness


@dataclass
class Plane:
    """A textured rectangle in the world.

    Attributes:
        origin: (3,) world position of the texture's top-left corner (corner, not texel centre).
        u_axis: (3,) unit vector along texture columns (x in the texture).
        v_axis: (3,) unit vector along texture rows (y in the texture), orthogonal to u_axis.
        size_m: (width, height) of the rectangle in metres along u_axis, v_axis.
        texture: (Ht, Wt, 3) uint8 RGB.
        shade: multiplicative brightness of the whole plane in day renders (fake sun shading).
        name: free-form label (tests, debugging).
    """

    origin: np.ndarray
    u_axis: np.ndarray
    v_axis: np.ndarray
    size_m: tuple[float, float]
    texture: np.ndarray
    shade: float = 1.0
    name: str = ""
    _pyramid: list = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.origin = np.asarray(self.origin, np.float64).reshape(3)
        u = np.asarray(self.u_axis, np.float64).reshape(3)
        v = np.asarray(self.v_axis, np.float64).reshape(3)
        self.u_axis = u / np.linalg.norm(u)
        self.v_axis = v / np.linalg.norm(v)
        if abs(float(self.u_axis @ self.v_axis)) > 1e-6:
            raise ValueError(f"plane {self.name!r}: u_axis and v_axis are not orthogonal")
        self.size_m = (float(self.size_m[0]), float(self.size_m[1]))
        tex = np.asarray(self.texture)
        if tex.dtype != np.uint8 or tex.ndim != 3 or tex.shape[2] != 3:
            raise ValueError(
                f"plane {self.name!r}: texture must be (H, W, 3) uint8, got {tex.shape} {tex.dtype}"
            )
        self.texture = np.ascontiguousarray(tex)

    @property
    def normal(self) -> np.ndarray:
        """(3,) unit normal u x v (points away from a viewer who sees the texture unmirrored)."""
        n = np.cross(self.u_axis, self.v_axis)
        return n / np.linalg.norm(n)

    def is_front_facing(self, center: Sequence[float]) -> bool:
        """True when a camera at ``center`` (world, metres) sees the texture unmirrored."""
        return float(self.normal @ (np.asarray(center, np.float64) - self.origin)) < 0.0

    def surface_grid(self, n: int) -> np.ndarray:
        """(n*n, 3) world points: centres of an n x n grid of cells over the rectangle
        (row-major: v varies slowest)."""
        a = (np.arange(n) + 0.5) / n
        uu, vv = np.meshgrid(a * self.size_m[0], a * self.size_m[1])
        return self.origin + uu.reshape(-1, 1) * self.u_axis + vv.reshape(-1, 1) * self.v_axis

    @property
    def corners(self) -> np.ndarray:
        """(4, 3) world corners in order origin, +u, +u+v, +v."""
        w, h = self.size_m
        o, u, v = self.origin, self.u_axis, self.v_axis
        return np.stack([o, o + w * u, o + w * u + h * v, o + h * v])

    def texel_scale(self) -> tuple[float, float]:
        """Metres per texel along u and v."""
        return self.size_m[0] / self.texture.shape[1], self.size_m[1] / self.texture.shape[0]

    def texel_to_world(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) texel coordinates (col, row; centres at integers) -> (N, 3) world points."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        su, sv = self.texel_scale()
        return (
            self.origin
            + ((xy[:, :1] + 0.5) * su) * self.u_axis
            + ((xy[:, 1:2] + 0.5) * sv) * self.v_axis
        )

    def homography_texel_to_image(
        self, K: np.ndarray, R: np.ndarray, t: np.ndarray, level: int = 0
    ) -> np.ndarray:
        """(3, 3) H mapping texel coords of pyramid ``level`` (centre convention) to image pixels."""
        tex = self.pyramid(level)
        su = self.size_m[0] / tex.shape[1]
        sv = self.size_m[1] / tex.shape[0]
        Ru, Rv = R @ self.u_axis, R @ self.v_axis
        c0 = R @ (self.origin + 0.5 * su * self.u_axis + 0.5 * sv * self.v_axis) + t
        H = K @ np.stack([Ru * su, Rv * sv, c0], axis=1)
        return H

    def pyramid(self, level: int) -> np.ndarray:
        """Texture at pyramid ``level`` (each level halves the size with area averaging)."""
        if not self._pyramid:
            self._pyramid.append(self.texture)
        while len(self._pyramid) <= level:
            prev = self._pyramid[-1]
            if min(prev.shape[:2]) <= 4:
                break
            nxt = cv2.resize(
                prev,
                (max(prev.shape[1] // 2, 1), max(prev.shape[0] // 2, 1)),
                interpolation=cv2.INTER_AREA,
            )
            self._pyramid.append(nxt)
        return self._pyramid[min(level, len(self._pyramid) - 1)]


@dataclass
class Scene:
    """Planes plus night-time street lamps (world positions, metres)."""

    planes: list[Plane]
    lamps: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    name: str = "scene"
    bounds_xz: tuple[float, float, float, float] = (-1e9, 1e9, -1e9, 1e9)  # xmin,xmax,zmin,zmax
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# Cameras
# ------------------------------------------------------------------------------------------
def intrinsics(width: int, height: int, fov_deg: float = 60.0) -> np.ndarray:
    """Pinhole K (OpenCV/hloc pixel-centre convention) with horizontal field of view ``fov_deg``
    and the principal point at the image centre ((w-1)/2, (h-1)/2)."""
    f = 0.5 * width / np.tan(np.deg2rad(fov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def colmap_params(K: np.ndarray) -> list[float]:
    """K (pixel-centre convention) -> COLMAP SIMPLE_RADIAL params ``[f, cx, cy, 0.0]``
    (COLMAP's principal point is 0.5 px larger: pixel-corner origin). Uses fx as f."""
    return [float(K[0, 0]), float(K[0, 2] + 0.5), float(K[1, 2] + 0.5), 0.0]


def look_at(
    center: Sequence[float], yaw_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera pose of a camera at ``center`` (world, metres).

    yaw 0 looks north (+z), yaw +90 looks east (+x); positive pitch looks up; roll rotates the
    image clockwise. Returns (R (3,3), t (3,)) with x_cam = R x_world + t.
    """
    y, p, r = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    fwd = np.array([np.sin(y) * np.cos(p), -np.sin(p), np.cos(y) * np.cos(p)])
    right = np.array([np.cos(y), 0.0, -np.sin(y)])
    down = np.cross(fwd, right)
    R_wc = np.stack([right, down, fwd], axis=1)  # camera -> world
    if roll_deg:
        c, s = np.cos(r), np.sin(r)
        R_wc = R_wc @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    R = R_wc.T
    t = -R @ np.asarray(center, np.float64).reshape(3)
    return R, t


def look_at_point(
    center: Sequence[float], target: Sequence[float], roll_deg: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera pose of a camera at ``center`` whose optical axis passes through
    ``target`` (world, metres), image rows level with the ground, then rolled by ``roll_deg``
    (as :func:`look_at`). Returns (R (3,3), t (3,))."""
    c = np.asarray(center, np.float64).reshape(3)
    f = np.asarray(target, np.float64).reshape(3) - c
    f = f / np.linalg.norm(f)
    yaw = np.degrees(np.arctan2(f[0], f[2]))
    pitch = np.degrees(np.arcsin(np.clip(-f[1], -1.0, 1.0)))
    return look_at(c, yaw, pitch, roll_deg)


def camera_center(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(3,) camera centre -R^T t."""
    return -np.asarray(R).T @ np.asarray(t).reshape(3)


@dataclass
class Camera:
    """A pinhole camera: ``K`` (3, 3) pixel-centre convention, world-to-camera ``R`` (3, 3) and
    ``t`` (3,), image ``width`` x ``height`` pixels."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in the world (metres)."""
        return camera_center(self.R, self.t)

    def project(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> (uv (N, 2) pixels, depth (N,) metres); ``geometry.project``."""
        return geometry.project(self.K, self.R, self.t, X)


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------
def _clip_near(Xc: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon (N, 3) against z >= near."""
    out = []
    n = len(Xc)
    for i in range(n):
        a, b = Xc[i], Xc[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            s = (near - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def _sky(width: int, height: int, K: np.ndarray, R: np.ndarray, night: bool) -> np.ndarray:
    if night:
        return np.broadcast_to(np.array(NIGHT_SKY, np.float32), (height, width, 3)).copy()
    # gradient by elevation of the viewing ray (world y down: up = -y)
    v = np.arange(height, dtype=np.float64)
    Kinv = np.linalg.inv(K)
    rays = Kinv @ np.stack([np.full(height, (width - 1) / 2.0), v, np.ones(height)])
    d = R.T @ rays
    elev = np.clip(-d[1] / np.linalg.norm(d, axis=0), 0, 1)[:, None, None]
    top, hor = np.array(DAY_SKY_TOP, np.float32), np.array(DAY_SKY_HORIZON, np.float32)
    col = (hor + (top - hor) * elev).astype(np.float32)
    return np.broadcast_to(col, (height, width, 3)).copy()


def render(
    scene: Scene,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    width: int,
    height: int,
    night: bool = False,
    rng: np.random.Generator | int | None = None,
    return_depth: bool = False,
    night_darkness: float = NIGHT_DARKNESS,
    background: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` from a pinhole camera.

    Args:
        K: (3, 3) intrinsics, pixel-centre convention.
        R, t: world-to-camera rotation (3, 3) and translation (3,).
        width, height: image size in pixels.
        night: night rendering: street-lamp lighting from ``scene.lamps`` (3D, consistent with the
            geometry) + low ambient, then ``synth.day_to_night`` (colour cast, gamma, noise, blur).
        rng: Generator or seed for the night randomness (None: fixed seed 0, so renders are
            deterministic).
        return_depth: also return the z-depth map.
        background: (H, W, 3) uint8 RGB drawn where no plane is seen, instead of the sky.
    Returns:
        (H, W, 3) uint8 RGB, and with ``return_depth`` also (H, W) float32 z-depth in metres
        (``inf`` where only sky is seen).
    """
    K = np.asarray(K, np.float64)
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64).reshape(3)
    if background is None:
        img = _sky(width, height, K, R, night)
    elif background.shape != (height, width, 3):
        raise ValueError(f"background must be ({height}, {width}, 3), got {background.shape}")
    else:
        img = background.astype(np.float32)
    zbuf = np.zeros((height, width), np.float32)  # inverse depth; 0 = infinitely far
    Kinv = np.linalg.inv(K)
    for plane in scene.planes:
        _draw_plane(plane, img, zbuf, K, Kinv, R, t, width, height, night)
    with np.errstate(divide="ignore"):
        depth = np.where(zbuf > 0, 1.0 / np.maximum(zbuf, 1e-12), np.inf).astype(np.float32)
    if night:
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(0 if rng is None else rng)
        img = _night(img, depth, scene, Kinv, R, t, rng, night_darkness)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return (out, depth) if return_depth else out


def write_rgb(path: str | os.PathLike, rgb: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 RGB image (format from the suffix; JPEG at ``jpeg_quality``)."""
    jpeg = str(path).lower().endswith((".jpg", ".jpeg"))
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if jpeg else []
    if not cv2.imwrite(
        str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params
    ):
        raise OSError(f"{path}: cannot write image")


def _draw_plane(
    plane: Plane,
    img: np.ndarray,
    zbuf: np.ndarray,
    K: np.ndarray,
    Kinv: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    width: int,
    height: int,
    night: bool,
) -> None:
    Xc = plane.corners @ R.T + t
    poly_c = _clip_near(Xc, NEAR_M)
    if len(poly_c) < 3:
        return
    proj = poly_c @ K.T
    uv = proj[:, :2] / proj[:, 2:3]
    x0 = max(int(np.floor(uv[:, 0].min())), 0)
    x1 = min(int(np.ceil(uv[:, 0].max())), width - 1)
    y0 = max(int(np.floor(uv[:, 1].min())), 0)
    y1 = min(int(np.ceil(uv[:, 1].max())), height - 1)
    if x1 < x0 or y1 < y0:
        return
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    # inverse depth over the bbox: 1/z = n_c . K^-1 [u v 1] / d_c
    n_c = R @ plane.normal
    d_c = float(n_c @ (R @ plane.origin + t))
    if abs(d_c) < 1e-9:
        return  # camera inside the plane: edge-on
    a = (n_c @ Kinv) / d_c  # (3,) coefficients of (u, v, 1)
    us = np.arange(x0, x1 + 1, dtype=np.float32)
    vs = np.arange(y0, y1 + 1, dtype=np.float32)
    invz = np.float32(a[0]) * us[None, :] + np.float32(a[1]) * vs[:, None] + np.float32(a[2])
    # polygon mask (subpixel vertices, pixel centres at integers)
    mask = np.zeros((bh, bw), np.uint8)
    shift = 4
    pts = np.round((uv - [x0, y0]) * (1 << shift)).astype(np.int64)
    pts = np.clip(pts, -(1 << 28), 1 << 28).astype(np.int32)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=shift)
    sub_z = zbuf[y0 : y1 + 1, x0 : x1 + 1]
    vis = (mask > 0) & (invz > sub_z) & (invz > 0)
    if not vis.any():
        return
    level = _pyramid_level(plane, K, R, t, poly_c)
    H = plane.homography_texel_to_image(K, R, t, level)
    T = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    tex = plane.pyramid(level)
    patch = cv2.warpPerspective(
        tex, T @ H, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    shade = 1.0 if night else plane.shade
    sub_img = img[y0 : y1 + 1, x0 : x1 + 1]
    sub_img[vis] = patch[vis].astype(np.float32) * np.float32(shade)
    sub_z[vis] = invz[vis]


def _pyramid_level(
    plane: Plane, K: np.ndarray, R: np.ndarray, t: np.ndarray, poly_c: np.ndarray
) -> int:
    """Texture pyramid level from texels-per-pixel at the visible polygon's nearest point."""
    su, sv = plane.texel_scale()
    z = max(float(np.median(poly_c[:, 2])), NEAR_M)
    f = float(np.sqrt(abs(K[0, 0] * K[1, 1])))
    # metres per pixel at depth z (fronto-parallel approximation) / metres per texel
    ratio = (z / f) / np.sqrt(su * sv)
    if ratio <= 1.0:
        return 0
    return int(np.floor(np.log2(ratio)))


def _night(
    img: np.ndarray,
    depth: np.ndarray,
    scene: Scene,
    Kinv: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    rng: np.random.Generator,
    darkness: float,
) -> np.ndarray:
    """3D street-lamp lighting (computed on a 4x subsampled grid, it is smooth) + day_to_night."""
    h, w = depth.shape
    step = 4
    d = depth[::step, ::step]
    finite = np.isfinite(d)
    light = np.full(d.shape, NIGHT_AMBIENT, np.float32)
    if len(scene.lamps) and finite.any():
        vv, uu = np.mgrid[0:h:step, 0:w:step].astype(np.float32)
        rays = np.stack([uu, vv, np.ones_like(uu)], -1) @ Kinv.T.astype(np.float32)
        Xc = rays * np.where(finite, d, 0.0).astype(np.float32)[..., None]
        Xw = (Xc - t.astype(np.float32)) @ R.astype(np.float32)  # R^T (Xc - t)
        for lamp in np.asarray(scene.lamps, np.float32):
            d2 = ((Xw - lamp) ** 2).sum(-1)
            light += NIGHT_LAMP_GAIN / (1.0 + d2 / NIGHT_LAMP_R2)
        light = np.where(finite, light, 1.0)
    light = cv2.resize(np.minimum(light, 2.0), (w, h), interpolation=cv2.INTER_LINEAR)
    x = np.clip(img * light[..., None], 0, 255).astype(np.uint8)
    return synth.day_to_night(x, rng, darkness).astype(np.float32)


__all__ = [
    "Plane",
    "Scene",
    "Camera",
    "intrinsics",
    "colmap_params",
    "look_at",
    "look_at_point",
    "camera_center",
    "render",
    "write_rgb",
]
