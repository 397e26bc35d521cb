"""revisitop reader (localize.data.roxford), evaluation (localize.revisitop_eval) and synthetic
writer (localize.data.roxford_synth)."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from localize import revisitop_eval as E
from localize.data import render
from localize.data import roxford as R
from localize.data import roxford_synth as S


# ------------------------------------------------------------------------------------------
# compute_map: expected values worked out by hand from the revisitop algorithm
# ------------------------------------------------------------------------------------------
def _hand_example():
    n_db = 8
    ranks = np.zeros((n_db, 4), np.int64)
    gnd = []
    # q0: ok {2, 5}, junk {7}. Ranked list 7 2 0 5 1 3 4 6 -> positives at 1, 3, junk at 0.
    # junk removal: both positives move up by one -> [0, 2].
    # AP = 1/2 * (1 + 1)/2 + 1/2 * (1/2 + 2/3)/2 = 1/2 + 7/24 = 19/24.
    # P@k (1-based positions 1, 3; denominator min(3, k)): P@1 = 1, P@5 = P@10 = 2/3.
    ranks[:, 0] = [7, 2, 0, 5, 1, 3, 4, 6]
    gnd.append({"ok": [2, 5], "junk": [7]})
    # q1: no positives -> NaN, dropped from both averages.
    ranks[:, 1] = np.arange(n_db)
    gnd.append({"ok": [], "junk": [0]})
    # q2: ok {0, 4, 6}, no 'junk' key at all. List 1 4 3 0 2 5 7 6 -> positions 1, 3, 7.
    # AP = 1/3 * [(0 + 1/2)/2 + (1/3 + 2/4)/2 + (2/7 + 3/8)/2] = 1/12 + 5/36 + 37/336
    #    = 335/1008. P@1: min(8,1)=1 -> 0; P@5: min(8,5)=5 -> 2/5; P@10: min(8,10)=8 -> 3/8.
    ranks[:, 2] = [1, 4, 3, 0, 2, 5, 7, 6]
    gnd.append({"ok": [0, 4, 6]})
    # q3: ok {1, 3}, junk {0, 2}. List 1 0 2 3 ... -> positives at 0, 3; junk at 1, 2.
    # the first positive precedes all junk (stays 0), the second jumps over two -> 1.
    # AP = 1; positions (1-based) 1, 2 -> P@1 = 1, P@5 = 2/min(2,5) = 1, P@10 = 1.
    ranks[:, 3] = [1, 0, 2, 3, 4, 5, 6, 7]
    gnd.append({"ok": [1, 3], "junk": [0, 2]})
    return ranks, gnd


def test_compute_map_hand_example():
    ranks, gnd = _hand_example()
    m, aps, mpr, prs = E.compute_map(ranks, gnd, kappas=[1, 5, 10])
    assert aps[0] == pytest.approx(19 / 24)
    assert np.isnan(aps[1]) and np.all(np.isnan(prs[1]))
    assert aps[2] == pytest.approx(335 / 1008)
    assert aps[3] == pytest.approx(1.0)
    np.testing.assert_allclose(prs[0], [1, 2 / 3, 2 / 3])
    np.testing.assert_allclose(prs[2], [0, 2 / 5, 3 / 8])
    np.testing.assert_allclose(prs[3], [1, 1, 1])
    # averages over the 3 queries that have positives
    assert m == pytest.approx((19 / 24 + 335 / 1008 + 1) / 3)  # = 2141/3024
    assert m == pytest.approx(2141 / 3024)
    np.testing.assert_allclose(mpr, [2 / 3, 31 / 45, 49 / 72])


def test_compute_map_edge_cases():
    # perfect ranking -> 1; all queries empty -> NaN; a query with junk only before positives
    ranks = np.arange(5)[:, None]
    m, aps, mpr, _ = E.compute_map(ranks, [{"ok": [0, 1], "junk": []}])
    assert m == pytest.approx(1.0) and np.allclose(mpr, 1)
    m, aps, mpr, _ = E.compute_map(ranks, [{"ok": []}])
    assert np.isnan(m)
    # single positive at 0-based position 4 with 2 junk ahead -> position 2: AP = (2/... )
    # p0 = 0/2, p1 = 1/3 -> AP = (0 + 1/3)/2 = 1/6
    m, _, _, prs = E.compute_map(ranks, [{"ok": [4], "junk": [1, 3]}], kappas=[1, 5])
    assert m == pytest.approx(1 / 6)
    np.testing.assert_allclose(prs[0], [0.0, 1 / 3])
    with pytest.raises(ValueError):
        E.compute_map(ranks, [{"ok": [0]}, {"ok": [1]}])


def test_protocols():
    gnd = [{"easy": [0], "hard": [3], "junk": [1]}, {"easy": [], "hard": [2], "junk": []}]
    ranks = np.stack([np.array([3, 1, 0, 2, 4]), np.array([2, 0, 1, 3, 4])], 1)
    res = E.evaluate_protocols(ranks, gnd)
    # Easy: q0 ok={0}, junk={1,3}: list 3 1 0 -> position 2 - 2 junk = 0 -> AP 1; q1 empty
    assert res["E"]["map"] == pytest.approx(1.0) and res["E"]["n_valid"] == 1
    # Medium: q0 ok={0,3}, junk={1}: positions 0 and 2-1=1 -> AP 1; q1 ok={2} at 0 -> 1
    assert res["M"]["map"] == pytest.approx(1.0) and res["M"]["n_valid"] == 2
    # Hard: q0 ok={3}, junk={1,0}: position 0 -> 1; q1 ok={2} -> 1
    assert res["H"]["map"] == pytest.approx(1.0)
    g = E.protocol_gnd(gnd, "H")
    assert sorted(g[0]["junk"].tolist()) == [0, 1]
    with pytest.raises(ValueError):
        E.protocol_gnd(gnd, "X")
    txt = E.format_results(res)
    assert "Medium" in txt and "100.00" in txt


# ------------------------------------------------------------------------------------------
# Reader on a tiny fixture in the real layout
# ------------------------------------------------------------------------------------------
def _write_fixture(root: Path, name: str = "roxford5k") -> dict:
    d = root / name
    (d / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(0)
    imlist = ["all_souls_000001", "all_souls_000002", "radcliffe_camera_000003"]
    qimlist = ["all_souls_000013"]
    for nm in imlist + qimlist:
        img = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
        cv2.imwrite(str(d / "jpg" / f"{nm}.jpg"), img)
    cfg = {
        "imlist": imlist,
        "qimlist": qimlist,
        "gnd": [
            {"bbx": np.array([2.5, 3.5, 9.5, 8.2]), "easy": np.array([0]), "hard": [2], "junk": [1]}
        ],
    }
    with open(d / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(cfg, f)
    return cfg


def test_reader_fixture(tmp_path):
    _write_fixture(tmp_path)
    for root in (tmp_path, tmp_path / "roxford5k"):  # parent or dataset dir
        data = R.read_revisitop(root, "roxford5k")
        assert data.n == 3 and data.nq == 1
        assert data.qimlist[0] not in data.imlist
        assert data.image_path(2).name == "radcliffe_camera_000003.jpg"
        assert data.query_path(0) == tmp_path / "roxford5k" / "jpg" / "all_souls_000013.jpg"
        g = data.gnd[0]
        assert g["easy"].tolist() == [0] and g["hard"].tolist() == [2] and g["junk"].tolist() == [1]
    full = data.query_image(0, crop=False)
    crop = data.query_image(0)
    # PIL semantics: round half to even -> x1=2, y1=4, x2=10, y2=8; right/bottom excluded
    assert crop.shape == (4, 8, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, full[4:8, 2:10])
    assert data.image(0).shape == (20, 30, 3)
    m = E.evaluate_protocols(np.array([[0], [2], [1]]), data.gnd)
    assert m["M"]["map"] == pytest.approx(1.0)


def test_crop_matches_pil():
    from PIL import Image

    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    for bbx in ([2.5, 3.5, 5.5, 12], [0, 0, 12, 10], [-2.4, 1.6, 4.5, 9.5], [3, 3, 3.2, 7]):
        ref = np.asarray(Image.fromarray(img).crop(tuple(bbx)))
        np.testing.assert_array_equal(R.crop_bbx(img, bbx), ref)


def test_reader_errors(tmp_path):
    with pytest.raises(R.RevisitopError, match="gnd_roxford5k.pkl"):
        R.read_revisitop(tmp_path, "roxford5k")
    _write_fixture(tmp_path)
    (tmp_path / "roxford5k" / "jpg" / "all_souls_000002.jpg").unlink()
    with pytest.raises(R.RevisitopError, match="all_souls_000002.jpg"):
        R.read_revisitop(tmp_path, "roxford5k")
    assert R.read_revisitop(tmp_path, "roxford5k", check_images=False).n == 3
    bad = tmp_path / "bad"
    bad.mkdir()
    with open(bad / "gnd_rparis6k.pkl", "wb") as f:
        pickle.dump(
            {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, 1], "easy": [5]}]}, f
        )
    with pytest.raises(R.RevisitopError, match="out of range"):
        R.read_revisitop(bad, "rparis6k", check_images=False)
    (bad / "gnd_rparis6k.pkl").write_bytes(b"not a pickle")
    with pytest.raises(R.RevisitopError, match="unpickle"):
        R.read_revisitop(bad, "rparis6k")


# ------------------------------------------------------------------------------------------
# Synthetic writer
# ------------------------------------------------------------------------------------------
def test_synthetic_writer_layout(tmp_path):
    d = S.ensure_synthetic_revisitop(
        tmp_path,
        "rparis6k",
        n_landmarks=8,
        views_per_landmark=3,
        n_distractors=3,
        n_queries=8,
        size=(160, 120),
    )
    assert d == tmp_path / "rparis6k-synth"
    data = R.read_revisitop(d, "rparis6k")  # the real reader, images checked
    assert data.n == 8 * 3 + 3 and data.nq == 8
    assert not set(data.qimlist) & set(data.imlist)
    lm = np.array(data.extra["synth"]["landmark"])
    assert len(set(lm[lm >= 0])) == 8
    # 3 walls per landmark, from 3 different photos, each landmark a different combination
    srcs = data.extra["synth"]["landmark_sources"]
    assert all(len(set(s)) == 3 for s in srcs)
    for i, g in enumerate(data.gnd):
        li = int(data.qimlist[i][len("landmark") : len("landmark") + 2])
        labelled = np.concatenate([g["easy"], g["hard"], g["junk"]])
        # labels only on views of the query's own landmark, each view exactly once
        assert set(labelled.tolist()) == set(np.nonzero(lm == li)[0].tolist())
        x1, y1, x2, y2 = g["bbx"]
        assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 120
        assert data.query_image(i).shape[:2] == (round(y2) - round(y1), round(x2) - round(x1))
    assert sum(len(g["easy"]) + len(g["hard"]) for g in data.gnd) > 0
    # second call reuses the set; other parameters regenerate it
    mtime = (d / "gnd_rparis6k.pkl").stat().st_mtime_ns
    S.ensure_synthetic_revisitop(
        tmp_path,
        "rparis6k",
        n_landmarks=8,
        views_per_landmark=3,
        n_distractors=3,
        n_queries=8,
        size=(160, 120),
    )
    assert (d / "gnd_rparis6k.pkl").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError):
        S.write_synthetic_revisitop(tmp_path / "x", "roxford5k", n_landmarks=3)


def test_label_view_geometry():
    rng = np.random.default_rng(1)
    tex = [S.procedural_texture(rng) for _ in range(3)]
    faces = S.make_structure(tex, rng)
    cam = S.sample_camera(
        faces, (320, 240), rng, azimuth_deg=(0, 0), distance=(1.5, 1.5), aim_jitter=0.0
    )
    reg = S.query_region(faces, cam, rng, partial_prob=0.0)
    assert reg is not None
    bbx, region = reg
    # the same camera sees everything -> easy by day, hard at night
    assert S.label_view(faces, cam, region, cam, False)[0] == "easy"
    assert S.label_view(faces, cam, region, cam, True)[0] == "hard"
    # a camera looking away sees nothing of it -> junk (same landmark, < 15 % overlap)
    R_away = cam.R @ np.diag([-1.0, 1.0, -1.0])
    away = render.Camera(K=cam.K, R=R_away, t=-R_away @ cam.center, width=320, height=240)
    lab, info = S.label_view(faces, cam, region, away, False)
    assert lab == "junk" and info["overlap"] < 0.15


def test_rendered_views_match_visibility_labels():
    """The synthetic images come from render.render: pixels where visible_samples says the
    landmark is seen show the walls (identical under two different random backgrounds), the
    rest is background (differs), and walls facing away are not drawn."""
    rng = np.random.default_rng(3)
    walls = S.make_structure([S.procedural_texture(rng) for _ in range(3)], rng)
    cam = S.sample_camera(
        walls, (240, 180), rng, azimuth_deg=(10, 10), distance=(1.6, 1.6), aim_jitter=0.0
    )
    a = S.render_view(walls, cam, np.random.default_rng(0)).astype(int)
    b = S.render_view(walls, cam, np.random.default_rng(1)).astype(int)
    X, uv, vis = S.visible_samples(walls, cam, 24)
    assert vis.mean() > 0.3
    px = np.round(uv[vis]).astype(int)
    px = px[(px[:, 0] > 1) & (px[:, 0] < 238) & (px[:, 1] > 1) & (px[:, 1] < 178)]
    same = np.abs(a - b).max(-1) <= 1
    assert same[px[:, 1], px[:, 0]].mean() > 0.97  # walls: independent of background
    assert same.mean() < 0.9  # the rest: background differs
    # from behind the structure every wall faces away: only the background is drawn
    R_back = cam.R @ np.diag([-1.0, 1.0, -1.0])
    C_back = 2 * S.structure_center(walls) - cam.center
    C_back[1] = cam.center[1]
    back = render.Camera(cam.K, R_back, -R_back @ C_back, 240, 180)
    assert not any(w.is_front_facing(back.center) for w in walls)
    assert not S.visible_samples(walls, back, 12)[2].any()
    np.testing.assert_array_equal(
        S.render_view(walls, back, np.random.default_rng(0)),
        S._background(back, np.random.default_rng(0)),
    )
