"""Triangulation, localization and evaluation on hand-made data (no images, no extraction).

A random 3D point cloud seen by a few database cameras; keypoints are the exact projections
(hloc pixel-centre convention, shuffled per image), matches are the true correspondences. This
checks the 0.5 px conventions, the 2D-3D bookkeeping and every failure path deterministically.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from localize import colmap, io, parsers
from localize import evaluate as ev
from localize import localize_sfm as loc
from localize import triangulation as tri
from localize.geometry import rigid_to_qt, rotmat_to_qvec

W, H = 640, 480
F = 500.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])
CAM = dict(
    model="SIMPLE_RADIAL", width=W, height=H, params=[F, K[0, 2] + 0.5, K[1, 2] + 0.5, 0.0]
)  # COLMAP: principal point + 0.5


def rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def pose(center, yaw_deg):
    R = rot_y(yaw_deg).T  # world-to-camera
    return R, -R @ np.asarray(center, float)


def project(R, t, X):
    Xc = X @ R.T + t
    uv = Xc @ K.T
    return uv[:, :2] / uv[:, 2:], Xc[:, 2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Reference model (5 posed db images, no points), features.h5 and db-db matches.h5."""
    root = tmp_path_factory.mktemp("loc")
    rng = np.random.default_rng(0)
    X = np.stack([rng.uniform(-6, 6, 400), rng.uniform(-3, 3, 400), rng.uniform(10, 16, 400)], 1)
    db = {
        f"db/{i}.jpg": pose((-2.0 + i, rng.uniform(-0.2, 0.2), 0.0), rng.uniform(-4, 4))
        for i in range(5)
    }
    cams = [CAM] * len(db)
    imgs = [
        dict(name=n, camera_idx=i, qvec_wxyz=rotmat_to_qvec(R), tvec=t)
        for i, (n, (R, t)) in enumerate(db.items())
    ]
    ref = colmap.write_reference_model(root / "ref", cams, imgs)

    feats = root / "features.h5"
    kp_index: dict[str, np.ndarray] = {}  # name -> (n_points,) keypoint index of each 3D point
    with io.H5Writer(feats) as w:
        for n, (R, t) in db.items():
            uv, z = project(R, t, X)
            vis = np.flatnonzero(
                (z > 0) & (uv[:, 0] > 0) & (uv[:, 0] < W - 1) & (uv[:, 1] > 0) & (uv[:, 1] < H - 1)
            )
            perm = rng.permutation(vis)
            kps = uv[perm] + rng.normal(0, 0.2, (len(perm), 2))
            idx = np.full(len(X), -1)
            idx[perm] = np.arange(len(perm))
            kp_index[n] = idx
            io.write_features(
                w.file,
                n,
                {
                    "keypoints": kps.astype(np.float32),
                    "scores": np.ones(len(kps), np.float32),
                    "image_size": np.array([W, H]),
                },
            )
    names = list(db)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[:i]]
    parsers.write_pairs(root / "pairs-db.txt", pairs)
    with io.H5Writer(root / "matches-db.h5") as w:
        for a, b in pairs:
            write_true_matches(w.file, a, b, kp_index, n_kp(feats, a))
    return dict(
        root=root,
        X=X,
        db=db,
        ref=ref,
        features=feats,
        kp_index=kp_index,
        pairs=root / "pairs-db.txt",
        matches=root / "matches-db.h5",
        rng=rng,
    )


def n_kp(feats, name):
    return len(io.get_keypoints(feats, name))


def write_true_matches(fd, a, b, kp_index, n_a, keep=None):
    ia, ib = kp_index[a], kp_index[b]
    both = np.flatnonzero((ia >= 0) & (ib >= 0))
    if keep is not None:
        both = both[:keep]
    m0 = np.full(n_a, -1, np.int32)
    m0[ia[both]] = ib[both]
    io.write_matches(fd, a, b, m0, np.ones(n_a, np.float32))


@pytest.fixture(scope="module")
def triangulated(world):
    return tri.run(
        world["root"] / "sfm",
        world["ref"],
        world["root"] / "images",
        world["pairs"],
        world["features"],
        world["matches"],
    )


@pytest.fixture(scope="module")
def sfm(triangulated):
    return triangulated[0]


def test_triangulation_recovers_points(world, triangulated):
    sfm, stats = triangulated
    assert sfm.num_points3D() > 300, stats
    assert stats["num_points3D"] == sfm.num_points3D()
    assert stats["num_pairs"] == stats["num_pairs_imported"] == 10  # 5 views, all pairs
    assert stats["num_pairs_verified"] == 10 and stats["num_pairs_missing"] == 0
    # the statistics are returned AND kept on disk for users
    on_disk = json.loads((world["root"] / "sfm" / tri.STATS_FILE).read_text())
    assert on_disk == pytest.approx(stats)
    assert stats["mean_track_length"] > 3
    assert stats["mean_reprojection_error_px"] < 0.5  # keypoint noise 0.2 px
    # the 0.5 px convention is applied exactly once: triangulated points sit on the true ones
    tracks = colmap.point_tracks(sfm)
    xyz = colmap.points_xyz(sfm)
    n = "db/0.jpg"
    inv = {k: i for i, k in enumerate(world["kp_index"][n]) if k >= 0}
    err = [np.linalg.norm(xyz[pid] - world["X"][inv[kp]]) for kp, pid in tracks[n].items()]
    assert np.median(err) < 0.05, np.median(err)
    assert (world["root"] / "sfm" / "points3D.bin").is_file()


def test_triangulation_zero_points_fails_loudly(world, tmp_path):
    # matches pointing at wrong keypoints: verification finds no geometry -> 0 points
    rng = np.random.default_rng(1)
    bad = tmp_path / "bad.h5"
    names = list(world["db"])
    pairs = [(names[1], names[0]), (names[2], names[1])]
    with io.H5Writer(bad) as w:
        for a, b in pairs:
            na, nb = n_kp(world["features"], a), n_kp(world["features"], b)
            m0 = np.full(na, -1, np.int32)
            sel = rng.choice(na, 60, replace=False)
            m0[sel] = rng.choice(nb, 60, replace=False)
            io.write_matches(w.file, a, b, m0)
    parsers.write_pairs(tmp_path / "pairs.txt", pairs)
    with pytest.raises(colmap.ColmapError, match="0 points"):  # one line on the CLI
        tri.main(
            tmp_path / "sfm", world["ref"], tmp_path, tmp_path / "pairs.txt", world["features"], bad
        )


def make_queries(world, tmp_path):
    """Queries: good, no pairs, zero-match pair, zero keypoints, too few 2D-3D. Returns
    (queries, pairs file, features, matches, ground truth)."""
    rng = np.random.default_rng(2)
    feats = tmp_path / "features.h5"
    feats.write_bytes(Path(world["features"]).read_bytes())
    names = list(world["db"])
    gt, queries, pairs = {}, [], []
    cam = colmap.camera_from_dict(CAM)
    spec = {
        "query/day/good.jpg": "good",
        "query/day/nopairs.jpg": "nopairs",
        "query/night/zeromatch.jpg": "zeromatch",
        "query/night/blank.jpg": "blank",
        "query/day/few.jpg": "few",
    }
    with io.H5Writer(feats) as wf, io.H5Writer(tmp_path / "matches-q.h5") as wm:
        for qn, kind in spec.items():
            R, t = pose((rng.uniform(-1.5, 1.5), 0.1, -0.7), rng.uniform(-5, 5))
            gt[qn] = (rotmat_to_qvec(R), t)
            queries.append((qn, cam))
            uv, z = project(R, t, world["X"])
            vis = np.flatnonzero(
                (z > 0) & (uv[:, 0] > 0) & (uv[:, 0] < W - 1) & (uv[:, 1] > 0) & (uv[:, 1] < H - 1)
            )
            if kind == "blank":
                vis = vis[:0]
            perm = rng.permutation(vis)
            idx = np.full(len(world["X"]), -1)
            idx[perm] = np.arange(len(perm))
            kps = uv[perm] + rng.normal(0, 0.2, (len(perm), 2))
            io.write_features(
                wf.file,
                qn,
                {
                    "keypoints": kps.astype(np.float32),
                    "scores": np.ones(len(kps), np.float32),
                    "image_size": np.array([W, H]),
                },
            )
            if kind == "nopairs":
                continue
            kpi = {**world["kp_index"], qn: idx}
            for db in names[:3]:
                pairs.append((qn, db))
                keep = {"zeromatch": 0, "few": 2}.get(kind)
                write_true_matches(wm.file, qn, db, kpi, len(kps), keep=keep)
    parsers.write_pairs(tmp_path / "pairs-q.txt", pairs)
    return queries, tmp_path / "pairs-q.txt", feats, tmp_path / "matches-q.h5", gt


def test_localize_success_and_failures(world, sfm, tmp_path):
    queries, pairs, feats, matches, gt = make_queries(world, tmp_path)
    results = tmp_path / "results.txt"
    logs = loc.main(sfm, queries, pairs, feats, matches, results)
    L = logs["loc"]
    assert L["query/day/good.jpg"]["success"] and L["query/day/good.jpg"]["num_inliers"] > 50
    # inliers: distinct query keypoints (a keypoint may reach several 3D points)
    inl = L["query/day/good.jpg"]["inliers"]
    assert inl == sorted(set(inl)) and 0 < len(inl) <= L["query/day/good.jpg"]["num_inliers"]
    assert L["query/day/nopairs.jpg"]["reason"] == "no retrieval pairs"
    assert L["query/day/nopairs.jpg"]["fallback"] == "identity"
    assert L["query/night/zeromatch.jpg"]["reason"].startswith("0 matches")
    assert L["query/night/blank.jpg"]["reason"] == "query has 0 keypoints"
    assert L["query/day/few.jpg"]["reason"].startswith("too few 2D-3D")
    for q in ("query/night/zeromatch.jpg", "query/night/blank.jpg", "query/day/few.jpg"):
        assert not L[q]["success"] and L[q]["fallback"] == "db/0.jpg"  # top retrieved db image
    assert logs["summary"] == {
        "num_queries": 5,
        "num_localized": 1,
        "num_failed": 4,
        "failure_reasons": {
            "no retrieval pairs": 1,
            "0 matches to the retrieved db images": 1,
            "query has 0 keypoints": 1,
            "too few 2D-3D correspondences": 1,
        },
    }
    # every query is listed, basename only, 8 fields, str() floats; fallback = db pose
    lines = results.read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == [Path(q).name for q, _ in queries]
    for ln in lines:
        f = ln.split(" ")
        assert len(f) == 8 and all(str(float(x)) == x for x in f[1:])
    fields = {ln.split()[0]: np.array(ln.split()[1:], float) for ln in lines}
    q0, t0 = rigid_to_qt(sfm.images[colmap.image_ids_by_name(sfm)["db/0.jpg"]].cam_from_world())
    np.testing.assert_allclose(fields["blank.jpg"], np.r_[q0, t0])
    np.testing.assert_allclose(fields["nopairs.jpg"], [1, 0, 0, 0, 0, 0, 0])
    # our logs file next to the results
    on_disk = json.loads((tmp_path / "results_logs.json").read_text())
    assert on_disk["loc"]["query/day/few.jpg"]["reason"] == L["query/day/few.jpg"]["reason"]
    # hloc's logs: <results>_logs.pkl with localize_sfm's fields
    with open(tmp_path / "results.txt_logs.pkl", "rb") as f:
        hl = pickle.load(f)
    assert set(hl) == {"features", "matches", "retrieval", "loc"} and set(hl["loc"]) == set(L)
    good = hl["loc"]["query/day/good.jpg"]
    ids = colmap.image_ids_by_name(sfm)
    assert good["db"] == [ids[f"db/{i}.jpg"] for i in range(3)]
    ret = good["PnP_ret"]
    assert ret["num_inliers"] == L["query/day/good.jpg"]["num_inliers"]
    n2d3d = L["query/day/good.jpg"]["num_2d3d"]
    assert ret["inlier_mask"].shape == (n2d3d,) and ret["inlier_mask"].sum() == ret["num_inliers"]
    assert good["keypoints_query"].shape == (n2d3d, 2) and len(good["points3D_ids"]) == n2d3d
    kp_idx, kp_to_db = good["keypoint_index_to_db"]
    assert len(kp_idx) == len(kp_to_db) == n2d3d
    # keypoints are COLMAP coordinates (+0.5) of the query keypoints, as hloc logs them
    kpq = io.get_keypoints(feats, "query/day/good.jpg")
    np.testing.assert_allclose(good["keypoints_query"], kpq[kp_idx] + 0.5, atol=1e-5)
    # every (3D point, db indices) entry: the point is observed in those db images
    for p3d, dbs in kp_to_db:
        track = {el.image_id for el in sfm.points3D[p3d].track.elements}
        assert {good["db"][i] for i in dbs} <= track
    assert hl["loc"]["query/day/few.jpg"]["PnP_ret"] is None
    # the good query is exact
    e = ev.evaluate(results, gt, {q: q.split("/")[1] for q, _ in queries})
    assert e["per_query"]["good.jpg"]["dt"] < 0.02 and e["per_query"]["good.jpg"]["dR"] < 0.1
    assert e["conditions"]["day"]["n"] == 3 and e["conditions"]["night"]["n"] == 2


def test_localize_reads_query_lists_and_min_2d3d(world, sfm, tmp_path):
    queries, pairs, feats, matches, _ = make_queries(world, tmp_path)
    ql = tmp_path / "day_time_queries_with_intrinsics.txt"
    ql.write_text(
        "".join(
            f"{q} SIMPLE_RADIAL {W} {H} {' '.join(map(str, CAM['params']))}\n"
            for q, _ in queries[:1]
        )
    )
    logs = loc.main(
        sfm,
        str(tmp_path / "*_time_queries_with_intrinsics.txt"),
        pairs,
        feats,
        matches,
        tmp_path / "r.txt",
        min_num_2d3d=100000,
    )
    assert list(logs["loc"]) == ["query/day/good.jpg"]
    assert logs["loc"]["query/day/good.jpg"]["reason"].startswith("too few 2D-3D")
    with pytest.raises(ValueError, match="unknown localization option"):
        loc.main(sfm, queries, pairs, feats, matches, tmp_path / "r.txt", bogus=1)


def test_hloc_localize_api(world, sfm, tmp_path):
    """hloc's ``localize_sfm`` API: QueryLocalizer + pose_from_cluster (the demo notebook's
    cell) and main's positional ``ransac_thresh`` / ``config`` give main's pose."""
    queries, pairs, feats, matches, gt = make_queries(world, tmp_path)
    qname, camera = queries[0]
    logs = loc.main(
        sfm,
        queries,
        pairs,
        feats,
        matches,
        tmp_path / "r.txt",
        12,
        False,
        False,
        {"estimation": {"ransac": {"max_error": 12}}, "refinement": {"refine_focal_length": False}},
    )
    assert logs["conf"]["max_error_px"] == 12
    ids = colmap.image_ids_by_name(sfm)
    localizer = loc.QueryLocalizer(sfm, {"estimation": {"ransac": {"max_error": 12}}})
    ret, log = loc.pose_from_cluster(
        localizer, qname, camera, [ids[f"db/{i}.jpg"] for i in range(3)], feats, matches
    )
    assert ret["num_inliers"] == logs["loc"][qname]["num_inliers"]
    assert ret["inlier_mask"].shape == (len(log["points3D_ids"]),) and ret["camera"] is camera
    q, t = rigid_to_qt(ret["cam_from_world"])
    assert np.allclose(np.abs(q @ gt[qname][0]), 1, atol=1e-3)
    with pytest.raises(ValueError, match="covisibility_clustering"):
        loc.main(
            sfm, queries, pairs, feats, matches, tmp_path / "r.txt", covisibility_clustering=True
        )
    with pytest.raises(ValueError, match="unsupported"):
        loc.QueryLocalizer(sfm, {"estimation": {"bogus": 1}})


# ------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------
def _line(name, q, t):
    return " ".join([name] + [str(float(x)) for x in (*q, *t)])


def test_evaluate_hand_made(tmp_path):
    Rz = lambda d: np.array(
        [
            [math.cos(math.radians(d)), -math.sin(math.radians(d)), 0],
            [math.sin(math.radians(d)), math.cos(math.radians(d)), 0],
            [0, 0, 1],
        ]
    )
    q_id = np.array([1.0, 0, 0, 0])
    gt = {
        "query/day/a.jpg": (q_id, np.array([0.0, 0, 0])),
        "query/day/b.jpg": (rotmat_to_qvec(Rz(30)), np.array([1.0, 2, 3])),
        "query/day/c.jpg": (q_id, np.array([0.0, 0, 10])),
        "query/night/d.jpg": (q_id, np.array([5.0, 0, 0])),
        "query/night/e.jpg": (q_id, np.array([0.0, 0, 0])),  # missing from results
    }
    gt_file = tmp_path / "gt.txt"
    gt_file.write_text("\n".join(_line(n, *p) for n, p in gt.items()))
    qb = rotmat_to_qvec(Rz(30))
    res = [
        _line("a.jpg", q_id, [0.1, 0, 0]),  # 0.1 m, 0 deg
        _line("b.jpg", -qb, [1.0, 2, 3]),  # sign-flipped quaternion: exact
        _line("c.jpg", rotmat_to_qvec(Rz(3)), [0.0, 0, 10]),  # 3 deg; centre moves
        _line("d.jpg", q_id, [5.0, 0, 0.3]),  # 0.3 m, 0 deg
        _line("zzz.jpg", q_id, [0.0, 0, 0]),  # not in GT: ignored
    ]
    (tmp_path / "res.txt").write_text("\n".join(res) + "\n")
    cond = {n: n.split("/")[1] for n in gt}
    for g in (gt, gt_file):
        e = ev.evaluate(tmp_path / "res.txt", g, cond)
        pq = e["per_query"]
        assert pq["a.jpg"]["dt"] == pytest.approx(0.1) and pq["a.jpg"]["dR"] == pytest.approx(0)
        assert pq["b.jpg"]["dt"] == pytest.approx(0, abs=1e-9)
        assert pq["b.jpg"]["dR"] == pytest.approx(0, abs=1e-5)
        assert pq["c.jpg"]["dR"] == pytest.approx(3.0)
        # c = -R^T t: rotating about z keeps the centre (0, 0, -10)
        assert pq["c.jpg"]["dt"] == pytest.approx(0, abs=1e-9)
        assert pq["d.jpg"]["dt"] == pytest.approx(0.3)
        assert not pq["e.jpg"]["found"] and math.isinf(pq["e.jpg"]["dt"])
        day, night, al = (e["conditions"][k] for k in ("day", "night", "all"))
        assert day["n"] == 3 and night["n"] == 2 and al["n"] == 5
        assert day["recall"] == pytest.approx([2 / 3, 1.0, 1.0])  # c: 3 deg fails 2 deg only
        assert night["recall"] == pytest.approx([0.0, 0.5, 0.5])
        assert day["median_dt"] == pytest.approx(0.0, abs=1e-9)
        assert day["median_dR"] == pytest.approx(0.0, abs=1e-5)
        assert al["median_dt"] == pytest.approx(0.1)
        assert e["num_missing"] == 1
    table = ev.format_table({"m": e})
    assert "day" in table and "night" in table and " 66.7" in table


def test_evaluate_rejects_bad_lines(tmp_path):
    (tmp_path / "r.txt").write_text("a.jpg 1 0 0 0 0 0\n")
    with pytest.raises(ValueError, match="r.txt:1"):
        ev.evaluate(tmp_path / "r.txt", {"a.jpg": (np.array([1, 0, 0, 0]), np.zeros(3))})


def test_evaluate_cli(tmp_path, capsys):
    """``python -m localize.evaluate``: the recall table of a results file."""
    (tmp_path / "r.txt").write_text("a.jpg 1 0 0 0 0 0 0\nb.jpg 1 0 0 0 1 0 0\n")
    (tmp_path / "g.txt").write_text("a.jpg 1 0 0 0 0 0 0\nb.jpg 1 0 0 0 0 0 0\n")
    (tmp_path / "c.txt").write_text("a.jpg day\nb.jpg night\n")
    out = ev.cli(
        [
            "--results",
            str(tmp_path / "r.txt"),
            "--ground_truth",
            str(tmp_path / "g.txt"),
            "--conditions",
            str(tmp_path / "c.txt"),
        ]
    )
    assert out["conditions"]["day"]["recall"] == [1.0, 1.0, 1.0]
    assert out["conditions"]["night"]["recall"] == [0.0, 0.0, 1.0]
    assert "night" in capsys.readouterr().out
