"""The pycolmap adapter (localize.colmap, colmap_db, colmap_sfm) and localize.colmap_model (model
files read by hand): query lists, models, database + triangulation, absolute pose."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from localize import colmap, colmap_db, colmap_model, colmap_sfm, geometry
from localize.data import render as rnd
from localize.data import scene as scn
from localize.geometry import pose_error, rigid_to_qt, rotmat_to_qvec


# ------------------------------------------------------------------------------------------
# Query lists and cameras
# ------------------------------------------------------------------------------------------
def test_parse_query_list_real_format(tmp_path: Path):
    p = tmp_path / "night_time_queries_with_intrinsics.txt"
    p.write_text(
        "# comment line\n"
        "\n"
        "query/night/nexus5x/IMG_20161227_000000.jpg SIMPLE_RADIAL 1600 1200 1400.5 800 600 "
        "0.0123\n"
        "query/day/milestone/2010-10-30_17-47-25_73.jpg SIMPLE_RADIAL 1600 1200 1469.2 800 600 "
        "-0.0353\n"
    )
    out = colmap.parse_query_list(p)
    assert [n for n, _ in out] == [
        "query/night/nexus5x/IMG_20161227_000000.jpg",
        "query/day/milestone/2010-10-30_17-47-25_73.jpg",
    ]
    cam = out[0][1]
    assert cam.model.name == "SIMPLE_RADIAL" and (cam.width, cam.height) == (1600, 1200)
    assert np.allclose(cam.params, [1400.5, 800, 600, 0.0123])
    name, cam2 = colmap.camera_from_query_line("a.jpg PINHOLE 640 480 500 501 320 240")
    assert name == "a.jpg" and cam2.model.name == "PINHOLE"

    bad = tmp_path / "bad.txt"
    bad.write_text("ok.jpg SIMPLE_RADIAL 10 10 5 5 5 0\nbroken.jpg SIMPLE_RADIAL 10 10 5\n")
    with pytest.raises(colmap.ColmapError, match=r"bad\.txt:2"):
        colmap.parse_query_list(bad)
    with pytest.raises(FileNotFoundError):
        colmap.parse_query_list(tmp_path / "missing.txt")


# ------------------------------------------------------------------------------------------
# Absolute pose
# ------------------------------------------------------------------------------------------
def _random_pose_problem(rng, n, outlier_frac=0.2):
    cam = colmap.camera_from_dict(
        dict(model="SIMPLE_RADIAL", width=640, height=480, params=[520.0, 320.0, 240.0, 0.0])
    )
    R, t = rnd.look_at((1.0, -1.6, -2.0), 20.0, 5.0, 2.0)
    Xc = rng.uniform([-6, -4, 5], [6, 4, 30], size=(n, 3))
    Xw = (Xc - t) @ R  # R^T (Xc - t)
    uv_colmap = np.asarray(cam.img_from_cam(Xc))
    uv = uv_colmap - 0.5 + rng.normal(0, 0.3, (n, 2))  # hloc coords + detection noise
    n_out = int(n * outlier_frac)
    uv[:n_out] = rng.uniform([0, 0], [640, 480], size=(n_out, 2))
    return cam, R, t, uv, Xw, n_out


def test_estimate_absolute_pose():
    rng = np.random.default_rng(1)
    cam, R, t, uv, Xw, n_out = _random_pose_problem(rng, 300)
    res, why = colmap_sfm.estimate_absolute_pose(uv, Xw, cam)
    assert why == "ok" and res is not None
    dt, dr = pose_error(res["qvec_wxyz"], res["tvec"], rotmat_to_qvec(R), t)
    assert dt < 0.01 and dr < 0.1
    assert res["inlier_mask"].shape == (300,) and res["inlier_mask"][n_out:].mean() > 0.95
    assert res["num_inliers"] == int(res["inlier_mask"].sum())
    q, tt = rigid_to_qt(res["cam_from_world"])
    assert np.allclose(q, res["qvec_wxyz"]) and np.allclose(tt, res["tvec"])
    # too few correspondences: no exception, a reason
    res3, why3 = colmap_sfm.estimate_absolute_pose(
        uv[n_out : n_out + 3], Xw[n_out : n_out + 3], cam
    )
    assert res3 is None and "3" in why3
    res0, why0 = colmap_sfm.estimate_absolute_pose(np.zeros((0, 2)), np.zeros((0, 3)), cam)
    assert res0 is None and why0


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------
def test_reference_model_round_trip(tmp_path: Path):
    rng = np.random.default_rng(2)
    cams = [
        dict(model="SIMPLE_RADIAL", width=640, height=480, params=[500, 320, 240, 0.0]),
        dict(model="PINHOLE", width=800, height=600, params=[600, 610, 400, 300]),
    ]
    ims = []
    for i in range(5):
        q = rng.normal(size=4)
        ims.append(
            dict(
                name=f"db/{i + 1}.jpg",
                camera_idx=i % 2,
                qvec_wxyz=q / np.linalg.norm(q),
                tvec=rng.normal(size=3),
            )
        )
    out = colmap.write_reference_model(tmp_path / "model", cams, ims)
    assert {p.name for p in out.iterdir()} >= {"cameras.bin", "images.bin", "points3D.bin"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    rec = colmap.read_model(out)
    assert len(rec.points3D) == 0
    assert colmap_model.read_image_names(out) == {i + 1: f"db/{i + 1}.jpg" for i in range(5)}
    # the hand reader agrees with pycolmap on the text format too
    txt = tmp_path / "model_txt"
    txt.mkdir()
    rec.write_text(str(txt))
    assert colmap_model.model_format(txt) == ".txt" and colmap_model.model_format(out) == ".bin"
    assert colmap_model.read_image_names(txt) == {i + 1: f"db/{i + 1}.jpg" for i in range(5)}
    # writing again replaces the folder whole
    colmap.write_reference_model(out, cams, ims[:2])
    assert len(colmap.read_model(out).images) == 2
    ids = colmap.image_ids_by_name(rec)
    for i, im in enumerate(ims):
        image = rec.images[ids[im["name"]]]
        assert image.image_id == i + 1
        cam = rec.cameras[image.camera_id]
        assert cam.model.name == cams[im["camera_idx"]]["model"]
        assert np.allclose(cam.params, cams[im["camera_idx"]]["params"])
        q, t = rigid_to_qt(image.cam_from_world())
        dt, dr = pose_error(q, t, im["qvec_wxyz"], im["tvec"])
        assert dt < 1e-9 and dr < 1e-5
    with pytest.raises(colmap.ColmapError, match="not found"):
        colmap.read_model(tmp_path / "nothing")
    (tmp_path / "corrupt").mkdir()
    for f in ("cameras.bin", "images.bin", "points3D.bin"):
        (tmp_path / "corrupt" / f).write_bytes(b"\x05\x00garbage")
    with pytest.raises(colmap.ColmapError, match="corrupt"):
        colmap.read_model(tmp_path / "corrupt")
    with pytest.raises(colmap.ColmapError, match="corrupt COLMAP images.bin"):
        colmap_model.read_image_names(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "points3D.bin").unlink()
    with pytest.raises(colmap.ColmapError, match="not a COLMAP model"):
        colmap.read_model(tmp_path / "corrupt")


# ------------------------------------------------------------------------------------------
# Database + verification + triangulation on rendered views
# ------------------------------------------------------------------------------------------
def _sift(img):
    sift = cv2.SIFT_create(nfeatures=1500)
    kps, des = sift.detectAndCompute(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), None)
    return np.array([k.pt for k in kps], np.float32), des


def _mutual_ratio(d0, d1, ratio=0.8):
    bf = cv2.BFMatcher(cv2.NORM_L2)
    fw = bf.knnMatch(d0, d1, k=2)
    bw = {m.queryIdx: m.trainIdx for m in bf.match(d1, d0)}
    return np.array(
        [
            (m[0].queryIdx, m[0].trainIdx)
            for m in fw
            if len(m) == 2
            and m[0].distance < ratio * m[1].distance
            and bw.get(m[0].trainIdx) == m[0].queryIdx
        ],
        np.int64,
    ).reshape(-1, 2)


def test_triangulation_smoke(tmp_path: Path):
    w, h = 480, 360
    world = scn.make_street_scene(0)
    K = rnd.intrinsics(w, h, 60.0)
    # three views 1.5 m apart looking north at the facades ~20 m away
    poses = [rnd.look_at((x, -1.6, 8.0), yaw, 8.0) for x, yaw in ((-1.5, 4), (0.0, 0), (1.5, -4))]
    cams, ims, imgs, depths = [], [], [], []
    for i, (R, t) in enumerate(poses):
        img, depth = rnd.render(world, K, R, t, w, h, return_depth=True)
        imgs.append(img)
        depths.append(depth)
        ims.append(dict(name=f"db/{i + 1}.jpg", camera_idx=0, qvec_wxyz=rotmat_to_qvec(R), tvec=t))
    cams.append(dict(model="SIMPLE_RADIAL", width=w, height=h, params=rnd.colmap_params(K)))
    model = colmap.write_reference_model(tmp_path / "ref", cams, ims)
    ref = colmap.read_model(model)
    names = [im["name"] for im in ims]
    feats = {n: _sift(img) for n, img in zip(names, imgs)}
    pairs = [(names[0], names[1]), (names[1], names[2]), (names[0], names[2])]
    matches = {p: _mutual_ratio(feats[p[0]][1], feats[p[1]][1]) for p in pairs}
    assert all(len(m) > 50 for m in matches.values())

    db = colmap_db.create_database(tmp_path / "db.db", ref)
    ids = colmap_db.database_image_ids(db)
    assert ids == colmap.image_ids_by_name(ref)
    colmap_db.import_features(db, ids, {n: f[0] for n, f in feats.items()})
    # one pair given reversed (columns swapped with it), one given in both orders: 3 pairs
    rev = {
        (pairs[2][1], pairs[2][0]): matches[pairs[2]][:, ::-1],
        **{p: matches[p] for p in pairs[:2]},
        (pairs[0][1], pairs[0][0]): np.zeros((0, 2)),
    }
    assert colmap_db.import_matches(db, ids, rev) == 3
    n_verified = colmap_db.geometric_verification(db, pairs)
    assert n_verified == 3
    rec = colmap_sfm.triangulate(
        ref, db, tmp_path / "no_images", tmp_path / "sfm", {"num_threads": 1}
    )
    assert len(rec.points3D) > 100
    assert rec.compute_mean_reprojection_error() < 1.0
    assert (tmp_path / "sfm" / "points3D.bin").is_file()
    assert len(ref.points3D) == 0  # reference not modified
    # two-view tracks are kept by default (fixed poses); COLMAP's default drops them
    lengths = [p.track.length() for p in rec.points3D.values()]
    assert min(lengths) == 2 and max(lengths) >= 3
    strict = colmap_sfm.triangulate(
        ref,
        db,
        tmp_path / "no_images",
        tmp_path / "sfm_strict",
        {"num_threads": 1, "ignore_two_view_tracks": True},
    )
    assert 0 < len(strict.points3D) < len(rec.points3D)
    again = colmap_sfm.triangulate(
        ref, db, tmp_path / "no_images", tmp_path / "sfm2", {"num_threads": 1}
    )
    assert len(again.points3D) == len(rec.points3D)  # seeded: reproducible

    # tracks index the imported hloc keypoints: reprojections land on them (checks the +0.5)
    tracks, xyz = colmap.point_tracks(rec), colmap.points_xyz(rec)
    for n, (R, t), depth in zip(names, poses, depths):
        idx = np.array(list(tracks[n].keys()))
        X = np.stack([xyz[tracks[n][i]] for i in idx])
        uv, z = geometry.project(K, R, t, X)
        err = np.linalg.norm(uv - feats[n][0][idx], axis=1)
        assert np.median(err) < 0.3  # a missing 0.5 shift gives ~0.7
        # and the points lie on the rendered surfaces
        px = np.round(uv).astype(int)
        ok = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        dz = depth[px[ok, 1], px[ok, 0]]
        assert np.isfinite(dz).mean() > 0.9  # not on the sky
        z, dz = z[ok][np.isfinite(dz)], dz[np.isfinite(dz)]
        assert np.median(np.abs(z - dz) / dz) < 0.02
