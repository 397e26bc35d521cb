"""localize.nearest_neighbor == the FAISS reference matchers == brute force, ties, empty and
1-descriptor sets, batched partners, the blocked top-2."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import reference_matchers as ref
from localize import nearest_neighbor as nnm


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _reference(d0, d1, ratio, dist, mutual):
    """Brute force on the full similarity matrix, the documented rule, written independently."""
    d0 = np.asarray(d0, np.float32)
    d1 = np.asarray(d1, np.float32)
    n0, n1 = len(d0), len(d1)
    if n0 == 0 or n1 == 0:
        return np.full(n0, -1), np.zeros(n0)
    # one element-wise float32 product + sum per row: duplicate descriptors give bitwise equal
    # similarities (a BLAS GEMM may round tail tiles differently)
    S = np.stack([(row[None, :] * d1).sum(1) for row in d0])

    def one_way(S):
        out = np.full(len(S), -1)
        for i, row in enumerate(S):
            j = int(np.argmax(row))
            best = row[j]
            second = np.max(np.delete(row, j)) if len(row) > 1 else None
            if second is not None and second == best:
                continue  # ambiguous
            e1 = max(2 - 2 * float(best), 0.0)
            e2 = np.inf if second is None else max(2 - 2 * float(second), 0.0)
            if ratio is not None and not e1 < ratio**2 * e2:
                continue
            if dist is not None and not e1 <= dist**2:
                continue
            out[i] = j
        return out

    m0 = one_way(S)
    if mutual:
        m1 = one_way(S.T)
        m0 = np.array([j if j >= 0 and m1[j] == i else -1 for i, j in enumerate(m0)])
    scores = np.array([(S[i, j] + 1) / 2 if j >= 0 else 0.0 for i, j in enumerate(m0)])
    return m0, scores


OPTIONS = [
    (0.8, None, True),
    (0.9, None, False),
    (None, None, True),
    (None, None, False),
    (None, 0.9, True),
    (0.95, 1.0, True),
    (0.99, 0.5, False),
]


def _random_with_ties(rng, n0=200, n1=300, dim=32):
    """d1 with duplicate rows; d0 = noisy copies (varying noise: near the thresholds too),
    exact copies (duplicated in d0, spread over row blocks), random rows."""
    d1 = _unit(rng.normal(size=(n1, dim)))
    d1[n1 - 10 :] = d1[:10]  # 10 duplicated database rows
    k = n0 // 2
    noisy = d1[rng.permutation(n1)[:k]] + rng.uniform(0.02, 0.3, (k, 1)) * rng.normal(size=(k, dim))
    exact = d1[rng.integers(0, n1, 30)]
    d0 = np.concatenate(
        [_unit(noisy), exact, exact[:10], _unit(rng.normal(size=(n0 - k - 40, dim)))]
    )
    return d0[rng.permutation(n0)].astype(np.float32), d1


@pytest.mark.parametrize("ratio,dist,mutual", OPTIONS)
def test_matcher_equals_reference_random(ratio, dist, mutual, monkeypatch):
    # small CPU blocks: 45 rows of d0 per product block -> 5 blocks, the last one partial
    monkeypatch.setattr(nnm, "CPU_BLOCK_ENTRIES", 45 * 300)
    rng = np.random.default_rng(0)
    d0, d1 = _random_with_ties(rng)
    m, s = nnm.match_descriptors(d0, d1, ratio, dist, mutual, device="cpu")
    mr, sr = _reference(d0, d1, ratio, dist, mutual)
    assert m.dtype == np.int32 and m.shape == (200,) and s.dtype == np.float32
    for backend in ref.KNN:  # the FAISS matchers of the first versions
        mo, so = ref.match_image_reference(d0, [d1], ratio, dist, mutual, backend)[0]
        np.testing.assert_array_equal(m, mo)
        np.testing.assert_allclose(s, so, atol=1e-6)  # float rounding of the product differs
        np.testing.assert_array_equal(mo, mr)
    np.testing.assert_array_equal(m, mr)
    np.testing.assert_allclose(s, sr, atol=1e-5)
    assert (m >= 0).sum() > 20


def test_exact_ties_on_exactly_representable_vectors(monkeypatch):
    """Entries in {-1, 0, 1}/2: every product is exact, so ties are exact whatever the GEMM
    order; many rows have tied nearest neighbours (within and across row blocks)."""
    monkeypatch.setattr(nnm, "CPU_BLOCK_ENTRIES", 33 * 70)
    rng = np.random.default_rng(3)
    d0 = rng.integers(-1, 2, (90, 6)).astype(np.float32) / 2
    d1 = rng.integers(-1, 2, (70, 6)).astype(np.float32) / 2
    n_ties = 0
    for ratio, dist, mutual in OPTIONS + [(1.0, None, False)]:
        m, s = nnm.match_descriptors(d0, d1, ratio, dist, mutual, device="cpu")
        mr, sr = _reference(d0, d1, ratio, dist, mutual)
        np.testing.assert_array_equal(m, mr)
        np.testing.assert_allclose(s, sr, atol=1e-6)
        n_ties += int(((d0 @ d1.T) == (d0 @ d1.T).max(1, keepdims=True)).sum(1).max() > 1)
    assert n_ties > 0


def test_exact_ties_and_small_inputs():
    e = np.eye(4, dtype=np.float32)
    d1 = np.stack([e[0], e[0], e[1], e[2]])  # duplicate row -> ambiguous NN for e0
    d0 = np.stack([e[0], e[1], e[2], e[3], _unit([[1, 1, 0, 0]])[0]])
    for ratio, dist, mutual in [
        (0.8, None, True),
        (None, None, True),
        (None, None, False),
        (None, 0.5, False),
        (0.99, None, False),
    ]:
        m, s = nnm.match_descriptors(d0, d1, ratio, dist, mutual, device="cpu")
        mr, sr = _reference(d0, d1, ratio, dist, mutual)
        np.testing.assert_array_equal(m, mr)
        np.testing.assert_allclose(s, sr, atol=1e-6)
        assert m[0] == -1 and m[3] == -1 and m[1] == 2 and m[2] == 3
    # one descriptor on either side / both: no second neighbour -> the ratio test passes there
    rng = np.random.default_rng(2)
    many = _unit(rng.normal(size=(7, 4)))
    for a, b in [(e[:1], e[:1]), (many[:1], many), (many, many[3:4]), (many[2:3] * 0.9, many[2:3])]:
        for ratio, dist, mutual in OPTIONS:
            m, s = nnm.match_descriptors(a, b, ratio, dist, mutual, device="cpu")
            mr, sr = _reference(a, b, ratio, dist, mutual)
            np.testing.assert_array_equal(m, mr)
            np.testing.assert_allclose(s, sr, atol=1e-6)
    assert nnm.match_descriptors(e[:1], e[:1], 0.8, None, True, device="cpu")[0].tolist() == [0]
    # empty on either / both sides
    for a, b in [
        (np.zeros((0, 4)), d1),
        (d0, np.zeros((0, 4))),
        (np.zeros((0, 4)), np.zeros((0, 4))),
    ]:
        m, s = nnm.match_descriptors(a, b, 0.8, None, True, device="cpu")
        assert m.shape == (len(a),) and s.shape == (len(a),) and m.dtype == np.int32
        assert (m == -1).all() and (s == 0).all()


def test_match_image_batched_equals_per_pair(monkeypatch):
    monkeypatch.setattr(nnm, "CPU_BLOCK_ENTRIES", 64 * 100)
    monkeypatch.setitem(nnm.MAX_PARTNER_ROWS, "cpu", 400)  # forces two products
    rng = np.random.default_rng(4)
    d0, big = _random_with_ties(rng, 150, 300)
    partners = [
        big,
        np.zeros((0, 32), np.float32),
        big[:1],
        big[5:7],
        big[::-1][:120],
        _unit(rng.normal(size=(50, 32))),
        big[:10],
    ]
    for ratio, dist, mutual in OPTIONS[:3]:
        res = nnm.match_image(d0, partners, ratio, dist, mutual, device="cpu")
        assert len(res) == len(partners)
        for p, (m, s) in zip(partners, res):
            mr, sr = _reference(d0, p, ratio, dist, mutual)
            np.testing.assert_array_equal(m, mr)
            np.testing.assert_allclose(s, sr, atol=1e-5)
    assert nnm.match_image(np.zeros((0, 32)), partners, device="cpu")[0][0].shape == (0,)
    assert nnm.match_image(d0, [], device="cpu") == []


def test_top2_both_matches_topk():
    """The blocked top-2 equals torch.topk on the full matrix (values up to the rounding of
    the block products; no ties in random data, so indices exactly). With ``mutual`` a row's
    index is kept at least wherever it can be mutual (it is its best column's best row), and
    the columns' values are exact there."""
    import torch

    rng = np.random.default_rng(5)
    q = torch.from_numpy(_unit(rng.normal(size=(130, 16))))
    db = torch.from_numpy(_unit(rng.normal(size=(90, 16))))
    segs = [(0, 40), (40, 41), (41, 90)]
    sim = q @ db.T
    vc, ic = sim.topk(2, dim=0)
    for mutual in (False, True):
        (rv1, ri1, rv2), cols = nnm.top2_both(q, db, [0, 40, 41, 90], mutual, block_entries=32 * 90)
        n_cand = 0
        used = torch.zeros(90, dtype=torch.bool)  # columns some row can be mutual with
        for j, (s, e) in enumerate(segs):
            v, i = sim[:, s:e].topk(min(2, e - s), dim=1)
            assert torch.allclose(rv1[:, j], v[:, 0], atol=1e-6)
            cand = ic[0][s + i[:, 0]] == torch.arange(130)  # row's best column's best row
            keep = ri1[:, j] >= 0 if mutual else torch.ones(130, dtype=torch.bool)
            assert bool(keep[cand].all())  # -1 only where the row cannot be mutual
            assert torch.equal(ri1[keep, j], i[keep, 0])
            n_cand += int(cand.sum())
            used[s + i[cand, 0]] = True
            if e - s > 1:
                assert torch.allclose(rv2[keep, j], v[keep, 1], atol=1e-6)
            else:
                assert bool((rv2[keep, j] == -np.inf).all())
        if not mutual:
            assert cols is None
            continue
        assert n_cand > 20
        cv1, cv2 = cols
        assert torch.allclose(cv1, vc[0], atol=1e-6)
        assert torch.allclose(cv2[used], vc[1][used], atol=1e-6)
