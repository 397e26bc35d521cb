"""localize.pairs_from_*: exhaustive (hloc order), covisibility (COLMAP model), retrieval, hloc entry points."""

from __future__ import annotations

import h5py
import numpy as np
import pycolmap
import pytest

from localize import (
    io,
    pairs_from_covisibility,
    pairs_from_exhaustive,
    pairs_from_poses,
    pairs_from_retrieval,
    parsers,
)
from localize.colmap import camera_from_dict
from localize.geometry import qt_to_rigid


def test_exhaustive(tmp_path):
    assert pairs_from_exhaustive.exhaustive(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pairs_from_exhaustive.exhaustive(["q", "a"], ["a", "b"]) == [
        ("q", "a"),
        ("q", "b"),
        ("a", "b"),
    ]
    assert pairs_from_exhaustive.exhaustive([]) == []
    # hloc's entry point: names from a list file or a features file, refs from either
    (tmp_path / "list.txt").write_text("# comment\nb.jpg 640 480\n\na.jpg\n")
    out = pairs_from_exhaustive.main(tmp_path / "p.txt", image_list=tmp_path / "list.txt")
    assert parsers.parse_pairs(out) == [("b.jpg", "a.jpg")]
    feats = tmp_path / "f.h5"
    for n in ("x.jpg", "y.jpg"):
        io.write_features(feats, n, {"keypoints": np.zeros((0, 2))})
    out = pairs_from_exhaustive.main(tmp_path / "p.txt", ["q.jpg"], ref_features=feats)
    assert parsers.parse_pairs(out) == [("q.jpg", "x.jpg"), ("q.jpg", "y.jpg")]
    assert (
        pairs_from_exhaustive.main(tmp_path / "p2.txt", features=feats).read_text() == "x.jpg y.jpg"
    )
    with pytest.raises(ValueError, match="image_list or features"):
        pairs_from_exhaustive.main(tmp_path / "p.txt")


def test_covisibility(tmp_path):
    rec = pycolmap.Reconstruction()
    cam = camera_from_dict(
        {"model": "SIMPLE_PINHOLE", "width": 100, "height": 100, "params": [100, 50, 50]}
    )
    cam.camera_id = 1
    rec.add_camera_with_trivial_rig(cam)
    names = ["db/0.jpg", "db/1.jpg", "db/2.jpg", "db/3.jpg"]
    for j, n in enumerate(names):
        pts = pycolmap.Point2DList([pycolmap.Point2D(np.array([float(i), 1.0])) for i in range(10)])
        rec.add_image_with_trivial_frame(
            pycolmap.Image(name=n, points2D=pts, camera_id=1, image_id=j + 1),
            qt_to_rigid([1, 0, 0, 0], [0, 0, j]),
        )
    # image 1 shares 4 points with 2, 1 with 3; image 4 sees nothing
    for k in range(4):
        t = pycolmap.Track()
        t.add_element(1, k)
        t.add_element(2, k)
        if k == 0:
            t.add_element(3, k)
        rec.add_point3D(np.array([0.0, 0.0, 5.0]), t)
    model = tmp_path / "sfm"
    model.mkdir()
    rec.write_binary(str(model))
    got = pairs_from_covisibility.from_covisibility(model, 1)
    assert got == [("db/0.jpg", "db/1.jpg"), ("db/1.jpg", "db/0.jpg"), ("db/2.jpg", "db/0.jpg")]
    got = pairs_from_covisibility.from_covisibility(model, 5)
    assert ("db/0.jpg", "db/2.jpg") in got and len(got) == 6
    out = pairs_from_covisibility.main(model, tmp_path / "p.txt", 1)
    assert parsers.parse_pairs(out) == pairs_from_covisibility.from_covisibility(model, 1)
    with pytest.raises(Exception, match="nomodel"):
        pairs_from_covisibility.from_covisibility(tmp_path / "nomodel", 1)


def _write_global(path, descs):
    with h5py.File(path, "w") as f:  # hloc layout (float16 as with as_half)
        for n, d in descs.items():
            f.create_group(n).create_dataset("global_descriptor", data=np.asarray(d, np.float16))


def test_retrieval(tmp_path):
    g = tmp_path / "global.h5"
    _write_global(
        g,
        {
            "query/day/q1.jpg": [1, 0, 0],
            "query/night/q2.jpg": [0, 1, 0],
            "db/1.jpg": [0.9, 0.1, 0],
            "db/2.jpg": [0.5, 0.5, 0],
            "db/3.jpg": [-1, 0, 0],
            "db/4.jpg": [0, 0.8, 0.2],
        },
    )
    got = pairs_from_retrieval.from_retrieval(g, 2, query_prefix="query", db_prefix="db")
    assert got == [
        ("query/day/q1.jpg", "db/1.jpg"),
        ("query/day/q1.jpg", "db/2.jpg"),
        ("query/night/q2.jpg", "db/4.jpg"),
        ("query/night/q2.jpg", "db/2.jpg"),
    ]
    # all names as database: self-pairs masked, negative scores (db/3 for q1) never returned
    got = pairs_from_retrieval.from_retrieval(g, 10, query_prefix="query")
    q1 = [b for a, b in got if a == "query/day/q1.jpg"]
    assert "query/day/q1.jpg" not in q1 and "db/3.jpg" not in q1 and q1[0] == "db/1.jpg"
    out = pairs_from_retrieval.main(
        g, tmp_path / "pairs.txt", 1, query_prefix="query", db_prefix="db"
    )
    assert out.read_text() == "query/day/q1.jpg db/1.jpg\nquery/night/q2.jpg db/4.jpg"
    with pytest.raises(ValueError, match="zzz"):
        pairs_from_retrieval.from_retrieval(g, 2, query_prefix="zzz")
    # hloc's positional order (descriptors, output, num_matched) and defaults (no prefix: all)
    out = pairs_from_retrieval.main(
        g, tmp_path / "hloc.txt", 1, query_prefix="query", db_prefix="db"
    )
    assert out.read_text() == "query/day/q1.jpg db/1.jpg\nquery/night/q2.jpg db/4.jpg"
    every = parsers.parse_pairs(pairs_from_retrieval.main(g, tmp_path / "all.txt", 1))
    assert len(every) == 6 and all(a != b for a, b in every)


def test_from_poses_equals_brute_force():
    """hloc's pairs_from_poses rule, written independently: per image the ``k`` nearest camera
    centres (ties by image order) among the kept images whose viewing directions differ by at
    most ``max_angle``; on random poses with duplicated centres (exact distance ties)."""
    from localize import colmap, geometry

    rng = np.random.default_rng(0)
    n = 40
    cam = {"model": "SIMPLE_PINHOLE", "width": 64, "height": 48, "params": [50.0, 32.0, 24.0]}
    ims = []
    for i in range(n):
        q = rng.normal(size=4)
        t = np.round(rng.normal(size=3), 1) if i % 5 else np.zeros(3)
        ims.append(
            {
                "name": f"db/{i:02d}.jpg",
                "camera_idx": 0,
                "qvec_wxyz": q / np.linalg.norm(q),
                "tvec": t,
            }
        )
    rec = colmap.build_reference_reconstruction([cam], ims)
    info = {}
    for im in rec.images.values():
        pose = im.cam_from_world()
        info[im.name] = (geometry.camera_center(pose), geometry.viewing_direction(pose))
    names = sorted(info)
    for k, angle, keep in [(5, 60.0, None), (3, 90.0, names[::3]), (50, 180.0, None)]:
        kept = names if keep is None else keep
        expect = []
        for a in kept:
            ca, va = info[a]
            cands = [
                b
                for b in kept
                if b != a
                and np.degrees(np.arccos(np.clip(float(np.dot(va, info[b][1])), -1.0, 1.0)))
                <= angle
            ]
            cands.sort(key=lambda b: float(np.linalg.norm(info[b][0] - ca)))  # stable
            expect += [(a, b) for b in cands[:k]]
        got = pairs_from_poses.from_poses(rec, k, max_angle_deg=angle, names=keep)
        assert sorted(got) == sorted(expect)
        assert len(got) > 0
