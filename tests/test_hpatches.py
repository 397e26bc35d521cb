"""HPatches: reader on a hand-made fixture, synthetic writer, the three benchmark tasks end to
end, metric definitions, and full-image MMA on a tiny synthetic sequence. Budget: ~60 s."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from descriptors import hpatches_eval as E
from descriptors.data import hpatches as hp
from descriptors.data import hpatches_synth as hs
from pipelines import hpatches as ph

# ------------------------------------------------------------------------------ reader


def _fixture(root: Path, n: int = 7) -> dict:
    """2 sequences x 16 files x n patches in the real layout; returns the expected arrays."""
    rng = np.random.default_rng(123)
    expected = {}
    for seq in ("i_fixture", "v_fixture"):
        expected[seq] = {}
        (root / seq).mkdir(parents=True)
        for t in hp.TYPES:
            arr = rng.integers(0, 256, (n, 65, 65), dtype=np.uint8)
            arr[:, 0, 0] = np.arange(n)  # patch index stamped in the corner
            cv2.imwrite(str(root / seq / f"{t}.png"), arr.reshape(n * 65, 65))
            expected[seq][t] = arr
    (root / "README.txt").write_text("not a sequence")
    (root / "other").mkdir()
    return expected


def test_reader_exact_pixels(tmp_path):
    rel = tmp_path / "hpatches-release"
    exp = _fixture(rel)
    data = hp.read_hpatches(rel)
    assert sorted(data) == ["i_fixture", "v_fixture"]
    for seq in data:
        assert sorted(data[seq]) == sorted(hp.TYPES)
        for t in hp.TYPES:
            a = data[seq][t]
            assert a.shape == (7, 65, 65) and a.dtype == np.uint8
            for i in range(7):  # patch i = rows [65 i, 65 i + 65)
                np.testing.assert_array_equal(a[i], exp[seq][t][i])
                assert a[i, 0, 0] == i
    # parent folder works too, and a subset of sequences
    sub = hp.read_hpatches(tmp_path, sequences=["v_fixture"])
    assert list(sub) == ["v_fixture"]
    splits = hp.load_splits(root=rel)
    assert splits["full"]["test"] == ["i_fixture", "v_fixture"]
    assert splits["illum"]["test"] == ["i_fixture"] and splits["view"]["test"] == ["v_fixture"]
    js = tmp_path / "splits.json"
    js.write_text(json.dumps({"a": {"name": "a", "test": ["v_fixture"], "train": ["i_fixture"]}}))
    assert hp.load_splits(js)["a"]["train"] == ["i_fixture"]


def test_reader_errors(tmp_path):
    rel = tmp_path / "rel"
    _fixture(rel, n=3)
    bad = rel / "v_fixture" / "h3.png"
    cv2.imwrite(str(bad), np.zeros((65 * 3 + 10, 65), np.uint8))
    with pytest.raises(hp.HPatchesError, match=r"h3\.png.*multiple of 65"):
        hp.read_hpatches(rel)
    cv2.imwrite(str(bad), np.zeros((65 * 4, 65), np.uint8))
    with pytest.raises(hp.HPatchesError, match=r"h3\.png: 4 patches but ref\.png has 3"):
        hp.read_hpatches(rel)
    cv2.imwrite(str(bad), np.zeros((65 * 3, 64), np.uint8))
    with pytest.raises(hp.HPatchesError, match=r"h3\.png: width 64"):
        hp.read_hpatches(rel)
    bad.unlink()
    with pytest.raises(hp.HPatchesError, match=r"h3\.png: missing"):
        hp.read_hpatches(rel)


# ------------------------------------------------------------------------------ metrics


def test_retrieval_closed_form_matches_metrics_pr():
    """The closed-form retrieval AP equals descriptors.metrics.hpatches_ap (= the benchmark's
    metrics.pr) on every truncated pool, ties included."""
    from descriptors import metrics as M

    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = rng.integers(0, 6, 5).astype(float)
        neg = rng.integers(0, 6, 40).astype(float)
        sc, lab = np.concatenate([pos, neg]), np.r_[np.ones(5), np.zeros(40)]
        ks = [5, 12, 30, 45]
        ref = [M.hpatches_ap(sc[:k], lab[:k]) for k in ks]
        np.testing.assert_allclose(E.retrieval_aps(pos, neg, ks), ref, atol=1e-9)


class _RawExtractor:
    """Returns its (B, 1, 32, 32) input flattened: shows what the network would see."""

    name, dim, patch_size = "raw", 32 * 32, 32

    def __call__(self, x):
        assert x.shape[1:] == (1, 32, 32) and x.dtype == np.float32
        return x.reshape(len(x), -1)


def test_hpatches_input_is_inter_linear():
    rng = np.random.default_rng(2)
    p = rng.integers(0, 256, (5, 65, 65), dtype=np.uint8)
    data = {"i_x": {t: p for t in hp.TYPES}}
    x = E.describe_hpatches(data, _RawExtractor(), progress=False)["i_x"]["e3"].reshape(
        -1, 1, 32, 32
    )
    ref = np.stack([cv2.resize(q, (32, 32)) for q in p]).astype(np.float32) / 255.0
    np.testing.assert_array_equal(x[:, 0], ref)  # OpenCV default = INTER_LINEAR
    area = np.stack([cv2.resize(q, (32, 32), interpolation=cv2.INTER_AREA) for q in p])
    assert not np.array_equal((x[:, 0] * 255).round().astype(np.uint8), area)


def test_summarize_retrieval_per_pool_and_full_pool():
    retr = {
        "pool_sizes": [100, 500, 840],
        "map": {
            L: {100: 0.9 - d, 500: 0.8 - d, 840: 0.6 - d} for L, d in zip("eht", (0.0, 0.1, 0.2))
        },
    }
    s = E.summarize(None, None, retr)
    r = s["retrieval"]
    assert r["pool_size"] == 840
    assert r["e"] == pytest.approx(60) and r["t"] == pytest.approx(40)  # full pool, not mean
    assert s["retrieval_by_pool"]["100"]["h"] == pytest.approx(80)
    assert s["retrieval_pool_mean"]["e"] == pytest.approx(100 * (0.9 + 0.8 + 0.6) / 3)
    table = ph.format_table({"x": {"summary": s}})
    assert "full pool 840" in table and "pool 100" in table and "mean of pools" in table


def test_affine_sampler_matches_extract_patches():
    from descriptors.data.synth import load_photo, to_gray
    from descriptors.patches import extract_patches

    g = to_gray(hs._resize_long_side(load_photo("camera"), 160))
    xy = np.array([[60.0, 70.0], [90.5, 50.25], [80.0, 80.0]])
    size = np.array([4.0, 6.0, 9.0])
    ori = np.array([0.0, 0.7, -2.0])
    a = hs._to_uint8(extract_patches(g, xy, size, ori, patch_size=65)[:, 0])
    lafs = hs._ref_lafs(xy, size, ori, 12.0)
    b = hs._extract_affine_patches([g], [lafs])[0]
    assert np.abs(a.astype(int) - b).max() <= 1


# ------------------------------------------------------------------------------ synthetic set


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("hps") / "hpatches-synth"
    conf = hs.SynthConf(image_side=320)
    rel = hs.write_synthetic_hpatches(root, n_seq=4, n_patches=30, seed=0, conf=conf)
    return rel


def test_synthetic_layout(synth):
    root = synth.parent
    seqs = hp.list_sequences(synth)
    assert len(seqs) == 4 and {s[:2] for s in seqs} == {"i_", "v_"}
    for s in seqs:
        assert sorted(p.stem for p in (synth / s).glob("*.png")) == sorted(hp.TYPES)
        assert (root / "images" / s / "6.png").is_file() and (
            root / "images" / s / "H_1_6"
        ).is_file()
    data = hp.read_hpatches(synth)
    assert all(len(data[s]["ref"]) == 30 for s in seqs)
    # i_ sequences: identity geometry -> easy patches close to ref; tough ones further away
    i_seq = next(s for s in seqs if s.startswith("i_"))
    assert np.loadtxt(root / "images" / i_seq / "H_1_3") == pytest.approx(np.eye(3))
    meta = json.loads((root / "meta.json").read_text())
    ov = meta["overlap_median"]
    assert 0.8 < ov["e"] < 0.92 and 0.65 < ov["h"] < 0.8 and ov["t"] < ov["h"]
    tdir = root / "tasks"
    assert (tdir / "verif_pos_split-full.csv").read_text().splitlines()[
        0
    ] == "s1,t1,idx1,s2,t2,idx2"
    assert (tdir / "retr_queries_split-full.csv").read_text().splitlines()[0] == "s,idx"
    tasks = hp.read_tasks(tdir, "full")
    for a, b in zip(tasks["pos"], tasks["neg_intra"]):
        assert a[0] == a[3] and a[2] == a[5] and a[1] != a[4]  # positive: same seq, idx
        assert b[0] == b[3] and b[2] != b[5] and b[:3] == a[:3]  # intra: same seq, other idx
    assert not set(tasks["queries"]) & set(tasks["distractors"])
    assert hp.load_splits(root=synth)["view"]["test"] == [s for s in seqs if s.startswith("v_")]


def test_three_tasks_end_to_end(synth, tmp_path, capsys):
    feats = ["sift", "hardnet"]  # weights/hardnet.pt is shipped
    out_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        ph.main(
            [
                "--features",
                *feats,
                "no_such_recipe_weights.pt",
                "--data",
                str(synth),
                "--outputs",
                str(out_dir),
                "--pool-sizes",
                "20",
                "40",
                "20000",
            ]
        )
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "could not load no_such_recipe_weights.pt" in captured.err
    printed = captured.out
    assert "matching mAP" in printed and "Easy" in printed and "skipped no_such" in printed
    assert "retrieval mAP (full pool" in printed
    assert (out_dir / "results.json").is_file() and (out_dir / "hpatches.png").stat().st_size > 0
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["synthetic"] and saved["split"] == "full"
    assert "no_such_recipe_weights.pt" in saved["skipped"]
    for f in feats:
        s = saved["features"][f]["summary"]
        for task in ("verification", "verification_auc", "matching", "retrieval"):
            assert all(0 <= s[task][L] <= 100 for L in "eht"), (f, task, s[task])
        m, v, r = s["matching"], s["verification"], s["retrieval"]
        assert m["e"] >= m["t"] and m["e"] > 50, m  # chance ~ 1/30 = 3 %
        assert v["e"] >= v["t"] and s["verification_auc"]["e"] > 80, v
        assert r["e"] >= r["t"] and r["e"] > 50, r
        # mAP falls as the pool grows; the headline is the largest pool
        pools = sorted(s["retrieval_by_pool"], key=int)
        assert r["pool_size"] == int(pools[-1]) and int(pools[0]) == 20 and len(pools) == 3
        assert all(
            s["retrieval_by_pool"][a]["mean"] >= s["retrieval_by_pool"][b]["mean"]
            for a, b in zip(pools, pools[1:])
        )
        assert s["retrieval_pool_mean"]["mean"] >= r["mean"]
    # every feature loadable: normal return
    out = ph.main(
        [
            "--features",
            "sift",
            "--data",
            str(synth),
            "--outputs",
            str(out_dir),
            "--tasks",
            "matching",
        ]
    )
    assert out["skipped"] == {} and "matching" in out["features"]["sift"]["summary"]


def _exit2(capsys, pattern, fn, argv):
    with pytest.raises(SystemExit) as exc:
        fn(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and re.search(pattern, err[-1]), err


def test_bad_data_one_line_errors(synth, tmp_path, capsys):
    import shutil

    _exit2(capsys, "not found", ph.main, ["--features", "sift", "--data", str(tmp_path / "nope")])
    root = tmp_path / "copy"
    shutil.copytree(synth.parent, root)
    rel = root / synth.name
    seq = hp.list_sequences(rel)[0]
    tasks = root / "tasks" / "verif_pos_split-full.csv"
    lines = tasks.read_text().splitlines()
    lines[1] = f"{seq},0,99999,{seq},1,99999"
    tasks.write_text("\n".join(lines) + "\n")
    _exit2(
        capsys,
        r"verif_pos_split-full\.csv:2: .*missing patch",
        ph.main,
        ["--features", "sift", "--data", str(rel), "--outputs", str(tmp_path / "o")],
    )
    (rel / seq / "e2.png").write_bytes(b"garbage")
    _exit2(
        capsys,
        r"e2\.png: not a readable image",
        ph.main,
        ["--features", "sift", "--data", str(rel), "--outputs", str(tmp_path / "o")],
    )


def test_full_image_mma(tmp_path):
    from descriptors.data.synth import load_photo

    photo = hs._resize_long_side(load_photo("sklearn_china"), 320)
    imgs, Hs = hs.make_sequence_images(photo, "v", np.random.default_rng(3))
    hp.write_image_sequence(tmp_path / "v_tiny", imgs, Hs)
    r = ph.full_image_mma(tmp_path / "v_tiny", "sift", max_keypoints=400)
    assert len(r["pairs"]) == 5 and r["n_matches"] > 30
    assert r["detector_scale"] == [1.0] * 6  # full resolution by default
    # a random match lands within 5 px with probability ~ pi 25 / (320 * 213) < 0.2 %
    assert r["mma"][5.0] > 0.5 and r["mma"][1.0] <= r["mma"][5.0] <= r["mma"][10.0]
    assert r["homography_acc"][5.0] >= 0.6
    # optional downscaling: detection at half size, errors still in original pixels
    half = ph.full_image_mma(tmp_path / "v_tiny", "sift", max_keypoints=400, max_side=160)
    assert all(sc == pytest.approx(0.5) for sc in half["detector_scale"])
    assert half["mma"][10.0] > 0.3
