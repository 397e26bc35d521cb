"""localize.match: every backend == the previous matcher == brute force; hloc confs, hloc-layout files,
sharding."""
from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from localize import h5, io, match


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
            if ratio is not None and not e1 < ratio ** 2 * e2:
                continue
            if dist is not None and not e1 <= dist ** 2:
                continue
            out[i] = j
        return out

    m0 = one_way(S)
    if mutual:
        m1 = one_way(S.T)
        m0 = np.array([j if j >= 0 and m1[j] == i else -1 for i, j in enumerate(m0)])
    scores = np.array([(S[i, j] + 1) / 2 if j >= 0 else 0.0 for i, j in enumerate(m0)])
    return m0, scores


OPTIONS = [(0.8, None, True), (0.9, None, False), (None, None, True), (None, None, False),
           (None, 0.9, True), (0.95, 1.0, True), (0.99, 0.5, False)]


def _random_with_ties(rng, n0=200, n1=300, dim=32):
    """d1 with duplicate rows; d0 = noisy copies (varying noise: near the thresholds too),
    exact copies (duplicated in d0, spread over row blocks), random rows."""
    d1 = _unit(rng.normal(size=(n1, dim)))
    d1[n1 - 10:] = d1[:10]                                  # 10 duplicated database rows
    k = n0 // 2
    noisy = d1[rng.permutation(n1)[:k]] + rng.uniform(0.02, 0.3, (k, 1)) * rng.normal(size=(k, dim))
    exact = d1[rng.integers(0, n1, 30)]
    d0 = np.concatenate([_unit(noisy), exact, exact[:10], _unit(rng.normal(size=(n0 - k - 40, dim)))])
    return d0[rng.permutation(n0)].astype(np.float32), d1


@pytest.mark.parametrize("backend", match.BACKENDS)
@pytest.mark.parametrize("ratio,dist,mutual", OPTIONS)
def test_backends_equal_reference_random(backend, ratio, dist, mutual, monkeypatch):
    # small CPU blocks: 45 rows of d0 per product block -> 5 blocks, the last one partial
    monkeypatch.setattr(match, "CPU_BLOCK_ENTRIES", 45 * 300)
    rng = np.random.default_rng(0)
    d0, d1 = _random_with_ties(rng)
    m, s = match.match_descriptors(d0, d1, ratio, dist, mutual, use_gpu=False, backend=backend)
    mo, so = match.match_reference(d0, d1, ratio, dist, mutual)     # the previous matcher
    mr, sr = _reference(d0, d1, ratio, dist, mutual)
    assert m.dtype == np.int32 and m.shape == (200,) and s.dtype == np.float32
    np.testing.assert_array_equal(m, mo)
    np.testing.assert_allclose(s, so, atol=1e-6)   # float rounding of the product differs
    np.testing.assert_array_equal(m, mr)
    np.testing.assert_allclose(s, sr, atol=1e-5)
    assert (m >= 0).sum() > 20


@pytest.mark.parametrize("backend", match.BACKENDS)
def test_exact_ties_on_exactly_representable_vectors(backend, monkeypatch):
    """Entries in {-1, 0, 1}/2: every product is exact, so ties are exact whatever the GEMM
    order; many rows have tied nearest neighbours (within and across row blocks)."""
    monkeypatch.setattr(match, "CPU_BLOCK_ENTRIES", 33 * 70)
    rng = np.random.default_rng(3)
    d0 = rng.integers(-1, 2, (90, 6)).astype(np.float32) / 2
    d1 = rng.integers(-1, 2, (70, 6)).astype(np.float32) / 2
    n_ties = 0
    for ratio, dist, mutual in OPTIONS + [(1.0, None, False)]:
        m, s = match.match_descriptors(d0, d1, ratio, dist, mutual, use_gpu=False, backend=backend)
        mr, sr = _reference(d0, d1, ratio, dist, mutual)
        np.testing.assert_array_equal(m, mr)
        np.testing.assert_allclose(s, sr, atol=1e-6)
        n_ties += int(((d0 @ d1.T) == (d0 @ d1.T).max(1, keepdims=True)).sum(1).max() > 1)
    assert n_ties > 0


@pytest.mark.parametrize("backend", match.BACKENDS)
def test_exact_ties_and_small_inputs(backend):
    e = np.eye(4, dtype=np.float32)
    d1 = np.stack([e[0], e[0], e[1], e[2]])      # duplicate row -> ambiguous NN for e0
    d0 = np.stack([e[0], e[1], e[2], e[3], _unit([[1, 1, 0, 0]])[0]])
    for ratio, dist, mutual in [(0.8, None, True), (None, None, True), (None, None, False),
                                (None, 0.5, False), (0.99, None, False)]:
        m, s = match.match_descriptors(d0, d1, ratio, dist, mutual, use_gpu=False, backend=backend)
        mr, sr = _reference(d0, d1, ratio, dist, mutual)
        np.testing.assert_array_equal(m, mr)
        np.testing.assert_allclose(s, sr, atol=1e-6)
        assert m[0] == -1 and m[3] == -1 and m[1] == 2 and m[2] == 3
    # one descriptor on either side / both: no second neighbour -> the ratio test passes there
    rng = np.random.default_rng(2)
    many = _unit(rng.normal(size=(7, 4)))
    for a, b in [(e[:1], e[:1]), (many[:1], many), (many, many[3:4]), (many[2:3] * 0.9, many[2:3])]:
        for ratio, dist, mutual in OPTIONS:
            m, s = match.match_descriptors(a, b, ratio, dist, mutual, use_gpu=False, backend=backend)
            mr, sr = _reference(a, b, ratio, dist, mutual)
            np.testing.assert_array_equal(m, mr)
            np.testing.assert_allclose(s, sr, atol=1e-6)
    assert match.match_descriptors(e[:1], e[:1], 0.8, None, True, use_gpu=False,
                                   backend=backend)[0].tolist() == [0]
    # empty on either / both sides
    for a, b in [(np.zeros((0, 4)), d1), (d0, np.zeros((0, 4))), (np.zeros((0, 4)), np.zeros((0, 4)))]:
        m, s = match.match_descriptors(a, b, 0.8, None, True, use_gpu=False, backend=backend)
        assert m.shape == (len(a),) and s.shape == (len(a),) and m.dtype == np.int32
        assert (m == -1).all() and (s == 0).all()


@pytest.mark.parametrize("backend", match.BACKENDS)
def test_match_image_batched_equals_per_pair(backend, monkeypatch):
    monkeypatch.setattr(match, "CPU_BLOCK_ENTRIES", 64 * 100)
    monkeypatch.setitem(match.MAX_PARTNER_ROWS, "cpu", 400)   # forces two products
    rng = np.random.default_rng(4)
    d0, big = _random_with_ties(rng, 150, 300)
    partners = [big, np.zeros((0, 32), np.float32), big[:1], big[5:7], big[::-1][:120],
                _unit(rng.normal(size=(50, 32))), big[:10]]
    for ratio, dist, mutual in OPTIONS[:3]:
        res = match.match_image(d0, partners, ratio, dist, mutual, device="cpu", backend=backend)
        assert len(res) == len(partners)
        for p, (m, s) in zip(partners, res):
            mr, sr = _reference(d0, p, ratio, dist, mutual)
            np.testing.assert_array_equal(m, mr)
            np.testing.assert_allclose(s, sr, atol=1e-5)
    assert match.match_image(np.zeros((0, 32)), partners, backend=backend, device="cpu")[0][0].shape == (0,)
    assert match.match_image(d0, [], backend=backend, device="cpu") == []
    with pytest.raises(ValueError, match="backend"):
        match.match_image(d0, partners, backend="nope")


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
        (rv1, ri1, rv2), cols = match.top2_both(q, db, [0, 40, 41, 90], mutual,
                                                block_entries=32 * 90)
        n_cand = 0
        used = torch.zeros(90, dtype=torch.bool)    # columns some row can be mutual with
        for j, (s, e) in enumerate(segs):
            v, i = sim[:, s:e].topk(min(2, e - s), dim=1)
            assert torch.allclose(rv1[:, j], v[:, 0], atol=1e-6)
            cand = ic[0][s + i[:, 0]] == torch.arange(130)   # row's best column's best row
            keep = ri1[:, j] >= 0 if mutual else torch.ones(130, dtype=torch.bool)
            assert bool(keep[cand].all())            # -1 only where the row cannot be mutual
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


def test_unique_pairs():
    assert match.unique_pairs([("a", "b"), ("b", "a"), ("a", "a"), ("c", "a"), ("a", "b")]) \
        == [("a", "b"), ("c", "a")]


def _write_hloc_features(path, items):
    """hloc's exact layout: nested names, float16 (D, N) descriptors, uncertainty attribute."""
    with h5py.File(path, "w") as f:
        for name, desc in items.items():
            g = f.create_group(name)
            n = len(desc)
            kp = g.create_dataset("keypoints", data=np.arange(2 * n, dtype=np.float16).reshape(n, 2))
            kp.attrs["uncertainty"] = np.float32(1.0)
            g.create_dataset("descriptors", data=np.asarray(desc, np.float16).T.reshape(-1, n)
                             if n else np.zeros((32, 0), np.float16))
            g.create_dataset("scores", data=np.ones(n, np.float16))
            g.create_dataset("image_size", data=np.array([64, 48]))


def test_main_on_hloc_layout(tmp_path, caplog, monkeypatch):
    rng = np.random.default_rng(1)
    a = _unit(rng.normal(size=(60, 32)))
    perm = rng.permutation(60)
    b = _unit(a[perm] + 0.05 * rng.normal(size=(60, 32)))   # b[k] ~ a[perm[k]]
    q = _unit(a[:20] + 0.05 * rng.normal(size=(20, 32)))
    feats = tmp_path / "feats.h5"
    ref = tmp_path / "feats_ref.h5"
    _write_hloc_features(feats, {"query/night/q.jpg": q, "db/2.jpg": b, "db/empty.jpg": np.zeros((0, 32))})
    _write_hloc_features(ref, {"db/1.jpg": a})
    pairs = tmp_path / "pairs-test.txt"
    io.write_pairs(pairs, [("db/1.jpg", "db/2.jpg"), ("db/2.jpg", "db/1.jpg"),
                           ("query/night/q.jpg", "db/1.jpg"), ("db/empty.jpg", "db/1.jpg"),
                           ("db/2.jpg", "db/empty.jpg")])
    with caplog.at_level(logging.WARNING, logger="localize.match"):
        out = match.main("nn-ratio", pairs, feats, features_ref=ref)
    assert out == tmp_path / "feats_matches-nn-ratio0.8_pairs-test.h5"
    assert "db/empty.jpg has no keypoints" in caplog.text
    assert sorted(io.list_h5_names(out)) == sorted(
        ["db-1.jpg/db-2.jpg", "query-night-q.jpg/db-1.jpg", "db-empty.jpg/db-1.jpg",
         "db-2.jpg/db-empty.jpg"])
    with h5py.File(out) as f:
        assert f["db-1.jpg"]["db-2.jpg"]["matches0"].dtype == np.int32
        assert f["db-1.jpg/db-2.jpg/matching_scores0"].dtype == np.float16
        assert f["db-empty.jpg/db-1.jpg/matches0"].shape == (0,)
        assert (f["db-2.jpg/db-empty.jpg/matches0"][()] == -1).all()
    m, s = io.get_matches(out, "db/2.jpg", "db/1.jpg")   # stored reversed
    assert len(m) >= 55 and (perm[m[:, 0]] == m[:, 1]).all() and (s > 0.9).all()
    m, _ = io.get_matches(out, "db/1.jpg", "query/night/q.jpg")
    assert len(m) >= 18 and (m[:, 0] == m[:, 1]).all()
    assert len(io.get_matches(out, "db/1.jpg", "db/empty.jpg")[0]) == 0
    # second run: everything already matched (either order) -> nothing recomputed
    monkeypatch.setattr(match, "match_image", lambda *a, **k: pytest.fail("re-matched"))
    io.write_pairs(pairs, [("db/2.jpg", "db/1.jpg"), ("db/1.jpg", "query/night/q.jpg")])
    assert match.main("nn-ratio", pairs, feats, matches=out, features_ref=ref) == out
    # a name missing from every features file -> one-line error naming it
    io.write_pairs(pairs, [("db/3.jpg", "db/1.jpg")])
    with pytest.raises(io.H5Error, match="db/3.jpg"):
        match.main("nn-ratio", pairs, feats, matches=out, features_ref=ref)


def _pairs_from_file(path, a, b):
    m, _ = io.get_matches(path, a, b)
    return m


def _as_pairs(m0):
    k = np.where(m0 >= 0)[0]
    return np.stack([k, m0[k]], 1)


@pytest.fixture
def small_world(tmp_path):
    """Three images with partial overlaps and a spread of noise (so ratio / distance matter)."""
    rng = np.random.default_rng(7)
    base = _unit(rng.normal(size=(80, 32)))
    noise = rng.uniform(0.05, 0.6, (80, 1))
    imgs = {"db/a.jpg": base[:60],
            "db/b.jpg": _unit(base[20:80] + noise[20:80] * rng.normal(size=(60, 32))),
            "q/c.jpg": _unit(base[::2] + noise[::2] * rng.normal(size=(40, 32)))}
    feats = tmp_path / "feats.h5"
    _write_hloc_features(feats, imgs)
    pairs = tmp_path / "pairs.txt"
    io.write_pairs(pairs, [("db/a.jpg", "db/b.jpg"), ("q/c.jpg", "db/a.jpg"), ("q/c.jpg", "db/b.jpg")])
    return feats, pairs, {k: io.get_descriptors(feats, k) for k in imgs}


def test_hloc_confs_and_positional_signature(small_world, tmp_path):
    feats, pairs, desc = small_world
    hloc_ratio = {"output": "matches-NN-mutual-ratio.8",
                  "model": {"name": "nearest_neighbor", "do_mutual_check": True, "ratio_threshold": 0.8}}
    expected = {"NN-ratio": (0.8, None, True), "NN-mutual": (None, None, True),
                "NN-superpoint": (None, 0.7, True)}
    export = tmp_path / "out"
    n_matches = {}
    for name, (ratio, dist, mutual) in list(expected.items()) + [
            ("no-mutual", (0.9, None, False))]:
        conf = match.confs.get(name) or {"output": "m-nomutual", "model": {
            "name": "nearest_neighbor", "do_mutual_check": False, "ratio_threshold": 0.9}}
        # hloc's notebook call: main(conf, pairs, features NAME, export_dir)
        out = match.main(conf, pairs, "feats", tmp_path)
        assert out == tmp_path / f"feats_{conf['output']}_pairs.h5"
        total = 0
        for a, b in io.parse_pairs(pairs):
            m_ref, _ = match.match_reference(desc[a], desc[b], ratio, dist, mutual)
            np.testing.assert_array_equal(_pairs_from_file(out, a, b), _as_pairs(m_ref))
            total += int((m_ref >= 0).sum())
        n_matches[name] = total
    assert match.confs["NN-ratio"] == hloc_ratio
    # the thresholds are honoured (not silently mutual NN only)
    assert n_matches["NN-ratio"] < n_matches["NN-mutual"] and n_matches["NN-superpoint"] < n_matches["NN-mutual"]
    assert n_matches["no-mutual"] != n_matches["NN-ratio"]
    # features as a path + export_dir -> hloc's naming under export_dir
    assert match.main("nn-ratio", pairs, feats, export) == export / "feats_matches-nn-ratio0.8_pairs.h5"
    with pytest.raises(ValueError, match="superglue"):
        match.main({"output": "x", "model": {"name": "superglue"}}, pairs, feats, export)
    with pytest.raises(ValueError, match="nope"):
        match.main("nn-ratio", pairs, "nope")
    with pytest.raises(ValueError, match="matches="):
        match.main("nn-ratio", pairs, feats, tmp_path / "m.h5")


def _read_all(path, pairs):
    return {p: _pairs_from_file(path, *p) for p in io.parse_pairs(pairs)}


def test_shards_merge_to_the_unsharded_result(small_world, tmp_path):
    feats, pairs, _ = small_world
    full = match.main("nn-ratio", pairs, feats, matches=tmp_path / "full.h5")
    out = tmp_path / "sharded.h5"
    shard_files = [match.main("nn-ratio", pairs, feats, matches=out, shard=f"{i}/2") for i in range(2)]
    assert all(p.exists() for p in shard_files) and not out.exists()
    assert sorted(io.list_h5_names(shard_files[0])) != sorted(io.list_h5_names(shard_files[1]))
    h5.merge_shards(out, 2, remove=True)
    assert not any(p.exists() for p in shard_files)
    ref, got = _read_all(full, pairs), _read_all(out, pairs)
    assert ref.keys() == got.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    with pytest.raises(ValueError, match="i/K"):
        match.main("nn-ratio", pairs, feats, matches=out, shard="2")


def test_torchrun_ranks_shard_and_merge(small_world, tmp_path):
    """Two CPU processes with torchrun's environment: each matches its shard, rank 0 merges."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path
    feats, pairs, _ = small_world
    full = match.main("nn-ratio", pairs, feats, matches=tmp_path / "full.h5")
    out = tmp_path / "ddp.h5"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    code = ("import sys; from localize import match; "
            "print(match.main('nn-ratio', sys.argv[1], sys.argv[2], matches=sys.argv[3]))")
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(root)}
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(pairs), str(feats), str(out)],
                                      cwd=root, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=180) for p in procs]
    for p, (so, se) in zip(procs, results):
        assert p.returncode == 0, se[-2000:]
        assert so.strip().splitlines()[-1] == str(out)
    ref, got = _read_all(full, pairs), _read_all(out, pairs)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    assert not list(tmp_path.glob("ddp.shard*"))
