"""Synthetic revisitop (ROxford5k / RParis6k) sets in the exact real layout, rendered with the
toolkit's one renderer (``localize.data.scene``).

``ensure_synthetic_revisitop('datasets', 'roxford5k')`` -> ``datasets/roxford5k-synth/`` (and
``rparis6k`` -> ``datasets/rparis6k-synth/``, a different seed so the landmarks differ), written
in the layout of ``localize.data.roxford`` so ``read_revisitop`` reads it unchanged. Each landmark
is a small convex 3D structure of 3 vertical textured walls (``scene.Plane``; crops of the TEST
photos of ``descriptors.data.synth``; each landmark gets its own crops, from different photos),
rendered by ``scene.render`` from many azimuths / distances / heights over a random sky/ground
background, some at night (``synth.day_to_night``). Only the walls facing the camera are drawn
(the walls are thin: from behind one would see a mirrored texture). Distractors are structures
made of left-over TEST crops or procedural textures, plus flat "random scenes".

Labels come from 3D geometry: the query region is the set of landmark surface samples visible
inside the query's ``bbx``; for a database image of the same landmark, ``overlap`` = fraction of
those samples visible in it, and

- easy:  overlap >= 0.5, viewpoint change <= 30 deg, scale change within [1/2, 2], day;
- hard:  overlap >= 0.15 and not easy (partial view, strong viewpoint/scale change, or night);
- junk:  overlap < 0.15 (same landmark, query region barely or not visible);
- other landmarks and distractors are negatives.

``ensure_vocabulary_images`` renders a SEPARATE image set from the TRAIN photos
(``datasets/revisitop-vocab-synth/jpg``) on which retrieval vocabularies are learned.
World frame as ``localize.data.scene``: metres, y down, ground y = 0.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from descriptors.data import synth
from descriptors.util import atomic_dir, atomic_write, write_json
from localize.data.render import Camera, Plane, Scene, intrinsics, look_at_point, render, write_rgb
from localize.data.roxford import RevisitopData, RevisitopError, read_revisitop

logger = logging.getLogger(__name__)

# Defaults of the synthetic writer (the "default synthetic set").
SYNTH_DEFAULTS = dict(
    n_landmarks=8, views_per_landmark=20, n_distractors=40, n_queries=16, seed=0, size=(512, 384)
)
# Label thresholds (see module docstring).
EASY_OVERLAP = 0.5
HARD_OVERLAP = 0.15
EASY_MAX_ANGLE_DEG = 30.0
EASY_MAX_SCALE = 2.0
JPEG_QUALITY = 92
PARAMS_FILE = "synth_params.json"
#: stored with the parameters: sets written by an older generator (version 1: the former
#: painter's-order face renderer) are regenerated
GENERATOR_VERSION = 2


# ------------------------------------------------------------------------------------------
# Textures
# ------------------------------------------------------------------------------------------
def _texture_score(tile: np.ndarray) -> float:
    """Mean Sobel gradient magnitude of a tile at 128 x 128 (grey levels)."""
    g = cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = cv2.resize(g, (128, 128), interpolation=cv2.INTER_AREA)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1)
    return float(np.mean(np.sqrt(gx * gx + gy * gy)))


def photo_tiles(
    split: str, tile: int = 220, max_per_photo: int = 6, min_score: float = 6.0, out_side: int = 384
) -> list[tuple[str, np.ndarray]]:
    """Non-overlapping crops of the ``synth`` photos of a split, most textured first per photo.

    Returns:
        list of (photo name, (h, w, 3) uint8 tile resized so its longer side is ``out_side``).
    """
    tiles = []
    for name in synth.photo_names(split):
        img = synth.load_photo(name)
        h, w = img.shape[:2]
        nr, nc = max(1, round(h / tile)), max(1, round(w / tile))
        th, tw = h // nr, w // nc
        cand = []
        for r in range(nr):
            for c in range(nc):
                t = img[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
                cand.append((_texture_score(t), t))
        cand.sort(key=lambda x: -x[0])
        for score, t in cand[:max_per_photo]:
            if score < min_score:
                continue
            s = out_side / max(t.shape[:2])
            t = cv2.resize(
                t,
                (round(t.shape[1] * s), round(t.shape[0] * s)),
                interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA,
            )
            tiles.append((name, np.ascontiguousarray(t)))
    return tiles


def procedural_texture(rng: np.random.Generator, size: tuple[int, int] = (384, 288)) -> np.ndarray:
    """Random 'scene' texture of ``size`` (w, h): coloured rectangles, ellipses, lines and
    noise, (h, w, 3) uint8."""
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(30, 220, 3)
    for _ in range(int(rng.integers(15, 40))):
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            cv2.rectangle(
                img,
                (x, y),
                (x + int(rng.integers(5, w // 3)), y + int(rng.integers(5, h // 3))),
                col,
                -1,
            )
        elif kind == 1:
            cv2.ellipse(
                img,
                (x, y),
                (int(rng.integers(3, w // 5)), int(rng.integers(3, h // 5))),
                float(rng.uniform(0, 180)),
                0,
                360,
                col,
                -1,
            )
        else:
            cv2.line(
                img,
                (x, y),
                (int(rng.integers(0, w)), int(rng.integers(0, h))),
                col,
                int(rng.integers(1, 5)),
            )
    noise = rng.normal(0, 8, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# Structures, cameras, rendering
# ------------------------------------------------------------------------------------------
DOWN = np.array([0.0, 1.0, 0.0])


def make_structure(textures: Sequence[np.ndarray], rng: np.random.Generator) -> list[Plane]:
    """A convex 'building' of len(textures) (2 or 3) vertical walls, bulging towards -z.

    Centre wall in the plane z = 0 seen from -z; side walls leave its ends receding to +z at
    30-70 degrees. Wall height follows its texture's aspect ratio; every wall reads unmirrored
    from outside the structure (``Plane.is_front_facing``). Ground at y = 0 (y down).
    """
    w0 = rng.uniform(10.0, 16.0)
    t0 = textures[0]
    h0 = w0 * t0.shape[0] / t0.shape[1]
    walls = [Plane((-w0 / 2, -h0, 0.0), (1.0, 0.0, 0.0), DOWN, (w0, h0), t0, name="centre")]
    for side, tex in zip((+1, -1), textures[1:3]):
        ws = rng.uniform(7.0, 13.0)
        hs = ws * tex.shape[0] / tex.shape[1]
        ang = np.deg2rad(rng.uniform(30.0, 70.0))
        d = np.array([side * np.cos(ang), 0.0, np.sin(ang)])  # from the centre wall's end, outward
        end = np.array([side * w0 / 2, 0.0, 0.0])
        if side > 0:  # right wall: starts at the centre wall's right end, goes right/back
            origin, u = end + np.array([0, -hs, 0]), d
        else:  # left wall: ends at the centre wall's left end; starts further back
            origin, u = end + ws * d + np.array([0, -hs, 0]), -d
        walls.append(Plane(origin, u, DOWN, (ws, hs), tex, name="right" if side > 0 else "left"))
    return walls


def structure_center(walls: Sequence[Plane]) -> np.ndarray:
    """(3,) mean of the walls' corners (world, metres)."""
    return np.concatenate([w.corners for w in walls]).mean(0)


def _background(cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """Random sky gradient over a ground colour split at the camera's horizon, low-frequency
    blotches and pixel noise: (H, W, 3) uint8 RGB."""
    w, h = cam.width, cam.height
    f = cam.R[2].copy()  # horizon: image row of a far point straight ahead
    f[1] = 0
    f = f / max(np.linalg.norm(f), 1e-9)
    uv, z = cam.project((cam.center + 1e5 * f)[None])
    hy = float(np.clip(uv[0, 1], -h, 2 * h)) if z[0] > 0 else h / 2
    sky_top = rng.uniform(120, 200, 3)
    sky_bot = np.clip(sky_top + rng.uniform(20, 60), 0, 255)
    ground = rng.uniform(60, 130, 3)
    ys = np.arange(h, dtype=np.float32)[:, None, None]
    a = np.clip(ys / max(hy, 1.0), 0, 1)
    sky = sky_top * (1 - a) + sky_bot * a
    img = np.where(ys < hy, sky, ground * (0.8 + 0.4 * np.clip((ys - hy) / h, 0, 1)))
    img = np.broadcast_to(img, (h, w, 3)).astype(np.float32)
    low = cv2.resize(
        rng.normal(0, 12, (6, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    img = img + low[..., None] + rng.normal(0, 3, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def render_view(walls: Sequence[Plane], cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """The walls facing ``cam`` rendered by ``scene.render`` over a random background:
    (H, W, 3) uint8 RGB."""
    front = [w for w in walls if w.is_front_facing(cam.center)]
    return render(
        Scene(front), cam.K, cam.R, cam.t, cam.width, cam.height, background=_background(cam, rng)
    )


def visible_samples(
    walls: Sequence[Plane], cam: Camera, n: int = 24
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface samples (``Plane.surface_grid(n)`` of every wall) of a convex structure and their
    visibility in a camera.

    Returns:
        X (F*n*n, 3) world points, uv (F*n*n, 2) pixels, visible (F*n*n,) bool (front-facing,
        in front of the camera, inside the image).
    """
    X = np.concatenate([w.surface_grid(n) for w in walls])
    front = np.repeat([w.is_front_facing(cam.center) for w in walls], n * n)
    uv, z = cam.project(X)
    with np.errstate(invalid="ignore"):
        inside = (
            (z > 0.05)
            & (uv[:, 0] >= 0)
            & (uv[:, 0] <= cam.width - 1)
            & (uv[:, 1] >= 0)
            & (uv[:, 1] <= cam.height - 1)
        )
    return X, uv, inside & front


def sample_camera(
    walls: Sequence[Plane],
    size: tuple[int, int],
    rng: np.random.Generator,
    azimuth_deg: tuple[float, float] = (-65, 65),
    distance: tuple[float, float] = (0.9, 2.4),
    aim_jitter: float = 0.3,
    close_prob: float = 0.0,
    close_distance: tuple[float, float] = (0.5, 0.9),
    min_visible: float = 0.02,
    tries: int = 50,
) -> Camera:
    """Random camera looking at the structure: azimuth around the centre wall's normal, distance
    as a multiple of the structure's width, eye height 1.5-12 m, aim point jittered by
    ``aim_jitter`` x width (partial views), roll within +-5 deg, focal length 0.8-1.1 x image
    width. With probability ``close_prob`` the distance is drawn from ``close_distance`` instead
    (close-ups: partial views). ``size`` = (width, height) pixels."""
    corners = np.concatenate([w.corners for w in walls])
    ctr = structure_center(walls)
    span = float(np.ptp(corners[:, 0]))
    height = float(-corners[:, 1].min())
    for _ in range(tries):
        az = np.deg2rad(rng.uniform(*azimuth_deg))
        d = rng.uniform(*(close_distance if rng.random() < close_prob else distance)) * span
        C = np.array([ctr[0] + d * np.sin(az), -rng.uniform(1.5, 12.0), ctr[2] - d * np.cos(az)])
        target = ctr + np.array(
            [rng.uniform(-aim_jitter, aim_jitter) * span, rng.uniform(-0.3, 0.3) * height, 0.0]
        )
        R, t = look_at_point(C, target, rng.uniform(-5, 5))
        fov = np.degrees(2 * np.arctan(0.5 / rng.uniform(0.8, 1.1)))
        cam = Camera(K=intrinsics(size[0], size[1], fov), R=R, t=t, width=size[0], height=size[1])
        if any(w.is_front_facing(C) and np.any(cam.project(w.corners)[1] <= 0.5) for w in walls):
            continue
        if visible_samples(walls, cam, 12)[2].mean() >= min_visible:
            return cam
    return cam


def query_region(
    walls: Sequence[Plane],
    cam: Camera,
    rng: np.random.Generator,
    partial_prob: float = 0.3,
    n: int = 24,
    min_side: float = 48.0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Query box and the landmark samples inside it.

    Returns:
        bbx (4,) float [x1, y1, x2, y2] pixels around the visible landmark (or around a single
        wall with probability ``partial_prob``), and the (M,) bool mask over
        ``visible_samples`` samples visible inside the box; None if the visible region is too
        small.
    """
    X, uv, vis = visible_samples(walls, cam, n)
    if vis.sum() < 20:
        return None
    sel = vis.copy()
    if rng.random() < partial_prob:
        fid = np.repeat(np.arange(len(walls)), n * n)
        counts = np.bincount(fid[vis], minlength=len(walls))
        best = int(np.argmax(counts))
        if counts[best] >= 20:
            sel = vis & (fid == best)
    p = uv[sel]
    x1, y1 = np.floor(p.min(0) * 2) / 2
    x2, y2 = np.ceil(p.max(0) * 2) / 2 + 1
    x1, y1 = max(x1, 0.0), max(y1, 0.0)
    x2, y2 = min(x2, float(cam.width)), min(y2, float(cam.height))
    if x2 - x1 < min_side or y2 - y1 < min_side:
        return None
    bbx = np.array([x1, y1, x2, y2])
    inbox = vis & (uv[:, 0] >= x1) & (uv[:, 0] < x2) & (uv[:, 1] >= y1) & (uv[:, 1] < y2)
    return bbx, inbox


def label_view(
    walls: Sequence[Plane],
    q_cam: Camera,
    q_region: np.ndarray,
    db_cam: Camera,
    db_night: bool,
    n: int = 24,
) -> tuple[str, dict]:
    """easy / hard / junk label of a database view of the query's landmark (module docstring).

    Returns:
        (label, info) with info = overlap (fraction), angle_deg, scale (>1: the region looks
        larger in the database image).
    """
    X, uv, vis = visible_samples(walls, db_cam, n)
    both = q_region & vis
    overlap = float(both.sum()) / max(int(q_region.sum()), 1)
    info = {"overlap": overlap, "angle_deg": 180.0, "scale": 0.0}
    if both.sum() == 0:
        return "junk", info
    P = X[both]
    pc = P.mean(0)
    a = pc - q_cam.center
    b = pc - db_cam.center
    ang = float(
        np.degrees(np.arccos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))
    )
    zq = q_cam.project(P)[1] / q_cam.K[0, 0]
    zd = db_cam.project(P)[1] / db_cam.K[0, 0]
    scale = float(np.median(zq / zd))
    info.update(angle_deg=ang, scale=scale)
    if overlap < HARD_OVERLAP:
        return "junk", info
    if (
        overlap >= EASY_OVERLAP
        and ang <= EASY_MAX_ANGLE_DEG
        and 1 / EASY_MAX_SCALE <= scale <= EASY_MAX_SCALE
        and not db_night
    ):
        return "easy", info
    return "hard", info


# ------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------
def _name_seed(name: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 100003


def _landmark_textures(
    n_landmarks: int, rng: np.random.Generator
) -> tuple[list[list[np.ndarray]], list[list[str]], list[np.ndarray]]:
    """3 TEST-photo tiles per landmark from 3 different photos (procedural walls once the
    photos run out), randomly mirrored. Returns (textures, source photo names, left-overs)."""
    by_photo: dict[str, list[np.ndarray]] = {}
    for pname, t in photo_tiles("test"):
        by_photo.setdefault(pname, []).append(t)
    photos = list(by_photo)
    rng.shuffle(photos)
    for p in photos:
        order = rng.permutation(len(by_photo[p]))
        by_photo[p] = [by_photo[p][i] for i in order]
    textures, sources = [], []
    cursor = 0
    for _ in range(n_landmarks):
        texs, srcs = [], []
        tries = 0
        while len(texs) < 3 and tries < 4 * len(photos):
            p = photos[cursor % len(photos)]
            cursor += 1
            tries += 1
            if by_photo[p] and p not in srcs:
                texs.append(by_photo[p].pop(0))
                srcs.append(p)
        while len(texs) < 3:
            texs.append(procedural_texture(rng))
            srcs.append("procedural")
        # random flips so crops reused across runs look different from their source photo
        textures.append([t[:, ::-1].copy() if rng.random() < 0.5 else t for t in texs])
        sources.append(srcs)
    return textures, sources, [t for p in photos for t in by_photo[p]]


def write_synthetic_revisitop(
    root: str | os.PathLike,
    name: str = "roxford5k",
    n_landmarks: int = 8,
    views_per_landmark: int = 20,
    n_distractors: int = 40,
    n_queries: int = 16,
    seed: int = 0,
    size: tuple[int, int] = (512, 384),
    night_prob: float = 0.2,
) -> Path:
    """Write a synthetic revisitop dataset into ``root`` (``root/jpg/*.jpg`` +
    ``root/gnd_<name>.pkl``), readable by ``read_revisitop(root, name)``.

    Args:
        n_landmarks: >= 8 distinct landmarks (TEST-photo walls, different crops per landmark).
        views_per_landmark: database views per landmark (random azimuth/distance/height/aim).
        n_distractors: database images of no landmark.
        n_queries: total queries, spread round-robin over the landmarks (day views with a bbx).
        seed: RNG seed (combined with ``name`` so roxford5k / rparis6k differ).
        size: image (width, height) pixels.
        night_prob: probability that a database view is rendered at night.
    Returns:
        root as a Path. The pickle also holds ``synth`` = {params, per-image landmark id,
        night flags, per-query labels info} (extra keys; real pickles lack them).
    """
    if n_landmarks < 8:
        raise ValueError(f"n_landmarks must be >= 8, got {n_landmarks}")
    if n_queries < 1 or views_per_landmark < 1:
        raise ValueError("n_queries and views_per_landmark must be >= 1")
    root = Path(root)
    jpg = root / "jpg"
    jpg.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, _name_seed(name)])
    size = (int(size[0]), int(size[1]))
    landmark_tex, landmark_src, leftover = _landmark_textures(n_landmarks, rng)
    structures = [make_structure(t, rng) for t in landmark_tex]
    names: list[str] = []
    img_landmark: list[int] = []
    img_night: list[bool] = []
    cams: list[Camera | None] = []
    total = n_landmarks * views_per_landmark + n_distractors + n_queries
    bar = tqdm(total=total, desc=f"synthetic {name}", leave=False, disable=None)

    def add_db_image(img: np.ndarray, nm: str, landmark: int, cam: Camera | None) -> None:
        """Night (prob. ``night_prob``) or day photometric change, write, record."""
        night = bool(rng.random() < night_prob)
        img = (
            synth.day_to_night(img, rng, rng.uniform(0.7, 1.0))
            if night
            else synth.photometric(img, rng, 0.5)
        )
        write_rgb(jpg / f"{nm}.jpg", img, JPEG_QUALITY)
        names.append(nm)
        img_landmark.append(landmark)
        img_night.append(night)
        cams.append(cam)
        bar.update()

    for li, walls in enumerate(structures):  # database views of landmarks
        for v in range(views_per_landmark):
            cam = sample_camera(walls, size, rng, close_prob=0.25)
            add_db_image(render_view(walls, cam, rng), f"landmark{li:02d}_{v:06d}", li, cam)
    for di in range(n_distractors):  # distractors
        if rng.random() < 0.35:
            img = procedural_texture(rng, size)
            H = synth.random_homography(size[1], size[0], rng, 0.2)
            img = synth.warp(img, H, size, border_value=int(rng.integers(0, 255)))
        else:
            texs = []
            for _ in range(int(rng.integers(2, 4))):
                if leftover and rng.random() < 0.6:
                    t = leftover[int(rng.integers(len(leftover)))]
                    t = np.rot90(t, int(rng.integers(0, 4))).copy() if rng.random() < 0.5 else t
                    texs.append(np.ascontiguousarray(t))
                else:
                    texs.append(procedural_texture(rng))
            walls = make_structure(texs, rng)
            img = render_view(walls, sample_camera(walls, size, rng), rng)
        add_db_image(img, f"distractor_{di:06d}", -1, None)

    qnames, gnd, qinfo = [], [], []  # queries
    for qi in range(n_queries):
        li = qi % n_landmarks
        walls = structures[li]
        for _ in range(100):
            cam = sample_camera(
                walls, size, rng, azimuth_deg=(-35, 35), distance=(1.1, 1.8), aim_jitter=0.15
            )
            reg = query_region(walls, cam, rng)
            if reg is not None:
                break
        else:
            raise RuntimeError(f"could not place query {qi} of landmark {li}")
        bbx, region = reg
        img = synth.photometric(render_view(walls, cam, rng), rng, 0.4)
        nm = f"landmark{li:02d}_query{qi:03d}"
        write_rgb(jpg / f"{nm}.jpg", img, JPEG_QUALITY)
        g = {"bbx": [float(x) for x in bbx], "easy": [], "hard": [], "junk": []}
        infos = {}
        for j, (lj, cj) in enumerate(zip(img_landmark, cams)):
            if lj != li:
                continue
            lab, info = label_view(walls, cam, region, cj, img_night[j])
            g[lab].append(j)
            infos[names[j]] = dict(label=lab, **{k: round(v, 4) for k, v in info.items()})
        qnames.append(nm)
        gnd.append(g)
        qinfo.append(infos)
        bar.update()
    bar.close()

    cfg = {
        "imlist": names,
        "qimlist": qnames,
        "gnd": gnd,
        "synth": {
            "params": dict(
                name=name,
                n_landmarks=n_landmarks,
                views_per_landmark=views_per_landmark,
                n_distractors=n_distractors,
                n_queries=n_queries,
                seed=seed,
                size=list(size),
                night_prob=night_prob,
            ),
            "landmark": img_landmark,
            "night": img_night,
            "landmark_sources": landmark_src,
            "labels": qinfo,
        },
    }
    with atomic_write(root / f"gnd_{name}.pkl") as tmp, open(tmp, "wb") as f:
        pickle.dump(cfg, f, protocol=4)
    logger.info(
        "wrote %s: %d db images, %d queries, easy/query %.1f, hard/query %.1f",
        root,
        len(names),
        len(qnames),
        np.mean([len(g["easy"]) for g in gnd]),
        np.mean([len(g["hard"]) for g in gnd]),
    )
    return root


def _ensure(
    d: Path, want: dict, complete: Callable[[], bool], build: Callable[[Path], None]
) -> None:
    """Keep ``d`` when its ``PARAMS_FILE`` equals ``want`` and ``complete()``; otherwise build
    it afresh in a temporary folder (``build(tmp)``) that replaces ``d`` on success."""
    want = {**want, "generator_version": GENERATOR_VERSION}
    meta = d / PARAMS_FILE
    if meta.is_file():
        try:
            if json.loads(meta.read_text()) == want and complete():
                return
        except json.JSONDecodeError:
            pass
    logger.info("generating %s", d)
    with atomic_dir(d) as tmp:
        build(tmp)
        write_json(tmp / PARAMS_FILE, want, indent=1)


def synthetic_dir(root: str | os.PathLike, name: str) -> Path:
    """``<root>/<name>-synth`` (e.g. ``datasets/roxford5k-synth``)."""
    return Path(root) / f"{name}-synth"


def ensure_synthetic_revisitop(
    root: str | os.PathLike = "datasets", name: str = "roxford5k", **kwargs
) -> Path:
    """Generate ``<root>/<name>-synth`` (revisitop layout) on first use; regenerate when the
    parameters (``SYNTH_DEFAULTS`` overridden by ``kwargs``) differ from the stored ones.

    Returns:
        the dataset directory; read it with ``read_revisitop(path, name)``.
    """
    params = {**SYNTH_DEFAULTS, **kwargs}
    params["size"] = [int(params["size"][0]), int(params["size"][1])]
    d = synthetic_dir(root, name)
    _ensure(
        d,
        {"name": name, **params},
        lambda: (d / f"gnd_{name}.pkl").is_file(),
        lambda tmp: write_synthetic_revisitop(tmp, name, **params),
    )
    return d


def write_vocabulary_images(
    out_dir: str | os.PathLike,
    n_images: int = 60,
    seed: int = 0,
    size: tuple[int, int] = (512, 384),
) -> list[str]:
    """Render ``n_images`` views of random structures built from TRAIN-photo crops (disjoint
    from every evaluation texture) into ``out_dir/*.jpg``; a separate set to learn retrieval
    vocabularies on. Returns the file names (relative to out_dir)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 777])
    tiles = [t for _, t in photo_tiles("train")]
    names = []
    for i in range(n_images):
        walls = make_structure(
            [tiles[int(j)] for j in rng.choice(len(tiles), 3, replace=False)], rng
        )
        img = render_view(walls, sample_camera(walls, size, rng), rng)
        img = (
            synth.day_to_night(img, rng, rng.uniform(0.7, 1.0))
            if rng.random() < 0.2
            else synth.photometric(img, rng, 0.5)
        )
        nm = f"vocab_{i:06d}.jpg"
        write_rgb(out_dir / nm, img, JPEG_QUALITY)
        names.append(nm)
    return names


def ensure_vocabulary_images(
    root: str | os.PathLike = "datasets",
    n_images: int = 60,
    seed: int = 0,
    size: tuple[int, int] = (512, 384),
) -> tuple[Path, list[str]]:
    """``<root>/revisitop-vocab-synth/jpg`` (TRAIN-photo renders), generated on first use.

    Returns:
        (image dir, sorted image names).
    """
    d = Path(root) / "revisitop-vocab-synth"
    want = {"n_images": n_images, "seed": seed, "size": [int(size[0]), int(size[1])]}
    _ensure(
        d,
        want,
        lambda: len(list((d / "jpg").glob("*.jpg"))) == n_images,
        lambda tmp: write_vocabulary_images(tmp / "jpg", n_images, seed, size),
    )
    return d / "jpg", sorted(p.name for p in (d / "jpg").glob("*.jpg"))


def find_revisitop(
    root: str | os.PathLike = "datasets",
    name: str = "roxford5k",
    synthetic_ok: bool = True,
    **synth_kwargs,
) -> tuple[RevisitopData, bool]:
    """The real ``<root>/<name>`` if it has ``gnd_<name>.pkl``, else the synthetic set
    (``ensure_synthetic_revisitop(root, name, **synth_kwargs)``).

    Returns:
        (data, is_synthetic).
    """
    real = Path(root) / name
    if (real / f"gnd_{name}.pkl").is_file():
        return read_revisitop(real, name), False
    if not synthetic_ok:
        raise RevisitopError(f"{real / f'gnd_{name}.pkl'}: not found and synthetic data disabled")
    d = ensure_synthetic_revisitop(root, name, **synth_kwargs)
    return read_revisitop(d, name), True
