"""Vocabularies / VLAD / ASMK (localize.vlad), global descriptors, search, re-ranking and the
revisitop retrieval pipeline (localize.retrieve)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from localize import h5, io, retrieve, vlad


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------
# Search
# ------------------------------------------------------------------------------------------
def test_search_chunked_equals_unchunked():
    rng = np.random.default_rng(0)
    db = _unit(rng.normal(size=(600, 32)))
    q = _unit(rng.normal(size=(75, 32)))
    s_all, i_all = retrieve.search(db, q, k=20, chunk=100000)
    s_ch, i_ch = retrieve.search(db, q, k=20, chunk=16)  # 5 chunks, the last one partial
    np.testing.assert_array_equal(i_ch, i_all)
    np.testing.assert_allclose(s_ch, s_all, rtol=0, atol=1e-5)
    # and both equal the brute-force answer
    ref = np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(i_all, ref)
    # k > N is clamped; IVF returns valid, mostly identical neighbours
    s, i = retrieve.search(db[:5], q, k=10)
    assert i.shape == (75, 5) and set(i[0]) == set(range(5))
    s_ivf, i_ivf = retrieve.search(db, q, k=5, index="ivf", nlist=8, nprobe=8, chunk=7)
    assert (i_ivf[:, 0] == i_all[:, 0]).mean() == 1.0  # nprobe = nlist: exhaustive


def test_ranks_from_topk_and_qe():
    idx = np.array([[3, 1], [0, -1]])
    r = retrieve.ranks_from_topk(idx, 5)
    assert r.shape == (5, 2)
    assert r[:, 0].tolist() == [3, 1, 0, 2, 4] and r[:, 1].tolist() == [0, 1, 2, 3, 4]
    rng = np.random.default_rng(1)
    db = _unit(rng.normal(size=(10, 8)))
    q = db[:1] * 0.5 + db[1:2] * 0.5
    s, i = retrieve.search(db, q, 3)
    q2 = retrieve.query_expansion(db, q, i, s, n=2, alpha=0.0)
    expect = q[0] + db[i[0, 0]] + db[i[0, 1]]
    np.testing.assert_allclose(q2[0], expect / np.linalg.norm(expect), atol=1e-6)
    q3 = retrieve.query_expansion(db, q, i, s, n=2, alpha=3.0)
    assert np.isclose(np.linalg.norm(q3[0]), 1.0)


# ------------------------------------------------------------------------------------------
# Vocabulary / VLAD / ASMK
# ------------------------------------------------------------------------------------------
def test_vlad_and_vocabulary(tmp_path):
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(8, 16)))
    train = _unit(np.repeat(centres, 50, 0) + 0.05 * rng.normal(size=(400, 16)))
    big = vlad.train_vocabulary(train, 16, seed=0, niter=10)
    assert big.shape == (16, 16) and big.dtype == np.float32
    # each true centre is recovered by some word (over-complete vocabulary: no merged clusters)
    assert (centres @ big.T).max(1).min() > 0.95
    np.testing.assert_array_equal(big, vlad.train_vocabulary(train, 16, seed=0, niter=10))
    voc = vlad.train_vocabulary(train, 8, seed=0, niter=10)
    p = vlad.save_vocabulary(tmp_path / "v.npz", voc, {"num_words": 8})
    v = vlad.load_vocabulary(p)
    np.testing.assert_array_equal(v.centroids, voc)
    assert v.conf == {"num_words": 8}
    np.save(tmp_path / "v.npy", voc)
    assert vlad.load_vocabulary(tmp_path / "v.npy").k == 8
    x = train[:30]
    g = vlad.vlad(x, voc)
    assert g.shape == (8 * 16,) and np.isclose(np.linalg.norm(g), 1.0)
    g3 = vlad.vlad(x, voc, multiple_assignment=3, ma_sigma=0.3)
    assert np.isclose(np.linalg.norm(g3), 1.0) and not np.allclose(g3, g)
    assert not np.any(vlad.vlad(np.zeros((0, 16), np.float32), voc))
    # VLAD of hard assignment without normalisations = sum of residuals per nearest word
    raw = vlad.vlad(x, voc, intra_norm=False, power=1.0).reshape(8, 16)
    a = np.argmin(((x[:, None] - voc[None]) ** 2).sum(-1), 1)
    ref = np.zeros((8, 16))
    np.add.at(ref, a, x - voc[a])
    np.testing.assert_allclose(raw, ref / np.linalg.norm(ref), atol=1e-5)
    with pytest.raises(ValueError, match="vocabulary"):
        vlad.vlad(np.ones((3, 7), np.float32), voc)
    with pytest.raises(ValueError):
        vlad.train_vocabulary(train[:4], 8)
    # ASMK: an image is most similar to itself / its noisy copy
    imgs = [
        _unit(
            centres[rng.choice(8, 3, replace=False)].repeat(10, 0) + 0.2 * rng.normal(size=(30, 16))
        )
        for _ in range(6)
    ]
    enc = [vlad.asmk_aggregate(d, voc) for d in imgs]
    q = [vlad.asmk_aggregate(_unit(d + 0.02 * rng.normal(size=d.shape)), voc) for d in imgs]
    s, i = retrieve.AsmkIndex(enc).search(q, 3, chunk=4)
    assert i[:, 0].tolist() == list(range(6))


def _write_features(path: Path, names, rng, dim=16, n=40):
    with h5.H5Writer(path) as w:
        for nm in names:
            io.write_features(
                w.file,
                nm,
                {
                    "keypoints": rng.uniform(0, 100, (n, 2)).astype(np.float32),
                    "descriptors": _unit(rng.normal(size=(n, dim))),
                    "scores": np.ones(n, np.float32),
                    "image_size": np.array([100, 80]),
                },
            )


def test_global_file_is_hloc_layout_for_pairs(tmp_path):
    from localize import pairs_from_retrieval

    rng = np.random.default_rng(0)
    names = ["db/1.jpg", "db/2.jpg", "db/3.jpg", "query/day/q1.jpg"]
    feats = tmp_path / "feats.h5"
    _write_features(feats, names, rng)
    # make the query a near copy of db/2
    d2 = io.get_descriptors(feats, "db/2.jpg")
    io.write_features(
        feats,
        "query/day/q1.jpg",
        {
            "keypoints": np.zeros((40, 2), np.float32),
            "descriptors": _unit(d2 + 0.01 * rng.normal(size=d2.shape)),
            "image_size": np.array([100, 80]),
        },
    )
    vfeats = tmp_path / "vocab_feats.h5"
    _write_features(vfeats, [f"v{i}.jpg" for i in range(5)], rng)
    vocab = retrieve.learn_vocabulary_from_features(
        vfeats, {"num_words": 4}, seed=0, out_path=tmp_path / "vocab.npz"
    )
    assert vocab.k == 4
    out = retrieve.main(
        feats, tmp_path / "vocab.npz", tmp_path / "global.h5", conf={"num_words": 4}
    )
    with h5py.File(out, "r") as f:
        gd = f["db"]["1.jpg"]["global_descriptor"]
        assert gd.shape == (4 * 16,) and gd.dtype == np.float32
        assert f["query/day/q1.jpg/image_size"][()].tolist() == [100, 80]
    assert sorted(io.list_h5_names(out)) == sorted(names)
    prs = pairs_from_retrieval.from_retrieval(out, 1, query_prefix="query", db_prefix="db")
    assert prs == [("query/day/q1.jpg", "db/2.jpg")]
    g = retrieve.global_descriptors(feats, vocab, names=["db/1.jpg"], conf={"num_words": 4})
    _, arr = io.read_global_descriptors(out, ["db/1.jpg"])
    np.testing.assert_allclose(g["db/1.jpg"], arr[0], atol=1e-6)


def test_spatial_rerank_promotes_geometric_match():
    rng = np.random.default_rng(0)
    kq = rng.uniform(0, 300, (80, 2)).astype(np.float32)
    dq = _unit(rng.normal(size=(80, 32)))
    H = np.array([[0.9, 0.1, 20], [-0.05, 1.1, 5], [1e-4, 0, 1]])
    p = np.c_[kq, np.ones(80)] @ H.T
    k_good = (p[:, :2] / p[:, 2:]).astype(np.float32)
    assert retrieve.count_inliers(kq, k_good, np.arange(80)) == 80
    # candidate 0: unrelated image; candidate 1: same descriptors, homography-warped keypoints
    # (shuffled); candidate 2: same descriptors, random keypoints (no geometry)
    perm = rng.permutation(80)
    db = {
        0: (rng.uniform(0, 300, (80, 2)).astype(np.float32), _unit(rng.normal(size=(80, 32)))),
        1: (k_good[perm], dq[perm]),
        2: (rng.uniform(0, 300, (80, 2)).astype(np.float32), dq.copy()),
    }
    idx = np.array([[0, 2, 1]])
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    new_idx, new_s, inl = retrieve.spatial_rerank(
        [(kq, dq)], db.__getitem__, idx, scores, {"top": 3, "min_inliers": 12}
    )
    assert new_idx[0].tolist() == [1, 0, 2]
    assert inl[0, 0] >= 70 and inl[0, 1:].max() < 12


# ------------------------------------------------------------------------------------------
# End to end on a SMALL synthetic revisitop set
# ------------------------------------------------------------------------------------------
def test_pipeline_small_synthetic(tmp_path):
    feats = "hardnet"  # shipped weights (weights/hardnet.pt is committed)
    _check_small_synthetic(tmp_path, feats)


def _check_small_synthetic(tmp_path: Path, feats: str) -> None:
    from pipelines import retrieval

    # tiny on purpose (CPU budget): learned descriptors cost ~80 MFLOP per patch on CPU
    argv = [
        "--dataset",
        "roxford5k",
        "--features",
        feats,
        "--data_root",
        str(tmp_path / "d"),
        "--outputs",
        str(tmp_path / "o"),
        "--n_landmarks",
        "8",
        "--views_per_landmark",
        "3",
        "--n_distractors",
        "4",
        "--n_queries",
        "8",
        "--image_size",
        "224",
        "168",
        "--vocab_images",
        "6",
        "--num_words",
        "16",
        "--max_keypoints",
        "150",
        "--qe",
        "--rerank",
        "--rerank_top",
        "3",
    ]
    report = retrieval.main(argv)
    assert report["synthetic"] and report["n_db"] == 28 and report["n_queries"] == 8
    res = report["results"]
    m_base, m_rand = res["base"]["M"]["mAP"], res["random"]["M"]["mAP"]
    # the random ranking is computed on the same ground truth: a learned / SIFT VLAD must be
    # far above it
    assert m_rand < 40
    assert m_base > m_rand + 25, (m_base, m_rand)
    assert res["qe"]["M"]["mAP"] > m_rand + 25 and res["rerank"]["M"]["mAP"] > m_rand + 25
    out = Path(report["outputs"])
    saved = json.loads((out / "results.json").read_text())
    assert (out / "results-vlad-k16-rerank-qe.json").is_file()
    assert saved["results"]["base"]["M"]["mAP"] == m_base
    # vocabulary learned on the separate TRAIN-photo renders, not the database
    assert "TRAIN" in saved["vocabulary_set"]
    gfile = out / "global-feats-vlad-k16.h5"
    assert len(io.list_h5_names(gfile)) == 28
