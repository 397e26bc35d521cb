"""localize.match_features (the stage): hloc confs, hloc-layout files, pair bookkeeping, sharding."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from benchmarks import reference_matchers
from localize import h5, io, match_features, parsers


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def test_unique_pairs():
    assert match_features.unique_pairs(
        [("a", "b"), ("b", "a"), ("a", "a"), ("c", "a"), ("a", "b")]
    ) == [("a", "b"), ("c", "a")]


def _write_hloc_features(path, items):
    """hloc's exact layout: nested names, float16 (D, N) descriptors, uncertainty attribute."""
    with h5py.File(path, "w") as f:
        for name, desc in items.items():
            g = f.create_group(name)
            n = len(desc)
            kp = g.create_dataset(
                "keypoints", data=np.arange(2 * n, dtype=np.float16).reshape(n, 2)
            )
            kp.attrs["uncertainty"] = np.float32(1.0)
            g.create_dataset(
                "descriptors",
                data=np.asarray(desc, np.float16).T.reshape(-1, n)
                if n
                else np.zeros((32, 0), np.float16),
            )
            g.create_dataset("scores", data=np.ones(n, np.float16))
            g.create_dataset("image_size", data=np.array([64, 48]))


def test_main_on_hloc_layout(tmp_path, caplog, monkeypatch):
    rng = np.random.default_rng(1)
    a = _unit(rng.normal(size=(60, 32)))
    perm = rng.permutation(60)
    b = _unit(a[perm] + 0.05 * rng.normal(size=(60, 32)))  # b[k] ~ a[perm[k]]
    q = _unit(a[:20] + 0.05 * rng.normal(size=(20, 32)))
    feats = tmp_path / "feats.h5"
    ref = tmp_path / "feats_ref.h5"
    _write_hloc_features(
        feats, {"query/night/q.jpg": q, "db/2.jpg": b, "db/empty.jpg": np.zeros((0, 32))}
    )
    _write_hloc_features(ref, {"db/1.jpg": a})
    pairs = tmp_path / "pairs-test.txt"
    parsers.write_pairs(
        pairs,
        [
            ("db/1.jpg", "db/2.jpg"),
            ("db/2.jpg", "db/1.jpg"),
            ("query/night/q.jpg", "db/1.jpg"),
            ("db/empty.jpg", "db/1.jpg"),
            ("db/2.jpg", "db/empty.jpg"),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="localize.match_features"):
        out = match_features.main("nn-ratio", pairs, feats, features_ref=ref)
    assert out == tmp_path / "feats_matches-nn-ratio0.8_pairs-test.h5"
    assert "db/empty.jpg has no keypoints" in caplog.text
    assert sorted(io.list_h5_names(out)) == sorted(
        [
            "db-1.jpg/db-2.jpg",
            "query-night-q.jpg/db-1.jpg",
            "db-empty.jpg/db-1.jpg",
            "db-2.jpg/db-empty.jpg",
        ]
    )
    with h5py.File(out) as f:
        assert f["db-1.jpg"]["db-2.jpg"]["matches0"].dtype == np.int32
        assert f["db-1.jpg/db-2.jpg/matching_scores0"].dtype == np.float16
        assert f["db-empty.jpg/db-1.jpg/matches0"].shape == (0,)
        assert (f["db-2.jpg/db-empty.jpg/matches0"][()] == -1).all()
    m, s = io.get_matches(out, "db/2.jpg", "db/1.jpg")  # stored reversed
    assert len(m) >= 55 and (perm[m[:, 0]] == m[:, 1]).all() and (s > 0.9).all()
    m, _ = io.get_matches(out, "db/1.jpg", "query/night/q.jpg")
    assert len(m) >= 18 and (m[:, 0] == m[:, 1]).all()
    assert len(io.get_matches(out, "db/1.jpg", "db/empty.jpg")[0]) == 0
    # second run: everything already matched (either order) -> nothing recomputed
    monkeypatch.setattr(match_features, "match_image", lambda *a, **k: pytest.fail("re-matched"))
    parsers.write_pairs(pairs, [("db/2.jpg", "db/1.jpg"), ("db/1.jpg", "query/night/q.jpg")])
    assert match_features.main("nn-ratio", pairs, feats, matches=out, features_ref=ref) == out
    # a name missing from every features file -> one-line error naming it
    parsers.write_pairs(pairs, [("db/3.jpg", "db/1.jpg")])
    with pytest.raises(io.H5Error, match="db/3.jpg"):
        match_features.main("nn-ratio", pairs, feats, matches=out, features_ref=ref)


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
    imgs = {
        "db/a.jpg": base[:60],
        "db/b.jpg": _unit(base[20:80] + noise[20:80] * rng.normal(size=(60, 32))),
        "q/c.jpg": _unit(base[::2] + noise[::2] * rng.normal(size=(40, 32))),
    }
    feats = tmp_path / "feats.h5"
    _write_hloc_features(feats, imgs)
    pairs = tmp_path / "pairs.txt"
    parsers.write_pairs(
        pairs, [("db/a.jpg", "db/b.jpg"), ("q/c.jpg", "db/a.jpg"), ("q/c.jpg", "db/b.jpg")]
    )
    return feats, pairs, {k: io.get_descriptors(feats, k) for k in imgs}


def test_hloc_confs_and_positional_signature(small_world, tmp_path):
    feats, pairs, desc = small_world
    hloc_ratio = {
        "output": "matches-NN-mutual-ratio.8",
        "model": {"name": "nearest_neighbor", "do_mutual_check": True, "ratio_threshold": 0.8},
    }
    expected = {
        "NN-ratio": (0.8, None, True),
        "NN-mutual": (None, None, True),
        "NN-superpoint": (None, 0.7, True),
    }
    export = tmp_path / "out"
    n_matches = {}
    for name, (ratio, dist, mutual) in list(expected.items()) + [("no-mutual", (0.9, None, False))]:
        conf = match_features.confs.get(name) or {
            "output": "m-nomutual",
            "model": {"name": "nearest_neighbor", "do_mutual_check": False, "ratio_threshold": 0.9},
        }
        # hloc's notebook call: main(conf, pairs, features NAME, export_dir)
        out = match_features.main(conf, pairs, "feats", tmp_path)
        assert out == tmp_path / f"feats_{conf['output']}_pairs.h5"
        total = 0
        for a, b in parsers.parse_pairs(pairs):
            m_ref, _ = reference_matchers.match_reference(desc[a], desc[b], ratio, dist, mutual)
            np.testing.assert_array_equal(_pairs_from_file(out, a, b), _as_pairs(m_ref))
            total += int((m_ref >= 0).sum())
        n_matches[name] = total
    assert match_features.confs["NN-ratio"] == hloc_ratio
    # the thresholds are honoured (not silently mutual NN only)
    assert (
        n_matches["NN-ratio"] < n_matches["NN-mutual"]
        and n_matches["NN-superpoint"] < n_matches["NN-mutual"]
    )
    assert n_matches["no-mutual"] != n_matches["NN-ratio"]
    # features as a path + export_dir -> hloc's naming under export_dir
    assert (
        match_features.main("nn-ratio", pairs, feats, export)
        == export / "feats_matches-nn-ratio0.8_pairs.h5"
    )
    with pytest.raises(ValueError, match="superglue"):
        match_features.main({"output": "x", "model": {"name": "superglue"}}, pairs, feats, export)
    with pytest.raises(ValueError, match="nope"):
        match_features.main("nn-ratio", pairs, "nope")
    with pytest.raises(ValueError, match="matches="):
        match_features.main("nn-ratio", pairs, feats, tmp_path / "m.h5")


def _read_all(path, pairs):
    return {p: _pairs_from_file(path, *p) for p in parsers.parse_pairs(pairs)}


def test_shards_merge_to_the_unsharded_result(small_world, tmp_path):
    feats, pairs, _ = small_world
    full = match_features.main("nn-ratio", pairs, feats, matches=tmp_path / "full.h5")
    out = tmp_path / "sharded.h5"
    shard_files = [
        match_features.main("nn-ratio", pairs, feats, matches=out, shard=f"{i}/2") for i in range(2)
    ]
    assert all(p.exists() for p in shard_files) and not out.exists()
    assert sorted(io.list_h5_names(shard_files[0])) != sorted(io.list_h5_names(shard_files[1]))
    h5.merge_shards(out, 2, remove=True)
    assert not any(p.exists() for p in shard_files)
    ref, got = _read_all(full, pairs), _read_all(out, pairs)
    assert ref.keys() == got.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    with pytest.raises(ValueError, match="i/K"):
        match_features.main("nn-ratio", pairs, feats, matches=out, shard="2")


def test_torchrun_ranks_shard_and_merge(small_world, tmp_path):
    """Two CPU processes with torchrun's environment: each matches its shard, rank 0 merges."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    feats, pairs, _ = small_world
    full = match_features.main("nn-ratio", pairs, feats, matches=tmp_path / "full.h5")
    out = tmp_path / "ddp.h5"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; from localize import match_features; "
        "print(match_features.main('nn-ratio', sys.argv[1], sys.argv[2], matches=sys.argv[3]))"
    )
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(root),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code, str(pairs), str(feats), str(out)],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=180) for p in procs]
    for p, (so, se) in zip(procs, results):
        assert p.returncode == 0, se[-2000:]
        assert so.strip().splitlines()[-1] == str(out)
    ref, got = _read_all(full, pairs), _read_all(out, pairs)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    assert not list(tmp_path.glob("ddp.shard*"))
