"""descriptors.metrics against hand-computed values; descriptors.phototour_eval and
descriptors.fracking_protocol on toy data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from descriptors import fracking_protocol as F
from descriptors import metrics as M
from descriptors import phototour_eval as PE
from descriptors.patches import describe_patches

# positives at 0.1, 0.2, 0.3, 0.5; negatives at 0.2, 0.4, 0.5, 0.7 (two pos/neg ties)
D = np.array([0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.5, 0.7])
Y = np.array([1, 1, 0, 1, 0, 1, 0, 0])


def test_fpr95_hand():
    # no ties: sorted labels 1 1 0 1 0 1 0 0; 95 % of 4 positives needs all 4 -> index 5;
    # negatives before it: 2 of 4
    d = np.array([0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert M.fpr95(d, Y) == pytest.approx(0.5)
    # 20 positives: 95 % = 19 positives; the 20th positive is last and does not count
    d = np.arange(30, dtype=np.float64)
    y = np.array([1] * 10 + [0, 0] + [1] * 9 + [0] * 8 + [1])
    # 19th positive at index 20; negatives before it: 2 of 10
    assert M.fpr95(d, y) == pytest.approx(2 / 10)
    # order of the input does not matter, only distances
    perm = np.random.default_rng(0).permutation(30)
    assert M.fpr95(d[perm], y[perm]) == pytest.approx(0.2)
    # perfect separation
    assert M.fpr95(np.array([0.1, 0.2, 0.9, 1.0]), np.array([1, 1, 0, 0])) == 0.0


def _hardnet_error_rate_at_95_recall(labels, scores):
    """Literal restatement of HardNet EvalMetrics.ErrorRateAt95Recall (FORMATS.md section 5)."""
    distances = 1.0 / (scores + 1e-8)
    labels = labels[np.argsort(distances)]
    threshold_index = np.argmax(np.cumsum(labels) >= 0.95 * np.sum(labels))
    fp = np.sum(labels[:threshold_index] == 0)
    tn = np.sum(labels[threshold_index:] == 0)
    return float(fp) / float(fp + tn)


def test_fpr95_matches_hardnet_roundtrip_float32_with_ties():
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.5).astype(np.int64)
    d = (rng.random(5000) + 0.4 * (1 - y)).astype(np.float32)
    d = np.round(d, 2).astype(np.float32)  # many ties
    ref = _hardnet_error_rate_at_95_recall(y, 1.0 / (d + 1e-8))
    assert M.fpr95(d, y) == ref


def test_pr_auc_roc_auc_hand_with_ties():
    # thresholds: 0.1 (tp1 fp0) 0.2 (tp2 fp1) 0.3 (tp3 fp1) 0.4 (tp3 fp2) 0.5 (tp4 fp3) 0.7
    ap = 0.25 * (1 + 2 / 3 + 3 / 4 + 4 / 7)
    assert M.pr_auc(D, Y) == pytest.approx(ap)
    # pos-neg pairs: 0.1 beats 4; 0.2 ties 1, beats 3; 0.3 beats 3; 0.5 ties 1, beats 1
    assert M.roc_auc(D, Y) == pytest.approx((4 + 3.5 + 3 + 1.5) / 16)
    # invariant to the input order (ties handled as groups)
    perm = np.array([7, 6, 5, 4, 3, 2, 1, 0])
    assert M.pr_auc(D[perm], Y[perm]) == pytest.approx(ap)
    assert M.roc_auc(D[perm], Y[perm]) == pytest.approx(0.75)
    prec, rec, thr = M.pr_curve(D, Y)
    np.testing.assert_allclose(thr, [0.1, 0.2, 0.3, 0.4, 0.5, 0.7])
    np.testing.assert_allclose(rec, [0.25, 0.5, 0.75, 0.75, 1, 1])
    np.testing.assert_allclose(prec, [1, 2 / 3, 3 / 4, 3 / 5, 4 / 7, 1 / 2])
    fpr, tpr, _ = M.roc_curve(D, Y)
    np.testing.assert_allclose(fpr, [0, 0, 0.25, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(tpr, [0, 0.25, 0.5, 0.75, 0.75, 1, 1])


def test_pr_roc_match_sklearn_random():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 3000)
    d = np.round(rng.random(3000) + 0.3 * (1 - y), 2)
    assert M.pr_auc(d, y) == pytest.approx(average_precision_score(y, -d))
    assert M.roc_auc(d, y) == pytest.approx(roc_auc_score(y, -d))


def test_cmc_hand():
    dp = np.array([0.1, 0.5, 0.3])
    dn = np.array([[0.2, 0.3, 0.4], [0.1, 0.5, 0.9], [0.05, 0.2, 0.3]])
    # ranks (negatives <= positive, ties against): 0, 2, 3
    np.testing.assert_allclose(M.cmc(dp, dn), [1 / 3, 1 / 3, 2 / 3, 1])


def test_cmc_1_vs_n():
    ids = np.repeat(np.arange(10), 2)  # 20 pairs of 10 points
    a = np.eye(10, dtype=np.float32)[ids]
    b = a.copy()
    # a same-point row drawn as a negative would tie with the positive (distance 0)
    c = M.cmc_1_vs_n(a, b, ids, n_neg=1000, rng=0)
    assert len(c) == 18 + 1  # capped at 20 - 2 negatives
    assert c[0] == 1.0
    const = np.ones((20, 4), np.float32)
    assert M.cmc_1_vs_n(const, const, ids, n_neg=5, rng=0)[0] == 0.0
    # noisy descriptors: deterministic for a seed
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = x + rng.normal(scale=0.8, size=x.shape).astype(np.float32)
    pid = np.arange(200)
    c1 = M.cmc_1_vs_n(x, y, pid, n_neg=50, rng=3)
    c2 = M.cmc_1_vs_n(x, y, pid, n_neg=50, rng=3)
    np.testing.assert_array_equal(c1, c2)
    assert 0 < c1[0] < 1 and np.all(np.diff(c1) >= 0) and c1[-1] == 1
    with pytest.raises(ValueError):
        M.cmc_1_vs_n(a[:2], b[:2], ids[:2])


def test_hpatches_ap_auc_hand():
    scores = np.array([0.9, 0.8, 0.8, 0.3])
    labels = np.array([1, 0, 1, 0])
    # numpos=3: one missing positive at -inf (never retrieved); stable sort keeps the tied
    # negative (index 1) before the positive (index 2): labels 1 0 1 0
    # tp 0 1 1 2 2, fp 0 0 1 1 2 -> recall tp/3, precision 1 1 1/2 2/3 1/2
    ap = (1 + 1) / 2 * (1 / 3) + (1 / 2 + 2 / 3) / 2 * (1 / 3)
    assert M.hpatches_ap(scores, labels, numpos=3) == pytest.approx(ap)
    assert ap == pytest.approx(19 / 36)
    # roc: fpr = fp / 2 (n counted before padding), tpr = tp / 3
    auc = (1 / 3 + 1 / 3) / 2 * 0.5 + (2 / 3 + 2 / 3) / 2 * 0.5
    assert M.hpatches_auc(scores, labels, numpos=3) == pytest.approx(auc)
    prec, rec, ap2 = M.hpatches_pr(scores, labels)
    np.testing.assert_allclose(rec, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(prec, [1, 1, 0.5, 2 / 3, 0.5])
    assert ap2 == pytest.approx(0.5 * 1 + 0.5 * (0.5 + 2 / 3) / 2)
    with pytest.raises(ValueError):
        M.hpatches_ap(scores, labels, numpos=1)


class _FlatExtractor:
    """Tiny inline extractor: mean-centred, L2-normalised 8x8 thumbnail."""

    name, dim, patch_size = "flat", 64, 32

    def __call__(self, x):
        import cv2

        x = np.asarray(x, np.float32)[:, 0]
        t = np.stack([cv2.resize(p, (8, 8), interpolation=cv2.INTER_AREA) for p in x])
        t = t.reshape(len(t), -1)
        t -= t.mean(1, keepdims=True)
        return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)


class _ConstExtractor(_FlatExtractor):
    def __call__(self, x):
        return np.ones((len(x), 4), np.float32) / 2


def _toy_data(n_points=60, seed=0):
    from descriptors.data.phototour import PhotoTourData

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n_points, 8, 8)).astype(np.float32)
    import cv2

    patches, ids = [], []
    for i in range(n_points):
        big = cv2.resize(base[i], (64, 64), interpolation=cv2.INTER_LINEAR)
        for _ in range(2):
            patches.append(np.clip(big + rng.normal(0, 20, big.shape), 0, 255).astype(np.uint8))
            ids.append(i)
    ids = np.asarray(ids, np.int64)
    pos = np.stack(
        [np.arange(0, 2 * n_points, 2), np.arange(1, 2 * n_points, 2), np.ones(n_points, np.int64)],
        1,
    )
    a = rng.integers(0, 2 * n_points, 3 * n_points)
    b = rng.integers(0, 2 * n_points, 3 * n_points)
    keep = ids[a] != ids[b]
    neg = np.stack([a[keep], b[keep], np.zeros(keep.sum(), np.int64)], 1)[:n_points]
    return PhotoTourData(np.stack(patches), ids, np.concatenate([pos, neg]), Path("toy"))


def test_evaluate_pairs_inline_extractor():
    data = _toy_data()
    r = PE.evaluate_pairs(_FlatExtractor(), data, batch=16, return_arrays=True, progress=False)
    assert set(["fpr95", "pr_auc", "roc_auc", "cmc1"]) <= set(r)
    assert r["fpr95"] < 0.1 and r["pr_auc"] > 0.9 and r["roc_auc"] > 0.9 and r["cmc1"] > 0.8
    assert r["n_pairs"] == 120 and r["n_pos"] == 60 and r["cmc_negatives"] == 59
    # consistent with the standalone functions on the returned arrays
    assert r["fpr95"] == M.fpr95(r["distances"], r["labels"])
    c = _ConstExtractor()
    r = PE.evaluate_pairs(c, data, progress=False)
    assert r["roc_auc"] == 0.5 and r["cmc1"] == 0.0 and not math.isnan(r["fpr95"])


# ----------------------------------------------------------------------------- fracking protocol
def test_pr_roc_auc_split_matches_pooled_definitions():
    dp, dn = D[Y == 1], D[Y == 0]
    ap, auc = M.pr_roc_auc_split(dp, dn)
    assert ap == pytest.approx(M.pr_auc(D, Y)) and auc == pytest.approx(M.roc_auc(D, Y))
    rng = np.random.default_rng(4)
    dp = np.round(rng.random(200), 2)
    dn = np.round(rng.random((200, 30)) + 0.2, 2)  # many ties between and within
    d = np.r_[dp, dn.ravel()]
    y = np.r_[np.ones(200, int), np.zeros(dn.size, int)]
    ap, auc = M.pr_roc_auc_split(dp, dn)
    assert ap == pytest.approx(M.pr_auc(d, y), abs=1e-12)
    assert auc == pytest.approx(M.roc_auc(d, y), abs=1e-12)


def test_cmc_auc_hand():
    # ranks 0, 2, 3 among K = 3 negatives: curve 1/3 1/3 2/3 1 -> mean 7/12 = 1 - (5/3) / 4
    c = M.cmc(
        np.array([0.1, 0.5, 0.3]), np.array([[0.2, 0.3, 0.4], [0.1, 0.5, 0.9], [0.05, 0.2, 0.3]])
    )
    assert M.cmc_auc(c) == pytest.approx(7 / 12)
    assert math.isnan(M.cmc_auc(np.array([])))


def test_sample_fracking_folds_protocol():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(300), rng.integers(1, 5, 300))  # 1..4 patches per point
    ids = ids[rng.permutation(len(ids))]  # patches of a point scattered
    n = len(ids)
    folds = F.sample_fracking_folds(ids, n_points=100, n_neg=50, n_folds=3, seed=7)
    assert len(folds) == 3
    for f in folds:
        assert f.anchor.shape == (100,) and f.negatives.shape == (100, 50)
        assert len(np.unique(ids[f.anchor])) == 100  # unique 3D points
        assert np.all(ids[f.anchor] == ids[f.positive]) and np.all(f.anchor != f.positive)
        assert np.all(ids[f.negatives] != ids[f.anchor][:, None])
        assert all(len(np.unique(r)) == 50 for r in f.negatives)  # distinct negatives
        assert f.negatives.min() >= 0 and f.negatives.max() < n
    assert not np.array_equal(folds[0].anchor, folds[1].anchor)
    # seeded; fold f does not depend on how many folds are drawn
    again = F.sample_fracking_folds(ids, n_points=100, n_neg=50, n_folds=1, seed=7)[0]
    np.testing.assert_array_equal(again.negatives, folds[0].negatives)
    other = F.sample_fracking_folds(ids, n_points=100, n_neg=50, n_folds=1, seed=8)[0]
    assert not np.array_equal(other.anchor, folds[0].anchor)
    # negatives are uniform over the other points' patches: every patch gets drawn
    f = F.sample_fracking_folds(ids, n_points=100, n_neg=200, n_folds=1, seed=1)[0]
    hits = np.bincount(f.negatives.ravel(), minlength=n)
    assert hits.min() > 0 and hits.max() < 6 * hits.mean()
    # scaled down: fewer eligible points / patches than asked
    multi = int((np.bincount(ids) >= 2).sum())
    small = F.sample_fracking_folds(ids, n_neg=10**6, n_folds=1)[0]
    assert small.anchor.shape == (multi,)
    assert small.negatives.shape[1] == n - np.bincount(ids).max()
    with pytest.raises(ValueError, match=">= 2 patches"):
        F.sample_fracking_folds(np.arange(10))
    with pytest.raises(ValueError, match="one 3D point"):
        F.sample_fracking_folds(np.zeros(10, int))


def test_fracking_scores_perfect_and_constant():
    ids = np.repeat(np.arange(40), 3)
    folds = F.sample_fracking_folds(ids, n_points=30, n_neg=20, n_folds=2, seed=0)
    onehot = np.eye(40, dtype=np.float32)[ids]
    r = F.fracking_scores(onehot, folds)
    assert r["pr_auc"] == 1.0 and r["roc_auc"] == 1.0 and r["cmc1"] == 1.0
    assert r["cmc_auc"] == 1.0 and r["n_points"] == 30 and r["n_negatives"] == 20
    assert r["n_folds"] == 2 and len(r["pr_auc_folds"]) == 2 and r["cmc"].shape == (21,)
    const = np.ones((len(ids), 4), np.float32)
    r = F.fracking_scores(const, folds)
    # all distances tie: one threshold, precision = P / (P + P K); the positive ranks last
    assert r["pr_auc"] == pytest.approx(1 / 21) and r["roc_auc"] == 0.5
    assert r["cmc1"] == 0.0 and r["cmc_auc"] == pytest.approx(1 / 21)


def test_evaluate_fracking_and_phototour_on_toy_data():
    data = _toy_data(n_points=60)
    ex = _FlatExtractor()
    fr = F.evaluate_fracking(ex, data, n_points=50, n_neg=30, n_folds=3, seed=2, progress=False)
    assert fr["n_points"] == 50 and fr["n_negatives"] == 30 and fr["n_folds"] == 3
    # the same numbers by hand from all descriptors and the same seeded folds
    desc = describe_patches(ex, data.patches, progress=False)
    folds = F.sample_fracking_folds(data.point_ids, 50, 30, 3, seed=2)
    aps = []
    for f in folds:
        dp = np.linalg.norm(desc[f.anchor] - desc[f.positive], axis=1)
        dn = np.linalg.norm(desc[f.negatives] - desc[f.anchor][:, None], axis=2)
        d = np.r_[dp, dn.ravel()]
        y = np.r_[np.ones(len(dp), int), np.zeros(dn.size, int)]
        aps.append(M.pr_auc(d, y))
    assert fr["pr_auc"] == pytest.approx(np.mean(aps), abs=1e-6)
    assert 0 < fr["pr_auc"] <= 1 and 0.5 < fr["roc_auc"] <= 1 and 0 < fr["cmc1"] <= 1
    both = PE.evaluate_phototour(
        ex,
        data,
        fracking_points=50,
        fracking_negatives=30,
        fracking_folds=3,
        seed=2,
        progress=False,
    )
    m50 = PE.evaluate_pairs(ex, data, progress=False)
    for key in ("fpr95", "pr_auc", "roc_auc", "cmc1"):
        assert both["m50"][key] == m50[key]
    for key in ("pr_auc", "roc_auc", "cmc_auc", "cmc1"):
        assert both["fracking"][key] == pytest.approx(fr[key], abs=1e-6)
    # noisy descriptors: the 1:K sets are far harder than a balanced 1:1 list of the same pairs
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(200), 2)
    centre = rng.normal(size=(200, 16))
    x = (centre[ids] + rng.normal(scale=0.5, size=(400, 16))).astype(np.float32)
    folds = F.sample_fracking_folds(ids, n_points=200, n_neg=100, n_folds=2, seed=0)
    r = F.fracking_scores(x, folds)
    f = folds[0]
    dp = np.linalg.norm(x[f.anchor] - x[f.positive], axis=1)
    dn1 = np.linalg.norm(x[f.anchor] - x[f.negatives[:, 0]], axis=1)
    balanced = M.pr_auc(np.r_[dp, dn1], np.r_[np.ones(200), np.zeros(200)])
    assert r["pr_auc"] < balanced - 0.05 and r["roc_auc"] > 0.9
