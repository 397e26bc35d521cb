"""Pictures of keypoints / matches / localization inliers (localize.visualization), read back as PNGs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from localize import io, visualization


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[..., ::-1]


def _grey(h: int, w: int, v: int = 90) -> np.ndarray:
    return np.full((h, w), v, np.uint8)


def _near(px: np.ndarray, color, tol: int = 40) -> bool:
    return bool(np.abs(px.astype(int) - np.array(color)).max() <= tol)


def test_plot_keypoints_size_and_dots(tmp_path):
    kpts = np.array([[10.0, 42.0], [50.0, 30.0]], np.float32)   # below the caption
    out = visualization.plot_keypoints(_grey(50, 64), kpts, tmp_path / "sub" / "kp.png")
    img = _read_rgb(out)
    assert img.shape == (50, 64, 3)
    for x, y in kpts.astype(int):
        assert _near(img[y, x], visualization.KEYPOINT)
    assert _near(img[45, 40], (90, 90, 90), 2)        # untouched background
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        visualization.plot_keypoints(_grey(40, 64), np.zeros((3, 3)), tmp_path / "bad.png")


def _two_matches():
    # image0 (60 x 80) left, image1 (70 x 90) right; horizontal lines at rows 25 and 50,
    # clear of the caption at the top left
    k0 = np.array([[20.0, 25.0], [30.0, 50.0]], np.float32)
    k1 = np.array([[40.0, 50.0], [60.0, 25.0]], np.float32)
    matches = np.array([[0, 1], [1, 0]])          # both lines horizontal
    return k0, k1, matches


def test_plot_matches_colours_by_correctness(tmp_path):
    k0, k1, matches = _two_matches()
    out = visualization.plot_matches(_grey(60, 80), _grey(70, 90), k0, k1, matches,
                           np.array([True, False]), tmp_path / "m.png")
    img = _read_rgb(out)
    assert img.shape == (70, 80 + visualization.GAP + 90, 3)   # side by side, tallest height
    dx = 80 + visualization.GAP
    # midpoints of the two lines: (20 + dx + 60) / 2 on row 25, (30 + dx + 40) / 2 on row 50
    good = img[25, (20 + dx + 60) // 2]
    bad = img[50, (30 + dx + 40) // 2]
    assert _near(good, visualization.CORRECT) and _near(bad, visualization.WRONG)
    assert np.abs(good.astype(int) - bad.astype(int)).max() > 100
    # without ground truth: both lines in the one match colour
    img = _read_rgb(visualization.plot_matches(_grey(60, 80), _grey(70, 90), k0, k1, matches, None,
                                     tmp_path / "m1.png"))
    assert _near(img[25, (20 + dx + 60) // 2], visualization.MATCH)
    assert _near(img[50, (30 + dx + 40) // 2], visualization.MATCH)
    with pytest.raises(ValueError, match="out of range"):
        visualization.plot_matches(_grey(60, 80), _grey(70, 90), k0, k1, np.array([[0, 5]]), None,
                         tmp_path / "m2.png")


def test_plot_localization_inliers(tmp_path):
    k0, k1, matches = _two_matches()
    inliers = np.array([False, True])              # query keypoint 1 is the inlier
    img = _read_rgb(visualization.plot_localization(_grey(60, 80), k0, inliers, _grey(70, 90), k1,
                                          matches, tmp_path / "loc.png"))
    dx = 80 + visualization.GAP
    assert _near(img[25, (20 + dx + 60) // 2], visualization.WRONG)
    assert _near(img[50, (30 + dx + 40) // 2], visualization.CORRECT)


def test_save_pipeline_figures(tmp_path):
    images = tmp_path / "images"
    (images / "db").mkdir(parents=True)
    names = ["db/a.jpg", "db/b.jpg", "q.jpg"]
    for nm in names:
        cv2.imwrite(str(images / nm), np.full((60, 80, 3), 100, np.uint8))
    k0, k1, matches = _two_matches()
    feats = tmp_path / "feats.h5"
    for nm, k in zip(names, (k0, k1, k0)):
        io.write_features(feats, nm, {"keypoints": k, "descriptors": np.zeros((len(k), 4), np.float32),
                                      "image_size": np.array([80, 60])})
    m0 = np.array([1, 0])                          # matches0: kp i of name0 -> m0[i] of name1
    io.write_matches(tmp_path / "m.h5", "db/a.jpg", "db/b.jpg", m0)
    io.write_matches(tmp_path / "m.h5", "q.jpg", "db/b.jpg", m0)
    pairs = io.write_pairs(tmp_path / "pairs.txt", [("db/a.jpg", "db/b.jpg")])
    logs = {"loc": {"q.jpg": {"success": True, "reason": "ok", "num_inliers": 1, "num_2d3d": 2,
                              "top_db": "db/b.jpg", "matches_per_db": {"db/b.jpg": 2},
                              "inliers": [1]}}}
    paths = visualization.save_pipeline_figures(images, feats, tmp_path / "m.h5", pairs, tmp_path / "out",
                                      5, loc_logs=logs)
    assert [p.name for p in paths] == ["matches_000_db-a.jpg__db-b.jpg.png", "loc_000_q.jpg.png"]
    loc = _read_rgb(paths[1])
    dx = 80 + visualization.GAP
    assert loc.shape == (60, 80 + visualization.GAP + 80, 3)
    assert _near(loc[25, (20 + dx + 60) // 2], visualization.WRONG)
    assert _near(loc[50, (30 + dx + 40) // 2], visualization.CORRECT)
    with pytest.raises(ValueError, match="n must be"):
        visualization.save_pipeline_figures(images, feats, tmp_path / "m.h5", pairs, tmp_path / "o", 0)


def test_localization_caption_pose_error():
    entry = {"success": True, "num_inliers": 7, "num_2d3d": 9}
    q = np.array([1.0, 0.0, 0.0, 0.0])
    est = {"q.jpg": (q, np.zeros(3))}
    text = visualization._loc_caption("query/day/q.jpg", entry, est, {"query/day/q.jpg": (q, [1.0, 0, 0])})
    assert "7 inliers / 9 2D-3D" in text and "error 1.00 m 0.0 deg" in text
    assert visualization._loc_caption("q.jpg", {"success": False, "reason": "PnP failed"}, {}, None) == \
        "q.jpg: PnP failed"
