"""The synthetic street world of the Aachen-layout writer: a plaza of textured facades, kiosks
and ground tiles (``make_street_scene``), database camera loops and query poses around it.

Rendered with the toolkit's one renderer, ``localize.data.render`` (frames and conventions are
documented there: metres, x east, y down, z north; world-to-camera poses). Textures are cut
from the bundled photos (``descriptors.data.synth``).

Main entry points: ``make_street_scene``, ``database_poses``, ``query_poses``, ``min_clearance``.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from descriptors.data import synth
from localize.data.render import Plane, Scene, look_at

EYE_HEIGHT_M = 1.6
TEXEL_PER_M = 32.0  # facade texture resolution
SUN_DIR = np.array([0.45, -0.75, -0.5])  # direction TO the sun (y down: negative y = up)


# ------------------------------------------------------------------------------------------
# Scene construction
# ------------------------------------------------------------------------------------------
_PHOTOS: dict[str, np.ndarray] = {}


def _photo(name: str) -> np.ndarray:
    """synth.load_photo with a per-process cache."""
    if name not in _PHOTOS:
        _PHOTOS[name] = synth.load_photo(name)
    return _PHOTOS[name]


def make_texture(
    width_px: int,
    height_px: int,
    rng: np.random.Generator,
    photos: Sequence[str],
    max_panels: int = 3,
) -> np.ndarray:
    """A facade texture: 1..max_panels vertical panels, each a random crop of a random photo
    (upscaled to cover, random flip, colour gain), so repeated content is rare.

    Returns (height_px, width_px, 3) uint8.
    """
    n_panels = int(rng.integers(1, max_panels + 1))
    edges = np.sort(rng.uniform(0.25, 0.75, n_panels - 1)) if n_panels > 1 else np.array([])
    cols = np.round(np.concatenate([[0.0], edges, [1.0]]) * width_px).astype(int)
    out = np.zeros((height_px, width_px, 3), np.uint8)
    last = None
    for k in range(n_panels):
        pw = max(cols[k + 1] - cols[k], 1)
        choices = [p for p in photos if p != last] or list(photos)
        name = choices[int(rng.integers(len(choices)))]
        last = name
        photo = _photo(name)
        ph, pwid = photo.shape[:2]
        # crop a random window with the panel's aspect ratio, covering >= 45% of the photo side
        aspect = pw / height_px
        frac = rng.uniform(0.45, 1.0)
        ch = frac * ph
        cw = ch * aspect
        if cw > pwid:
            cw = pwid * rng.uniform(0.6, 1.0)
            ch = cw / aspect
        if ch > ph:  # very wide/tall panel: tile the photo instead
            reps = int(np.ceil(ch / ph)) + 1
            photo = np.concatenate([photo, photo[::-1]] * reps, axis=0)[: int(np.ceil(ch)) + 2]
            ph = photo.shape[0]
        cx0 = rng.uniform(0, max(pwid - cw, 0))
        cy0 = rng.uniform(0, max(ph - ch, 0))
        crop = photo[int(cy0) : int(cy0 + ch) + 1, int(cx0) : int(cx0 + cw) + 1]
        crop = cv2.resize(crop, (pw, height_px), interpolation=cv2.INTER_CUBIC)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        gain = np.exp(rng.normal(0, 0.12, 3)) * rng.uniform(0.85, 1.1)
        crop = np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        out[:, cols[k] : cols[k] + pw] = crop
    return out


def _shade(normal: np.ndarray) -> float:
    s = SUN_DIR / np.linalg.norm(SUN_DIR)
    return float(0.72 + 0.28 * abs(normal @ s))


def _facade(
    x0z0: Sequence[float],
    x1z1: Sequence[float],
    height_m: float,
    rng,
    photos,
    name: str,
    base_y: float = 0.0,
) -> Plane:
    """Vertical rectangle from ground point (x0, z0) to (x1, z1), ``height_m`` tall."""
    a = np.array([x0z0[0], base_y - height_m, x0z0[1]], np.float64)
    b = np.array([x1z1[0], base_y - height_m, x1z1[1]], np.float64)
    wlen = float(np.linalg.norm(b - a))
    u = (b - a) / wlen
    v = np.array([0.0, 1.0, 0.0])
    tex = make_texture(
        max(int(round(wlen * TEXEL_PER_M)), 8),
        max(int(round(height_m * TEXEL_PER_M)), 8),
        rng,
        photos,
    )
    p = Plane(a, u, v, (wlen, height_m), tex, name=name)
    p.shade = _shade(p.normal)
    return p


def _box(
    cx: float, cz: float, sx: float, sz: float, h: float, rng, photos, name: str, lift: float = 0.0
) -> list[Plane]:
    """Four vertical faces of an axis-aligned box (a kiosk / pillar) standing on the ground."""
    xa, xb, za, zb = cx - sx / 2, cx + sx / 2, cz - sz / 2, cz + sz / 2
    base = -lift
    return [
        _facade((xa, za), (xb, za), h, rng, photos, f"{name}_s", base),
        _facade((xb, za), (xb, zb), h, rng, photos, f"{name}_e", base),
        _facade((xb, zb), (xa, zb), h, rng, photos, f"{name}_n", base),
        _facade((xa, zb), (xa, za), h, rng, photos, f"{name}_w", base),
    ]


def make_street_scene(
    seed: int | np.random.Generator = 0, photos: Sequence[str] | None = None
) -> Scene:
    """A walled plaza at street scale (metres), textured from the TEST photos.

    Layout (x east, z north, ground y = 0): building facades on all four sides (x in [-22, 24],
    z in [-12, 32]; 8-20 m tall, split into individual buildings with their own textures), a
    kiosk, a raised billboard and two pillars as occluders inside, a paved ground of 8 m tiles,
    and street lamps for night renders. Database cameras walk a loop around the centre
    (``database_poses``), 5-25 m from the facades.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    photos = list(photos) if photos is not None else synth.photo_names("test")
    X0, X1, Z0, Z1 = -22.0, 24.0, -12.0, 32.0
    planes: list[Plane] = []

    def row(p0, p1, name):
        """Split the wall from p0 to p1 (x, z) into buildings 6-13 m wide."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        L = float(np.linalg.norm(p1 - p0))
        s = 0.0
        k = 0
        while s < L - 1e-6:
            w = min(rng.uniform(6.0, 13.0), L - s)
            if L - s - w < 3.0:
                w = L - s
            a = p0 + (p1 - p0) * (s / L)
            b = p0 + (p1 - p0) * ((s + w) / L)
            planes.append(_facade(a, b, rng.uniform(8.0, 20.0), rng, photos, f"{name}{k}"))
            s += w
            k += 1

    # walls, each facing the plaza interior (texture reads left-to-right from inside)
    row((X0, Z1), (X1, Z1), "north")
    row((X1, Z1), (X1, Z0), "east")
    row((X1, Z0), (X0, Z0), "south")
    row((X0, Z0), (X0, Z1), "west")
    # occluders
    planes += _box(-4.0, 24.0, 3.0, 2.5, 3.2, rng, photos, "kiosk")
    planes += _box(14.0, 4.0, 0.8, 0.8, 5.0, rng, photos, "pillarA")
    planes += _box(-12.5, 7.0, 0.8, 0.8, 5.0, rng, photos, "pillarB")
    bb = _facade((5.0, 21.0), (10.0, 22.5), 2.5, rng, photos, "billboard", base_y=-2.0)
    planes.append(bb)
    # ground tiles (texture darker / lower contrast than facades, like paving)
    tile = 8.0
    gx = np.arange(X0, X1, tile)
    gz = np.arange(Z0, Z1, tile)
    for i, x in enumerate(gx):
        for j, z in enumerate(gz):
            w = min(tile, X1 - x)
            d = min(tile, Z1 - z)
            tex = make_texture(int(w * 16), int(d * 16), rng, photos, max_panels=1)
            tex = (tex.astype(np.float32) * 0.55 + 40).astype(np.uint8)
            # u = +x, v = +z: u x v = (1,0,0)x(0,0,1) = (0,-1,0): normal up
            planes.append(
                Plane(
                    (x, 0.0, z),
                    (1.0, 0.0, 0.0),
                    (0.0, 0.0, 1.0),
                    (w, d),
                    tex,
                    shade=0.9,
                    name=f"ground{i}_{j}",
                )
            )
    lamps = []
    for x in (-16.0, -4.0, 8.0, 19.0):
        for z in (-6.0, 12.0, 27.0):
            lamps.append((x + rng.uniform(-2, 2), -4.5, z + rng.uniform(-2, 2)))
    return Scene(
        planes,
        np.array(lamps, np.float64),
        name="plaza",
        bounds_xz=(X0, X1, Z0, Z1),
        meta={"seed_photos": photos},
    )


# ------------------------------------------------------------------------------------------
# Camera paths
# ------------------------------------------------------------------------------------------
LOOP_CENTER = (1.0, 10.0)  # (x, z) of the database loop
LOOP_RADII = (9.0, 8.0)


def database_poses(
    n: int,
    rng: np.random.Generator | int = 0,
    center: tuple[float, float] = LOOP_CENTER,
    radii: tuple[float, float] = LOOP_RADII,
) -> list[dict]:
    """``n`` database views on an elliptic loop, a few metres apart, looking outwards at the
    facades (yaw = outward direction + a cycle of -30/0/+30 deg + jitter, slight upward pitch).

    Returns list of dicts ``{center (3,), yaw_deg, pitch_deg, R, t}``.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = []
    offsets = (-30.0, 0.0, 30.0)
    for i in range(n):
        a = 2 * np.pi * i / n
        x = center[0] + radii[0] * np.sin(a) + rng.uniform(-0.5, 0.5)
        z = center[1] + radii[1] * np.cos(a) + rng.uniform(-0.5, 0.5)
        outward = np.degrees(np.arctan2(np.sin(a) * radii[1], np.cos(a) * radii[0]))
        yaw = outward + offsets[i % 3] + rng.uniform(-8, 8)
        pitch = rng.uniform(4.0, 12.0)
        c = np.array([x, -EYE_HEIGHT_M + rng.uniform(-0.1, 0.1), z])
        R, t = look_at(c, yaw, pitch)
        out.append({"center": c, "yaw_deg": float(yaw), "pitch_deg": float(pitch), "R": R, "t": t})
    return out


def min_clearance(scene: Scene, center: Sequence[float]) -> float:
    """Horizontal distance (metres) from ``center`` to the nearest vertical plane of ``scene``."""
    p = np.asarray(center, np.float64)[[0, 2]]
    best = np.inf
    for pl in scene.planes:
        if abs(pl.normal[1]) > 0.5:  # ground-like plane
            continue
        c = pl.corners[:, [0, 2]]
        a, b = c[0], c[1]
        ab = b - a
        s = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
        best = min(best, float(np.linalg.norm(a + s * ab - p)))
    return best


def query_poses(
    n: int,
    db: Sequence[dict],
    rng: np.random.Generator | int = 1,
    max_offset_m: float = 3.0,
    max_yaw_deg: float = 30.0,
    scene: Scene | None = None,
    min_clearance_m: float = 2.0,
) -> list[dict]:
    """``n`` query views from new viewpoints near the database loop: a random database view's
    pose moved by 0.7..``max_offset_m`` metres (mostly horizontal), turned by 5..``max_yaw_deg``
    degrees of yaw, with different pitch and a little roll. With ``scene`` given, positions
    closer than ``min_clearance_m`` to a wall / occluder are re-drawn.

    Returns list of dicts ``{center, yaw_deg, pitch_deg, roll_deg, R, t, ref_index}``.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = []
    idx = rng.permutation(len(db))
    for k in range(n):
        j = int(idx[k % len(db)])
        ref = db[j]
        for _ in range(100):
            ang = rng.uniform(0, 2 * np.pi)
            r = rng.uniform(0.7, max_offset_m)
            c = ref["center"] + np.array(
                [r * np.cos(ang), rng.uniform(-0.25, 0.25), r * np.sin(ang)]
            )
            if scene is None or min_clearance(scene, c) >= min_clearance_m:
                break
        yaw = ref["yaw_deg"] + rng.choice([-1, 1]) * rng.uniform(5.0, max_yaw_deg)
        pitch = rng.uniform(2.0, 14.0)
        roll = rng.uniform(-4.0, 4.0)
        R, t = look_at(c, yaw, pitch, roll)
        out.append(
            {
                "center": c,
                "yaw_deg": float(yaw),
                "pitch_deg": float(pitch),
                "roll_deg": float(roll),
                "R": R,
                "t": t,
                "ref_index": j,
            }
        )
    return out


__all__ = [
    "make_texture",
    "make_street_scene",
    "database_poses",
    "query_poses",
    "min_clearance",
    "EYE_HEIGHT_M",
]
