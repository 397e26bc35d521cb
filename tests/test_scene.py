"""Textured-plane renderer (localize.data.scene) and the Aachen layout writer/reader."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from localize import colmap, geometry
from localize.data import aachen
from localize.data import render as rnd
from localize.data import scene as scn


def _solid(color, h=16, w=16):
    return np.full((h, w, 3), color, np.uint8)


def _plane_facing_camera(z, half, color=None, texture=None, name=""):
    """Square of side 2*half at depth z, centred on the optical axis, facing a camera at the origin."""
    tex = texture if texture is not None else _solid(color)
    # u = +x, v = +y (down): normal u x v = +z (away from camera; planes are double-sided)
    return rnd.Plane((-half, -half, z), (1, 0, 0), (0, 1, 0), (2 * half, 2 * half), tex, name=name)


# ------------------------------------------------------------------------------------------
# Renderer
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("near_first", [True, False])
def test_near_plane_hides_far_plane(near_first):
    near = _plane_facing_camera(5.0, 0.5, color=(255, 0, 0), name="near")
    far = _plane_facing_camera(20.0, 20.0, color=(0, 0, 255), name="far")
    planes = [near, far] if near_first else [far, near]
    sc = rnd.Scene(planes)
    K = rnd.intrinsics(160, 120, 60.0)
    R, t = np.eye(3), np.zeros(3)
    img, depth = rnd.render(sc, K, R, t, 160, 120, return_depth=True)
    cy, cx = 60, 80
    assert tuple(img[cy, cx]) == (255, 0, 0)
    assert depth[cy, cx] == pytest.approx(5.0, rel=1e-4)
    assert tuple(img[5, 5]) == (0, 0, 255)
    assert depth[5, 5] == pytest.approx(20.0, rel=1e-4)
    # the near square spans +-0.5 m at 5 m: +-f/10 pixels around the centre
    half_px = K[0, 0] * 0.5 / 5.0
    assert tuple(img[cy, int(cx + half_px - 2)]) == (255, 0, 0)
    assert tuple(img[cy, int(cx + half_px + 2)]) == (0, 0, 255)


def test_ground_plane_behind_camera_is_clipped():
    """The ground extends behind the camera: near-plane clipping must keep depths exact."""
    tex = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ground = rnd.Plane((-50, 0, -50), (1, 0, 0), (0, 0, 1), (100, 100), tex, name="ground")
    sc = rnd.Scene([ground])
    w, h = 160, 120
    K = rnd.intrinsics(w, h, 60.0)
    R, t = rnd.look_at((0.0, -1.6, 0.0), yaw_deg=30.0, pitch_deg=0.0)
    _, depth = rnd.render(sc, K, R, t, w, h, return_depth=True)
    assert np.isinf(depth[: h // 2 - 2]).all()  # sky above the horizon
    v = h - 1
    ray = np.linalg.inv(K) @ np.array([w / 2, v, 1.0])  # camera y down = world y down (level)
    assert depth[v, w // 2] == pytest.approx(1.6 / ray[1], rel=1e-3)


def test_projection_consistency_two_views():
    """A texel's 3D point projects to where that texel appears, in two different views."""
    rng = np.random.default_rng(0)
    gray = cv2.GaussianBlur(rng.integers(0, 255, (300, 400), dtype=np.uint8), (0, 0), 1.5)
    gray = np.clip((gray.astype(np.float32) - 128) * 3 + 128, 0, 255).astype(np.uint8)
    tex = np.repeat(gray[..., None], 3, axis=2)  # grey noise: no red anywhere
    tex[150:155, 200:205] = (255, 0, 0)  # a marker 5x5 texels, centre texel (202, 152)
    plane = rnd.Plane((-5, -6, 12), (1, 0, 0), (0, 1, 0), (10.0, 7.5), tex, name="facade")
    sc = rnd.Scene([plane])
    w, h = 320, 240
    K = rnd.intrinsics(w, h, 60.0)
    poses = [rnd.look_at((0.0, -1.6, 0.0), 0.0, 5.0), rnd.look_at((1.5, -1.4, 1.0), -8.0, 3.0, 2.0)]
    X = plane.texel_to_world([[202.0, 152.0]])
    renders = [rnd.render(sc, K, R, t, w, h) for R, t in poses]
    for (R, t), img in zip(poses, renders):
        uv, z = geometry.project(K, R, t, X)
        red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
        assert red.sum() > 3
        ys, xs = np.nonzero(red)
        assert np.hypot(xs.mean() - uv[0, 0], ys.mean() - uv[0, 1]) < 0.5
    # patches around the projections of random facade points agree between the two views
    pts = plane.texel_to_world(rng.uniform([40, 40], [360, 260], size=(20, 2)))
    uvs = [geometry.project(K, R, t, pts)[0] for R, t in poses]
    grays = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32) for im in renders]

    def patch(g, u, v, r=4):
        return cv2.getRectSubPix(g, (2 * r + 1, 2 * r + 1), (float(u), float(v))).ravel()

    def ncc(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))

    same = [ncc(patch(grays[0], *uvs[0][i]), patch(grays[1], *uvs[1][i])) for i in range(20)]
    shifted = [
        ncc(patch(grays[0], *uvs[0][i]), patch(grays[1], *(uvs[1][i] + 3))) for i in range(20)
    ]
    assert np.median(same) > 0.9
    assert np.median(same) > np.median(shifted) + 0.3


def test_look_at_point_and_camera():
    """The optical axis goes through the target, image rows stay level, Camera wraps project."""
    w, h = 320, 240
    K = rnd.intrinsics(w, h, 60.0)
    center, target = np.array([3.0, -1.5, -4.0]), np.array([-1.0, -6.0, 10.0])
    R, t = rnd.look_at_point(center, target)
    cam = rnd.Camera(K, R, t, w, h)
    np.testing.assert_allclose(cam.center, center, atol=1e-9)
    uv, z = cam.project(np.stack([target, target + [0.0, 2.0, 0.0]]))
    np.testing.assert_allclose(uv[0], [(w - 1) / 2, (h - 1) / 2], atol=1e-6)
    assert z[0] == pytest.approx(np.linalg.norm(target - center))
    assert uv[1, 0] == pytest.approx(uv[0, 0], abs=1e-6) and uv[1, 1] > uv[0, 1]  # down = +v
    np.testing.assert_allclose(
        uv, geometry.project(K, R, t, np.stack([target, target + [0, 2, 0]]))[0]
    )
    # roll turns the image about the principal point: the point below moves sideways
    R2, t2 = rnd.look_at_point(center, target, roll_deg=10.0)
    uv2, _ = geometry.project(K, R2, t2, np.stack([target, target + [0.0, 2.0, 0.0]]))
    np.testing.assert_allclose(uv2[0], uv[0], atol=1e-6)
    assert abs(uv2[1, 0] - uv[1, 0]) > 1.0


def test_front_facing_and_background():
    """A plane seen from its front is drawn over the given background; seen from behind it
    faces away (``is_front_facing``), and only the background remains where it is not."""
    plane = _plane_facing_camera(5.0, 0.5, color=(255, 0, 0))
    assert plane.is_front_facing((0.0, 0.0, 0.0))
    assert not plane.is_front_facing((0.0, 0.0, 10.0))
    grid = plane.surface_grid(4)
    assert grid.shape == (16, 3) and np.allclose(grid[:, 2], 5.0)
    assert np.allclose(grid.mean(0), [0.0, 0.0, 5.0])
    w, h = 160, 120
    K = rnd.intrinsics(w, h, 60.0)
    bg = np.full((h, w, 3), (10, 200, 30), np.uint8)
    img = rnd.render(rnd.Scene([plane]), K, np.eye(3), np.zeros(3), w, h, background=bg)
    assert tuple(img[60, 80]) == (255, 0, 0) and tuple(img[5, 5]) == (10, 200, 30)
    with pytest.raises(ValueError, match="background"):
        rnd.render(rnd.Scene([plane]), K, np.eye(3), np.zeros(3), w, h, background=bg[:10])


def test_street_scene_render_and_night():
    world = scn.make_street_scene(0)
    assert len(world.planes) > 20
    db = scn.database_poses(6, 0)
    K = rnd.intrinsics(640, 480, 60.0)
    for p in db[:3]:
        img, depth = rnd.render(world, K, p["R"], p["t"], 640, 480, return_depth=True)
        assert img.shape == (480, 640, 3) and img.dtype == np.uint8
        d = depth[np.isfinite(depth)]
        assert 2.0 < np.median(d) < 40.0  # street scale
    p = db[0]
    day = rnd.render(world, K, p["R"], p["t"], 640, 480)
    night = rnd.render(world, K, p["R"], p["t"], 640, 480, night=True, rng=1)
    assert night.mean() < 0.7 * day.mean()
    again = rnd.render(world, K, p["R"], p["t"], 640, 480, night=True, rng=1)
    assert np.array_equal(night, again)
    q = scn.query_poses(5, db, 1, scene=world)
    assert all(scn.min_clearance(world, x["center"]) >= 2.0 for x in q)


def test_very_dark_night_keeps_the_scene():
    """Past darkness 1.33 the exposure level used to go <= 0: the "night" image was an inverted,
    clipped scene or noise alone. It is floored now: coarse structure still correlates."""
    from descriptors.data.synth import day_to_night

    rng = np.random.default_rng(0)
    day = cv2.resize(rng.integers(0, 255, (24, 32), dtype=np.uint8), (320, 240))
    coarse = (40, 30)
    ref = cv2.resize(day.astype(np.float32), coarse, interpolation=cv2.INTER_AREA).ravel()
    for seed in range(10):
        night = day_to_night(day, np.random.default_rng(seed), 1.6)
        got = cv2.resize(night.astype(np.float32), coarse, interpolation=cv2.INTER_AREA).ravel()
        assert night.mean() < 0.5 * day.mean()
        assert np.corrcoef(got, ref)[0, 1] > 0.5, seed


# ------------------------------------------------------------------------------------------
# Aachen layout
# ------------------------------------------------------------------------------------------
SMALL = dict(n_db=16, n_query=6, night_fraction=1 / 3, width=480, height=360, seed=3)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("aachen") / "aachen-synth"
    return aachen.ensure_synthetic_aachen(root, **SMALL)


def test_synthetic_aachen_layout(synth_root: Path):
    r = synth_root
    for rel in [
        "images_upright/db/1.jpg",
        "images_upright/db/16.jpg",
        "3D-models/aachen_v_1_1/cameras.bin",
        "3D-models/aachen_v_1_1/images.bin",
        "3D-models/aachen_v_1_1/points3D.bin",
        "3D-models/aachen_v_1_1/database_intrinsics_v1_1.txt",
        "queries/day_time_queries_with_intrinsics.txt",
        "queries/night_time_queries_with_intrinsics.txt",
        "queries/ground_truth_poses.txt",
    ]:
        assert (r / rel).is_file(), rel
    assert len(list((r / "images_upright/query/day/nexus5x").glob("*.jpg"))) == 4
    assert len(list((r / "images_upright/query/night/nexus5x").glob("*.jpg"))) == 2
    assert not [p for p in r.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers
    line = (r / "queries/night_time_queries_with_intrinsics.txt").read_text().splitlines()[0]
    f = line.split()
    assert f[0].startswith("query/night/nexus5x/") and f[1] == "SIMPLE_RADIAL"
    assert f[2:4] == ["480", "360"] and float(f[7]) == 0.0 and len(f) == 8
    assert float(f[5]) == 240.0 and float(f[6]) == 180.0  # COLMAP principal point w/2, h/2


def test_read_aachen_round_trip(synth_root: Path):
    d = aachen.read_aachen(synth_root)
    assert d.image_dir == synth_root / "images_upright"
    assert d.db_names == [f"db/{i}.jpg" for i in range(1, 17)]
    assert len(d.queries) == 6
    assert sorted(d.query_condition.values()) == ["day"] * 4 + ["night"] * 2
    for name, cam in d.queries:
        assert name.split("/")[1] == d.query_condition[name]
        assert (d.image_dir / name).is_file()
        assert cam.model.name == "SIMPLE_RADIAL" and (cam.width, cam.height) == (480, 360)
        img = cv2.imread(str(d.image_dir / name))
        assert img.shape == (360, 480, 3)
    assert set(d.ground_truth) == set(d.query_names)
    # basenames unique (the submission format uses basenames)
    assert len({n.rsplit("/", 1)[1] for n in d.query_names}) == 6
    # reference model: poses + intrinsics agree with database_intrinsics_v1_1.txt
    rec = colmap.read_model(d.reference_model)
    assert len(rec.points3D) == 0 and len(rec.images) == 16
    intr = dict(
        (n, c)
        for n, c in colmap.parse_query_list(d.reference_model / "database_intrinsics_v1_1.txt")
    )
    for im in rec.images.values():
        cam = rec.cameras[im.camera_id]
        assert np.allclose(cam.params, intr[im.name].params)
    # ground truth is consistent with the renderer: night query darker, GT centre near the loop
    for name, (q, t) in d.ground_truth.items():
        c = -geometry.qvec_to_rotmat(q).T @ t
        assert abs(c[1] + scn.EYE_HEIGHT_M) < 0.5 and np.linalg.norm(q) == pytest.approx(1)


def test_ensure_does_not_regenerate_and_errors(synth_root: Path, tmp_path: Path):
    stamp = (synth_root / "images_upright/db/1.jpg").stat().st_mtime_ns
    aachen.ensure_synthetic_aachen(synth_root, **SMALL)
    assert (synth_root / "images_upright/db/1.jpg").stat().st_mtime_ns == stamp
    # errors name the missing piece
    with pytest.raises(FileNotFoundError, match="root not found"):
        aachen.read_aachen(tmp_path / "nope")
    bad = tmp_path / "bad"
    (bad / "images_upright").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="aachen_v_1_1"):
        aachen.read_aachen(bad)
    (bad / "junk.txt").write_text("x")
    with pytest.raises(FileExistsError):
        aachen.ensure_synthetic_aachen(bad, **SMALL)
