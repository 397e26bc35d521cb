"""Pictures (localize.visualization, localize.run_pictures): hloc's drawing functions, SfM /
localization views and a run's pictures, on a tiny synthetic scene; every picture read back as
a PNG."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest

from localize import colmap, io, parsers, run_pictures
from localize import localize_sfm as loc
from localize import visualization as viz

F, W, H = 70.0, 80, 60  # focal length (px), image width, height
CAMERA = {"model": "SIMPLE_PINHOLE", "width": W, "height": H, "params": [F, W / 2, H / 2]}
DB = {"db/a.png": [0.0, 0, 0], "db/b.png": [-0.2, 0, 0], "db/c.png": [-0.4, 0, 0]}
# 3D points in front of every camera: a 4 x 3 grid at depth 3 to 4
XYZ = np.array(
    [
        [x, y, 3.0 + 0.1 * i]
        for i, (x, y) in enumerate((x, y) for x in (-0.6, -0.2, 0.2, 0.6) for y in (-0.4, 0.0, 0.4))
    ]
)


def _project(t: list[float], xyz: np.ndarray = XYZ) -> np.ndarray:
    """(N, 2) COLMAP pixel coordinates of world points seen by a camera at identity rotation."""
    c = xyz + np.asarray(t)
    return F * c[:, :2] / c[:, 2:] + [W / 2, H / 2]


def _png_shape(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None and img.std() > 0, path  # a real, non-blank picture
    return img.shape[:2]


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


@pytest.fixture
def scene(tmp_path):
    """Images, a 3-image reconstruction (12 points: track length 3 for the first 6, 2 for the
    rest; 2 keypoints per image without a 3D point) and its image folder."""
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in [*DB, "query/night/q.png", "query/day/f.png"]:
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / name), rng.integers(60, 200, (H, W, 3), np.uint8))
    rec = colmap.build_reference_reconstruction(
        [CAMERA],
        [{"name": n, "camera_idx": 0, "qvec_wxyz": [1, 0, 0, 0], "tvec": t} for n, t in DB.items()],
    )
    kpts = {}
    for image_id, (name, t) in enumerate(DB.items(), 1):
        xy = np.concatenate([_project(t), [[5.0, 5.0], [70.0, 50.0]]])  # + 2 lone keypoints
        kpts[name] = xy - 0.5  # hloc coordinates
        rec.images[image_id].points2D = pycolmap.Point2DList([pycolmap.Point2D(p) for p in xy])
    for i, p in enumerate(XYZ):
        track = pycolmap.Track()
        for image_id in (1, 2, 3) if i < 6 else (1, 2):
            track.add_element(image_id, i)
        rec.add_point3D(p, track, np.zeros(3, np.uint8))
    return rec, images, kpts


def test_plot_images_keypoints_matches_and_save(tmp_path):
    grey, rgb = np.full((H, W), 90, np.uint8), np.full((H, W, 3), 90, np.uint8)
    fig = viz.plot_images([grey, rgb], titles=None, dpi=20, pad=0)  # hloc's call, current fig
    viz.plot_keypoints([np.array([[10.0, 10.0]]), np.zeros((0, 2))], ps=30)
    k0, k1 = np.array([[20.0, 30.0], [60.0, 45.0]]), np.array([[20.0, 30.0], [60.0, 45.0]])
    viz.plot_matches(k0, k1, viz.cm_RdGn([1.0, 0.0]), lw=3, ps=0)
    viz.add_text(0, "caption")
    out = viz.save_plot(tmp_path / "sub" / "pair.png")
    assert out.is_file() and fig is viz._current[0]
    # two 4:3 images, 4.5 inches high, no gap: 12 x 4.5 inches at 20 dpi
    assert _png_shape(out) == (90, 240)
    img = _read_rgb(out).astype(int)
    s = 90 / H  # displayed pixels per image pixel
    mid_inlier = img[round(30.5 * s), 120]  # both lines are horizontal
    mid_outlier = img[round(45.5 * s), 120]
    assert mid_inlier[1] > 150 and mid_inlier[0] < 100  # green
    assert mid_outlier[0] > 150 and mid_outlier[1] < 100  # red
    y, x = round(10.5 * s), round(10.5 * s)
    assert img[y, x, 1] > 200 and img[y, x, 2] < 100  # lime keypoint on image 0
    # titles add a band above; an explicit figure is drawn on, not the current one
    fig2 = viz._new_figure([grey], titles=["t"], dpi=20)
    viz.plot_keypoints([np.array([[1.0, 2.0]])], fig=fig2)
    assert _png_shape(viz.save_plot(tmp_path / "t.png", fig=fig2)) == (
        round((4.5 + viz.TITLE_IN) * 20),
        round(4.5 * W / H * 20),
    )
    assert viz._current[0] is fig
    with pytest.raises(ValueError, match="differ in length"):
        viz.plot_matches(k0, k1[:1])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        viz.plot_images([np.zeros((4, 5, 2))])


@pytest.mark.parametrize("color_by", viz.SFM_COLORINGS)
def test_visualize_sfm_2d(scene, tmp_path, color_by):
    rec, images, _ = scene
    figs = viz.visualize_sfm_2d(rec, images, color_by=color_by, n=2, dpi=20)
    assert len(figs) == 2
    right = 0 if color_by == "visibility" else viz.CBAR_IN
    for k, fig in enumerate(figs):
        shape = _png_shape(viz.save_plot(tmp_path / f"{color_by}{k}.png", fig=fig))
        assert shape == (90, round((4.5 * W / H + right) * 20))
    text = [t.get_text() for t in figs[0].axes[0].texts]
    assert {
        "visibility": "visible: 12/14",
        "depth": "visible: 12/14",
        "track_length": "max/median track length: 3/2.5",
    }[color_by] in text
    assert any(t.startswith("db/") for t in text)  # the image name
    assert (figs[0].axes[0].get_legend() is not None) == (color_by != "depth")
    assert len(figs[0].axes) == (1 if color_by == "visibility" else 2)  # colour bar
    with pytest.raises(ValueError, match="color_by"):
        viz.visualize_sfm_2d(rec, images, color_by="colour")


def _log(inliers: list[bool] | None, rows: int = 12) -> dict:
    """hloc log of query/night/q.png: its keypoints i <-> 3D point i+1 through db a (and c)."""
    return {
        "db": [1, 3],
        "PnP_ret": None if inliers is None else {"inlier_mask": inliers},
        "keypoints_query": _project([-0.1, 0, 0])[:rows],
        "points3D_ids": list(range(1, rows + 1)),
        "points3D_xyz": None,
        "num_matches": rows,
        "keypoint_index_to_db": (
            list(range(rows)),
            [(i + 1, [0, 1] if i < 6 else [0]) for i in range(rows)],
        ),
    }


def test_visualize_loc_from_log(scene, tmp_path):
    rec, images, _ = scene
    inl = [True] * 9 + [False] * 3
    figs = viz.visualize_loc_from_log(images, "query/night/q.png", _log(inl), rec, dpi=20)
    assert len(figs) == 2  # top_k_db=2: db a, then db c
    for k, fig in enumerate(figs):
        assert _png_shape(viz.save_plot(tmp_path / f"l{k}.png", fig=fig)) == (
            90,
            round((2 * 4.5 * W / H + 5 / 72) * 20),
        )
    texts = [t.get_text() for ax in figs[0].axes for t in ax.texts]
    assert "inliers: 9/12" in texts and "query: query/night/q.png" in texts
    assert "db: db/a.png" in texts
    assert "inliers: 6/6" in [t.get_text() for t in figs[1].axes[0].texts]
    labels = [t.get_text() for t in figs[0].axes[1].get_legend().get_texts()]
    assert labels == ["PnP inlier (9)", "outlier (3)"]
    # a failed query: its correspondences in red, with the reason
    failed = {**_log(None), "reason": "PnP failed: no model"}
    fig = viz.visualize_loc_from_log(images, "query/night/q.png", failed, rec, top_k_db=1)[0]
    assert (
        fig.axes[0].texts[0].get_text()
        == "not localized: PnP failed: no model\n12 2D-3D through this db image"
    )
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["2D-3D, no pose (12)"]
    # nothing to draw between: the query alone
    fig = viz.visualize_loc_from_log(
        images, "query/day/f.png", {**_log(None, 0), "db": []}, rec, dpi=20
    )[0]
    assert len(fig.axes) == 1 and "no 2D-3D" in fig.axes[0].texts[0].get_text()
    assert _png_shape(viz.save_plot(tmp_path / "alone.png", fig=fig)) == (90, 120)
    with pytest.raises(ValueError, match="not an hloc localization log"):
        viz.visualize_loc_from_log(images, "q", {"success": True, "inliers": [1]}, rec)
    with pytest.raises(ValueError, match="needs the reconstruction"):
        viz.visualize_loc_from_log(images, "q", _log(inl))


def _localize(rec, images: Path, kpts: dict, tmp: Path) -> dict:
    """Features, matches and ``localize_sfm.main`` for a night query (one keypoint moved: a PnP
    outlier) and a day query with 3 matches only (fails)."""
    feats, matches = tmp / "feats.h5", tmp / "matches.h5"
    q = _project([-0.1, 0, 0]) - 0.5
    q[0] += 30
    kpts = {**kpts, "query/night/q.png": q, "query/day/f.png": q}
    for name, k in kpts.items():
        io.write_features(
            feats,
            name,
            {
                "keypoints": k.astype(np.float32),
                "descriptors": np.zeros((len(k), 4), np.float32),
                "image_size": np.array([W, H]),
            },
        )
    retrieval = {"query/night/q.png": ["db/a.png", "db/c.png"], "query/day/f.png": ["db/b.png"]}
    for qn, dbs in retrieval.items():
        for db in dbs:
            m0 = np.arange(12) if qn.endswith("q.png") else np.r_[0:3, [-1] * 9]
            io.write_matches(matches, qn, db, m0)
    parsers.write_pairs(
        tmp / "pairs.txt", [(qn, db) for qn, dbs in retrieval.items() for db in dbs]
    )
    cam = colmap.camera_from_dict(CAMERA)
    return loc.main(
        rec,
        [("query/night/q.png", cam), ("query/day/f.png", cam)],
        retrieval,
        feats,
        matches,
        tmp / "results.txt",
    )


def test_visualize_loc_and_pipeline_figures(scene, tmp_path):
    rec, images, kpts = scene
    logs = _localize(rec, images, kpts, tmp_path)
    assert logs["loc"]["query/night/q.png"]["success"]
    assert not logs["loc"]["query/day/f.png"]["success"]
    figs = viz.visualize_loc(tmp_path / "results.txt", images, rec, n=2, top_k_db=1, dpi=20)
    captions = sorted(f.axes[0].texts[0].get_text() for f in figs)
    assert captions[0] == "inliers: 11/12"
    assert captions[1].startswith("not localized: too few 2D-3D correspondences (3 < 8)")
    night = viz.visualize_loc(tmp_path / "results.txt", images, rec, prefix="query/night")
    assert len(night) == 2  # top_k_db=2: db a and db c

    gt = {"query/night/q.png": (np.array([1.0, 0, 0, 0]), np.array([-0.1, 0, 0]))}
    paths = run_pictures.save_pipeline_figures(
        images,
        logs["features"],
        logs["matches"],
        tmp_path / "pairs.txt",
        tmp_path / "viz",
        1,
        loc_logs=logs,
        gt_poses=gt,
        reconstruction=rec,
        dpi=20,
    )
    names = [p.name for p in paths]
    # best pair: the night query (12 matches, 11 from PnP inliers), one pair per query
    assert names == [
        "matches_000_query-night-q.png__db-a.png.png",
        "keypoints_000_query-night-q.png__db-a.png.png",
        "sfm_visibility.png",
        "sfm_track_length.png",
        "sfm_depth.png",
        "loc_night_000_query-night-q.png.png",
        "loc_failed_000_query-day-f.png.png",
    ]
    pair = (120, round((2 * 6 * W / H + 5 / 72) * 20))  # images 6 inches high
    for p in paths:
        shape = _png_shape(p)
        if not p.name.startswith("sfm"):
            assert shape == pair, p.name
    with pytest.raises(ValueError, match="n must be"):
        run_pictures.save_pipeline_figures(
            images, logs["features"], logs["matches"], tmp_path / "pairs.txt", tmp_path / "o", 0
        )
    with pytest.raises(ValueError, match="need the reconstruction"):
        run_pictures.save_pipeline_figures(
            images,
            logs["features"],
            logs["matches"],
            tmp_path / "pairs.txt",
            tmp_path / "o",
            1,
            loc_logs=logs,
        )
    with open(loc.hloc_logs_path(tmp_path / "results.txt"), "rb") as f:
        assert set(pickle.load(f)["loc"]) == set(logs["loc"])


def test_loc_caption_and_query_choice():
    entry = {"success": True, "num_inliers": 7, "num_2d3d": 9}
    q = np.array([1.0, 0.0, 0.0, 0.0])
    text = run_pictures._loc_caption(
        "query/day/q.jpg", entry, {"q.jpg": (q, np.zeros(3))}, {"query/day/q.jpg": (q, [1.0, 0, 0])}
    )
    assert text == "day query: 7 inliers / 9 2D-3D\nerror 1.000 m, 0.00 deg"
    assert (
        run_pictures._loc_caption(
            "query/night/q.jpg", {"success": False, "reason": "PnP failed"}, {}, None
        )
        == "night query NOT localized: PnP failed"
    )
    logs = {f"query/day/{i}.jpg": {"success": True, "num_inliers": i} for i in range(5)}
    logs |= {
        "query/night/n.jpg": {"success": True, "num_inliers": 3},
        "query/day/x.jpg": {"success": False, "reason": "PnP failed: x"},
        "query/day/y.jpg": {"success": False, "reason": "PnP failed: y"},
        "query/day/z.jpg": {"success": False, "reason": "no retrieval pairs"},
    }
    assert run_pictures._pick_queries(logs, 2) == [
        ("day", "query/day/4.jpg"),
        ("day", "query/day/0.jpg"),  # most and fewest inliers
        ("night", "query/night/n.jpg"),
        ("failed", "query/day/x.jpg"),
        ("failed", "query/day/z.jpg"),
    ]  # one per reason first
