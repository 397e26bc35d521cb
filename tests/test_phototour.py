"""Brown PhotoTour reader / synthetic writer / pair sampler."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from descriptors.data import phototour as pt
from descriptors.data import phototour_synth as ps


def _write_fixture(folder, n=300, seed=0):
    """Hand-written real-format folder: n random patches -> ceil(n/256) sheets, info.txt, m50."""
    rng = np.random.default_rng(seed)
    patches = rng.integers(0, 256, (n, 64, 64), dtype=np.uint8)
    ids = np.repeat(np.arange((n + 2) // 3), 3)[:n] + 100
    folder.mkdir(parents=True, exist_ok=True)
    n_sheets = (n + 255) // 256
    for f in range(n_sheets):
        sheet = np.zeros((1024, 1024), np.uint8)
        for g in range(256):
            i = f * 256 + g
            if i >= n:
                break
            y, x = 64 * (g // 16), 64 * (g % 16)
            sheet[y : y + 64, x : x + 64] = patches[i]
        assert cv2.imwrite(str(folder / f"patches{f:04d}.bmp"), sheet)
    with open(folder / "info.txt", "w") as fh:
        for i in ids:
            fh.write(f"{i} 0\n")
    pairs = [(0, 1), (3, 5), (256, 257), (0, 299), (10, 270), (298, 297)]
    pairs = [(a, b) for a, b in pairs if max(a, b) < n]
    with open(folder / "m50_3_3_0.txt", "w") as fh:
        for a, b in pairs:
            fh.write(f"{a} {ids[a]} 0 {b} {ids[b]} 0 0\n")
    want = np.array([[a, b, int(ids[a] == ids[b])] for a, b in pairs], np.int64)
    return patches, ids, want


def test_reader_exact_fixture(tmp_path):
    root = tmp_path / "liberty"
    patches, ids, want = _write_fixture(root)
    d = pt.read_phototour(root)
    assert d.patches.dtype == np.uint8 and d.patches.shape == (300, 64, 64)
    np.testing.assert_array_equal(d.patches, patches)
    assert d.point_ids.dtype == np.int64
    np.testing.assert_array_equal(d.point_ids, ids)
    np.testing.assert_array_equal(d.matches, want)
    assert d.pairs_file == "m50_3_3_0.txt"
    assert d.matches[:, 2].tolist() == [1, 1, 1, 0, 0, 1]
    # max_patches keeps the first n and the pairs inside them
    d2 = pt.read_phototour(root, max_patches=100)
    np.testing.assert_array_equal(d2.patches, patches[:100])
    assert d2.matches.tolist() == [[0, 1, 1], [3, 5, 1]]
    # cache round trip
    d3 = pt.read_phototour(root, cache=True)
    d4 = pt.read_phototour(root, cache=True)
    assert (root / "liberty.npz").is_file()
    np.testing.assert_array_equal(d3.patches, d4.patches)
    np.testing.assert_array_equal(d4.matches, want)


def test_reader_prefers_100k_file_and_no_pairs(tmp_path):
    root = tmp_path / "s"
    _write_fixture(root, n=20)
    (root / "m50_100000_100000_0.txt").write_text("0 100 0 1 100 0 0\n2 100 0 3 101 0 0\n")
    d = pt.read_phototour(root)
    assert d.pairs_file == "m50_100000_100000_0.txt"
    assert d.matches.tolist() == [[0, 1, 1], [2, 3, 0]]
    for f in root.glob("m50_*"):
        f.unlink()
    assert pt.read_phototour(root).matches.shape == (0, 3)


def test_reader_errors(tmp_path):
    with pytest.raises(pt.PhotoTourError, match="not found"):
        pt.read_phototour(tmp_path / "nope")
    root = tmp_path / "a"
    _write_fixture(root)
    # truncated bmp: message names the file
    sheet = root / "patches0001.bmp"
    data = sheet.read_bytes()
    sheet.write_bytes(data[: len(data) // 2])
    with pytest.raises(pt.PhotoTourError, match="patches0001.bmp"):
        pt.read_phototour(root)
    # wrong sheet size
    assert cv2.imwrite(str(sheet), np.zeros((512, 1024), np.uint8))
    with pytest.raises(pt.PhotoTourError, match=r"patches0001\.bmp.*1024x512"):
        pt.read_phototour(root)
    # fewer patches in the sheets than info.txt lines
    sheet.unlink()
    with pytest.raises(pt.PhotoTourError, match="info.txt lists 300"):
        pt.read_phototour(root)
    (root / "info.txt").unlink()
    with pytest.raises(pt.PhotoTourError, match="info.txt"):
        pt.read_phototour(root)


def test_to_32_matches_cv2_per_patch():
    rng = np.random.default_rng(1)
    p = rng.integers(0, 256, (600, 64, 64), dtype=np.uint8)
    t = pt.to_32(p)
    assert t.shape == (600, 1, 32, 32) and t.dtype == torch.float32
    ref = np.stack([cv2.resize(x, (32, 32), interpolation=cv2.INTER_AREA) for x in p])
    np.testing.assert_array_equal((t[:, 0].numpy() * 255).round().astype(np.uint8), ref)


def test_transform_keypoints_orientation_rotation():
    """A keypoint followed through a 90-degree rotation gives the same patch."""
    from descriptors.data import synth
    from descriptors.patches import extract_patches

    img = synth.load_photo("camera", gray=True)[100:356, 100:356]
    h, w = img.shape
    c = (w - 1) / 2.0
    # rotate 90 deg clockwise on screen about the centre
    H = np.array([[0, -1, 2 * c], [1, 0, 0], [0, 0, 1]], np.float64)
    view = synth.warp(img, H)
    xy = np.array([[100.0, 120.0], [140.0, 90.0]])
    size = np.array([8.0, 10.0])
    ori = np.array([0.3, -1.0])
    xy2, size2, ori2, scale, aniso = ps.transform_keypoints(H, xy, size, ori)
    np.testing.assert_allclose(scale, 1.0)
    np.testing.assert_allclose(aniso, 1.0)
    a = extract_patches(img, xy, size, ori, patch_size=64)[:, 0].numpy()
    b = extract_patches(view, xy2, size2, ori2, patch_size=64)[:, 0].numpy()
    for x, y in zip(a, b):
        assert np.corrcoef(x.ravel(), y.ravel())[0, 1] > 0.97


def test_synthetic_roundtrip(tmp_path):
    out = ps.write_synthetic_phototour(
        tmp_path / "synth",
        "test",
        n_points=40,
        views_per_point=(2, 3),
        n_pairs=60,
        seed=3,
        conf={"n_views": 4},
        photos=["camera", "coffee"],
        progress=False,
    )
    assert out == tmp_path / "synth" / "test"
    names = sorted(p.name for p in out.iterdir())
    assert "info.txt" in names and "interest.txt" in names and "m50_30_30_0.txt" in names
    sheet = cv2.imread(str(out / "patches0000.bmp"), cv2.IMREAD_UNCHANGED)
    assert sheet.shape == (1024, 1024) and sheet.dtype == np.uint8
    d = pt.read_phototour(out)
    n = len(d)
    assert 80 <= n <= 120 and d.n_points == 40
    assert len((out / "interest.txt").read_text().splitlines()) == n
    _, counts = np.unique(d.point_ids, return_counts=True)
    assert counts.min() >= 2 and counts.max() <= 3
    # point ids 0..P-1, patches of a point contiguous
    assert np.all(np.diff(d.point_ids) >= 0) and d.point_ids.max() == 39
    # unused cells of the last sheet are black
    assert sheet.reshape(16, 64, 16, 64).transpose(0, 2, 1, 3).reshape(256, -1)[n:].max() == 0
    m = d.matches
    assert m.shape == (60, 3) and m[:, 2].sum() == 30
    assert np.all((d.point_ids[m[:, 0]] == d.point_ids[m[:, 1]]) == m[:, 2].astype(bool))
    assert np.all(m[:, 0] != m[:, 1])

    def corr(i, j):
        a = d.patches[i].reshape(len(i), -1).astype(np.float64)
        b = d.patches[j].reshape(len(j), -1).astype(np.float64)
        a -= a.mean(1, keepdims=True)
        b -= b.mean(1, keepdims=True)
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-9)

    pos, neg = m[m[:, 2] == 1], m[m[:, 2] == 0]
    cp, cn = corr(pos[:, 0], pos[:, 1]), corr(neg[:, 0], neg[:, 1])
    assert np.median(cp) > 0.5 and np.median(cp) > np.median(cn) + 0.3

    # ensure_* writes both splits only when missing
    root = tmp_path / "synth"
    before = (out / "info.txt").stat().st_mtime_ns
    with pytest.raises(ValueError, match="disjoint"):
        ps.write_synthetic_phototour(root, "train", n_points=10, photos=["camera"])
    ps.write_synthetic_phototour(
        root,
        "train",
        n_points=10,
        n_pairs=10,
        photos=["brick"],
        views_per_point=(2, 3),
        conf={"n_views": 3},
        progress=False,
    )
    assert ps.ensure_synthetic_phototour(root) == root
    assert (out / "info.txt").stat().st_mtime_ns == before
    assert not list(root.glob(".*tmp*"))


def test_pair_sampler(tmp_path):
    root = tmp_path / "s"
    patches, ids, _ = _write_fixture(root, n=300)
    d = pt.read_phototour(root)
    s = pt.PatchPairSampler(d, batch_size=32, rng=0, n_batches=3)
    batches = list(s)
    assert len(batches) == 3
    for _ in range(20):
        ia, ip = s.sample_indices()
        assert len(np.unique(ids[ia])) == 32
        np.testing.assert_array_equal(ids[ia], ids[ip])
        assert np.all(ia != ip)
    a, p = batches[0]
    assert a.shape == p.shape == (32, 1, 32, 32) and a.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    full = pt.to_32(patches)
    ia, ip = pt.PatchPairSampler(d, 8, rng=5).sample_indices()
    a, p = next(pt.PatchPairSampler(d, 8, rng=5))
    assert torch.equal(a, full[torch.from_numpy(ia)])
    assert torch.equal(p, full[torch.from_numpy(ip)])
    # augmentation: same transform applied to a[i] and p[i]; values stay a permutation
    aa, pp = next(pt.PatchPairSampler(d, 8, rng=5, augment=True))
    assert torch.equal(aa.flatten(1).sort(1).values, a.flatten(1).sort(1).values)
    # night positives: anchors untouched, every positive darker (p_night=1), none with 0
    an, pn = next(pt.PatchPairSampler(d, 8, rng=5, p_night=1.0))
    assert torch.equal(an, a) and an.shape == pn.shape and pn.dtype == torch.float32
    assert (pn.mean((1, 2, 3)) < p.mean((1, 2, 3))).all()
    assert torch.equal(next(pt.PatchPairSampler(d, 8, rng=5, p_night=0.0))[1], p)


def test_pipeline_tiny(tmp_path, capsys):
    """pipelines.phototour on a tiny folder: sift via the registry, a missing checkpoint is
    reported, skipped and makes the exit status 2; results.json + PR/ROC PNGs written; m50
    FPR95 is evaluate_pairs' number and the fracking protocol is scaled down to the folder."""
    import json
    import re

    from descriptors.phototour_eval import evaluate_pairs
    from descriptors.registry import load
    from pipelines import phototour as pipe

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (40, 8, 8)).astype(np.float32)
    patches, ids = [], []
    for i in range(40):
        big = cv2.resize(base[i], (64, 64), interpolation=cv2.INTER_CUBIC)
        for _ in range(2):
            patches.append(np.clip(big + rng.normal(0, 10, big.shape), 0, 255).astype(np.uint8))
            ids.append(i)
    ids = np.asarray(ids)
    pairs = [(2 * i, 2 * i + 1) for i in range(40)] + [
        (2 * i, 2 * ((i + 7) % 40) + 1) for i in range(40)
    ]
    folder = tmp_path / "scene"
    folder.mkdir()
    pt.write_phototour_folder(folder, np.stack(patches), ids, np.asarray(pairs))
    assert (folder / "m50_40_40_0.txt").is_file()
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        pipe.main(
            [
                "--features",
                "sift",
                str(tmp_path / "missing.pt"),
                "--data",
                str(folder),
                "--out",
                str(out),
                "--cmc-negatives",
                "20",
                "--fracking-folds",
                "3",
            ]
        )
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert re.search("could not load.*missing.pt", captured.err)
    printed = captured.out
    assert "missing.pt" in printed and "FPR95" in printed and "CMC-AUC" in printed
    saved = json.loads((out / "results.json").read_text())
    sift = saved["results"]["sift"]
    ref = evaluate_pairs(load("sift"), pt.read_phototour(folder), n_neg=20, progress=False)
    assert sift["fpr95"] == sift["m50"]["fpr95"] == ref["fpr95"]
    assert sift["m50"]["pr_auc"] == ref["pr_auc"] and sift["m50"]["roc_auc"] > 0.8
    fr = sift["fracking"]
    # 40 points of 2 patches: 40 queries, 80 - 2 = 78 negatives each, 3 folds
    assert (fr["n_points"], fr["n_negatives"], fr["n_folds"]) == (40, 78, 3)
    assert saved["fracking_protocol"]["n_points"] == 40 and len(fr["pr_auc_folds"]) == 3
    assert 0 < fr["pr_auc"] <= 1 and fr["roc_auc"] > 0.8 and len(fr["cmc"]) == 79
    assert str(tmp_path / "missing.pt") in saved["errors"]
    assert (out / "pr.png").stat().st_size > 0 and (out / "roc.png").stat().st_size > 0
    # all features loadable: normal return
    res = pipe.main(
        [
            "--features",
            "sift",
            "--data",
            str(folder),
            "--out",
            str(out),
            "--fracking-folds",
            "1",
            "--no-plot",
        ]
    )
    assert res["errors"] == {} and res["results"]["sift"]["fpr95"] == ref["fpr95"]
    # missing and garbled folders: one-line errors
    for argv, pattern in (
        (["--features", "sift", "--data", str(tmp_path / "nope"), "--out", str(out)], "not found"),
        (["--features", "sift", "--data", str(folder), "--out", str(out)], r"info\.txt:1"),
    ):
        if pattern.startswith("info"):
            (folder / "info.txt").write_text("not numbers\n")
        with pytest.raises(SystemExit) as exc:
            pipe.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and re.search(pattern, err[-1]) and "Traceback" not in err[-1]
