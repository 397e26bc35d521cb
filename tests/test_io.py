"""localize.io / localize.h5: hloc layouts (features, matches, pairs), errors, crash-safe writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from localize import h5, image_io, io, parsers, provenance


def _hloc_features(path, names, n=5, d=8, seed=0):
    """A features file in hloc's exact layout (as_half: float16 keypoints + descriptors)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for name in names:
            g = f.create_group(name)
            kp = g.create_dataset("keypoints", data=rng.uniform(0, 100, (n, 2)).astype(np.float16))
            kp.attrs["uncertainty"] = np.float32(1.5)
            g.create_dataset("descriptors", data=rng.normal(size=(d, n)).astype(np.float16))
            g.create_dataset("scores", data=rng.uniform(size=n).astype(np.float16))
            g.create_dataset("image_size", data=np.array([640, 480]))


def test_features_hloc_layout_read(tmp_path):
    p = tmp_path / "feats.h5"
    _hloc_features(p, ["db/1.jpg", "query/day/a.jpg"])
    assert io.list_h5_names(p) == ["db/1.jpg", "query/day/a.jpg"]
    kp, u = io.get_keypoints(p, "db/1.jpg", return_uncertainty=True)
    assert kp.shape == (5, 2) and kp.dtype == np.float32 and u == pytest.approx(1.5)
    d = io.get_descriptors(p, "query/day/a.jpg")
    assert d.shape == (5, 8) and d.dtype == np.float32
    with h5py.File(p) as f:
        np.testing.assert_array_equal(d, f["query/day/a.jpg/descriptors"][()].T.astype(np.float32))
    feats = io.read_features(p, "db/1.jpg")
    assert feats["descriptors"].shape == (5, 8) and feats["uncertainty"] == pytest.approx(1.5)
    with pytest.raises(h5.H5Error, match="feats.h5.*db/2.jpg"):
        io.get_keypoints(p, "db/2.jpg")


def test_features_write_roundtrip_and_hloc_readable(tmp_path):
    p = tmp_path / "out.h5"
    feats = {
        "keypoints": np.array([[1.5, 2.0], [3.0, 4.0]], np.float32),
        "descriptors": np.eye(2, 4, dtype=np.float32),
        "scores": np.ones(2, np.float32),
        "image_size": np.array([10, 20]),
        "scales": np.ones(2, np.float32),
        "oris": np.zeros(2, np.float32),
        "uncertainty": 2.0,
    }
    io.write_features(p, "db/x.png", feats, as_half=True)
    with h5py.File(p) as f:  # read exactly as hloc does
        g = f["db"]["x.png"]
        assert g["keypoints"].dtype == np.float32 and g["descriptors"].dtype == np.float16
        assert g["descriptors"].shape == (4, 2) and g["image_size"][()].tolist() == [10, 20]
        assert g["keypoints"].attrs["uncertainty"] == np.float32(2.0)
    # empty features (zero keypoints)
    io.write_features(
        p,
        "empty.png",
        {
            "keypoints": np.zeros((0, 2)),
            "descriptors": np.zeros((0, 128), np.float32),
            "scores": np.zeros(0),
            "image_size": np.array([5, 5]),
        },
    )
    assert io.get_descriptors(p, "empty.png").shape == (0, 128)
    assert io.list_h5_names(p) == ["db/x.png", "empty.png"]
    with pytest.raises(ValueError, match="descriptors must be"):
        io.write_features(
            p, "bad", {"keypoints": np.zeros((3, 2)), "descriptors": np.zeros((4, 2))}
        )
    assert "bad" not in io.list_h5_names(p)


def test_get_matches_reversed_and_legacy(tmp_path):
    p = tmp_path / "matches.h5"
    m0 = np.array([2, -1, 0], np.int16)  # hloc writes int16
    with h5py.File(p, "w") as f:
        g = f.create_group(io.names_to_pair("db/1.jpg", "db/2.jpg"))
        g.create_dataset("matches0", data=m0)
        g.create_dataset("matching_scores0", data=np.array([0.9, 0, 0.5], np.float16))
        g = f.create_group(io.names_to_pair_old("q/a.jpg", "db/3.jpg"))
        g.create_dataset("matches0", data=m0)
        g.create_dataset("matching_scores0", data=np.array([0.9, 0, 0.5], np.float16))
    assert io.names_to_pair("db/1.jpg", "db/2.jpg") == "db-1.jpg/db-2.jpg"
    assert io.names_to_pair_old("q/a.jpg", "db/3.jpg") == "q-a.jpg_db-3.jpg"
    m, s = io.get_matches(p, "db/1.jpg", "db/2.jpg")
    np.testing.assert_array_equal(m, [[0, 2], [2, 0]])
    np.testing.assert_allclose(s, [0.9, 0.5], atol=1e-3)
    m, _ = io.get_matches(p, "db/2.jpg", "db/1.jpg")
    np.testing.assert_array_equal(m, [[2, 0], [0, 2]])
    m, _ = io.get_matches(p, "q/a.jpg", "db/3.jpg")
    np.testing.assert_array_equal(m, [[0, 2], [2, 0]])
    m, _ = io.get_matches(p, "db/3.jpg", "q/a.jpg")
    np.testing.assert_array_equal(m, [[2, 0], [0, 2]])
    with h5py.File(p) as f:
        assert io.find_pair(f, "db/2.jpg", "db/1.jpg") == ("db-1.jpg/db-2.jpg", True)
        with pytest.raises(h5.H5Error, match="db/9.jpg"):
            io.find_pair(f, "db/9.jpg", "db/1.jpg")
    # ours: int32 + float16, replaces the reversed entry instead of duplicating it
    io.write_matches(p, "db/2.jpg", "db/1.jpg", np.array([-1, -1, 1, -1]), np.ones(4))
    with h5py.File(p) as f:
        assert "db-1.jpg/db-2.jpg" not in f and f["db-2.jpg/db-1.jpg/matches0"].dtype == np.int32
        assert f["db-2.jpg/db-1.jpg/matching_scores0"].dtype == np.float16
    m, _ = io.get_matches(p, "db/1.jpg", "db/2.jpg")
    np.testing.assert_array_equal(m, [[1, 2]])


def test_pairs_roundtrip(tmp_path):
    p = tmp_path / "pairs.txt"
    pairs = [("query/day/a.jpg", "db/1.jpg"), ("query/day/a.jpg", "db/2.jpg")]
    parsers.write_pairs(p, pairs)
    text = p.read_text()
    assert text == "query/day/a.jpg db/1.jpg\nquery/day/a.jpg db/2.jpg"  # no trailing newline
    assert parsers.parse_pairs(p) == pairs
    p.write_text(text + "\n\n# comment\n")
    assert parsers.parse_pairs(p) == pairs
    assert parsers.parse_retrieval(p) == {"query/day/a.jpg": ["db/1.jpg", "db/2.jpg"]}
    parsers.write_pairs(p, [])
    assert p.read_text() == "" and parsers.parse_pairs(p) == []
    with pytest.raises(ValueError, match="whitespace"):
        parsers.write_pairs(p, [("a b", "c")])
    p.write_text("a b c\n")
    with pytest.raises(ValueError, match="pairs.txt:1"):
        parsers.parse_pairs(p)


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    for fn in (
        lambda: io.list_h5_names(bad),
        lambda: io.get_keypoints(bad, "a"),
        lambda: io.get_matches(bad, "a", "b"),
    ):
        with pytest.raises(h5.H5Error, match="corrupt.h5") as e:
            fn()
        assert "\n" not in str(e.value)
    with pytest.raises(h5.H5Error, match="missing.h5"):
        io.list_h5_names(tmp_path / "missing.h5")
    with pytest.raises(h5.H5Error, match="corrupt.h5"):  # appending to a corrupt file
        io.write_features(bad, "a", {"keypoints": np.zeros((0, 2))})
    with pytest.raises(image_io.ImageReadError, match="nope.jpg"):
        image_io.read_image(tmp_path / "nope.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(image_io.ImageReadError, match="broken.jpg"):
        image_io.read_image(tmp_path / "broken.jpg")


ROOT = Path(__file__).resolve().parent.parent


def _child(code: str) -> subprocess.Popen:
    """A python child running ``code`` (localize.io importable), stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _kp(n):
    return {"keypoints": np.zeros((n, 2)), "descriptors": np.ones((n, 4), np.float32)}


def test_writer_appends_in_place_and_commits_on_exception(tmp_path):
    p = tmp_path / "f.h5"
    io.write_features(p, "a", _kp(1))
    ino = os.stat(p).st_ino
    with pytest.raises(RuntimeError, match="boom"):
        with h5.H5Writer(p) as w:
            io.write_features(w.file, "b", _kp(2))
            assert w.pending == 1
            assert sorted(os.listdir(tmp_path)) == ["f.h5", "f.h5.lock"]  # no temp copy
            raise RuntimeError("boom")
    # same file (no copy + rename), finished entry committed, lock sidecar gone
    assert os.stat(p).st_ino == ino and sorted(os.listdir(tmp_path)) == ["f.h5"]
    assert io.list_h5_names(p) == ["a", "b"]
    with h5py.File(p) as f:
        assert f["a"].attrs["complete"] == 1 and f["b"].attrs["complete"] == 1
    # periodic commit marks entries complete while the writer stays open
    with h5.H5Writer(p, commit_every_s=0) as w:
        io.write_features(w.file, "c", _kp(1))
        assert w.pending == 1 and w.maybe_commit() and w.pending == 0
        assert w.file["c"].attrs["complete"] == 1 and "c" in w.names()
    assert os.stat(p).st_ino == ino
    # a half-written entry (bad shapes) is not left behind
    with pytest.raises(ValueError, match="scores"):
        io.write_features(p, "bad", {**_kp(3), "scores": np.zeros(2)})
    assert io.list_h5_names(p, include_incomplete=True) == ["a", "b", "c"]


def test_lock_second_writer_fails_naming_file_and_pid(tmp_path):
    p = tmp_path / "feats.h5"
    with h5.H5Writer(p) as w:
        io.write_features(w.file, "a", _kp(1))
        with pytest.raises(h5.H5Error, match=rf"feats.h5 is being written .*pid {os.getpid()}"):
            h5.H5Writer(p).__enter__()
        # another process: writer and reader both get one line naming our pid
        child = _child(f"""
            from localize import h5, io
            for fn in (lambda: io.write_features({str(p)!r}, "x", {{"keypoints": [[0, 0]]}}),
                       lambda: io.list_h5_names({str(p)!r})):
                try:
                    fn()
                except h5.H5Error as e:
                    print(e)
            """)
        out, err = child.communicate(timeout=60)
        lines = out.strip().splitlines()
        assert len(lines) == 2, err
        assert all("feats.h5" in ln and f"pid {os.getpid()}" in ln for ln in lines), lines
    assert not h5.lock_path(p).exists() and h5.lock_holder(p) is None
    assert io.list_h5_names(p) == ["a"]


WRITE_LOOP = """
    import os, sys, numpy as np
    from localize import h5, io
    p = sys.argv[1] if len(sys.argv) > 1 else {path!r}
    with h5.H5Writer(p, commit_every_s=1e9) as w:
        for i in range(1000000):
            io.write_features(w.file, f"img{{i:06d}}", {{"keypoints": np.zeros((5, 2)),
                              "descriptors": np.ones((5, 4), np.float32)}})
            if i == {n_ready}:
                print("ready", flush=True)
            {after}
"""


def test_sigterm_commits_finished_entries_and_removes_lock(tmp_path):
    p = tmp_path / "t.h5"
    child = _child(WRITE_LOOP.format(path=str(p), n_ready=20, after="pass"))
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    names = io.list_h5_names(p)
    assert len(names) > 20 and names == io.list_h5_names(p, include_incomplete=True)
    assert sorted(os.listdir(tmp_path)) == ["t.h5"]  # no lock, no temp file
    assert io.get_descriptors(p, names[-1]).shape == (5, 4)


def test_hard_kill_keeps_committed_entries_and_resume_recomputes_the_rest(tmp_path):
    p = tmp_path / "k.h5"
    # commit after 10 entries, write 5 more, flush them (data on disk, not yet marked), then
    # SIGKILL itself: those 5 stay complete=0
    after = (
        "w.commit() if i == 9 else None\n            "
        "(w.file.flush(), os.kill(os.getpid(), 9)) if i == 14 else None"
    )
    child = _child(WRITE_LOOP.format(path=str(p), n_ready=-1, after=after))
    _, err = child.communicate(timeout=60)
    assert child.returncode == -9, err
    assert h5.lock_path(p).exists()  # stale sidecar of the dead writer
    done = io.list_h5_names(p)
    assert done == [f"img{i:06d}" for i in range(10)]
    left = sorted(set(io.list_h5_names(p, include_incomplete=True)) - set(done))
    assert left == [f"img{i:06d}" for i in range(10, 15)]
    assert provenance.resumable_features(p) == set(done)
    with pytest.raises(h5.H5Error, match=rf"k.h5: entry '{left[0]}' is incomplete"):
        io.get_keypoints(p, left[0])
    assert not io.has_features(p, left[0])
    with h5.H5Writer(p) as w:  # the dead writer's lock does not block
        for n in left:
            io.write_features(w.file, n, _kp(3))
    assert io.list_h5_names(p) == sorted(done + left)
    assert io.get_keypoints(p, left[0]).shape == (3, 2)
    assert not h5.lock_path(p).exists()


def test_incomplete_pairs_are_invisible_and_rewritten(tmp_path):
    p = tmp_path / "m.h5"
    io.write_matches(p, "a", "b", np.array([1, -1]), np.ones(2))
    with h5py.File(p, "a") as f:  # as left by an interrupted writer
        g = f.create_group(io.names_to_pair("c", "d"))
        g.attrs["complete"] = np.uint8(0)
        g.create_dataset("matches0", data=np.array([0], np.int32))
    assert io.has_pair(p, "b", "a") and not io.has_pair(p, "c", "d")
    with pytest.raises(h5.H5Error, match=r"m.h5: pair \(d, c\) is incomplete"):
        io.get_matches(p, "d", "c")
    io.write_matches(p, "d", "c", np.array([-1, 0]))
    assert io.get_matches(p, "c", "d")[0].tolist() == [[0, 1]]
    with h5py.File(p) as f:
        assert "c-d" not in f or "d" not in f["c-d"]


def test_foreign_hloc_entries_read_resume_and_mix(tmp_path):
    p = tmp_path / "hloc.h5"
    _hloc_features(p, ["db/1.jpg", "db/2.jpg"])
    with h5py.File(p, "a") as f:  # hloc entry with descriptors, no keypoints
        f.create_group("db/3.jpg").create_dataset("descriptors", data=np.zeros((8, 5)))
        f.create_group("db/4.jpg").create_dataset("keypoints", data=np.zeros((5, 2)))
        f["db/4.jpg"].create_dataset("descriptors", data=np.zeros((8, 4)))  # N mismatch
    assert io.list_h5_names(p) == ["db/1.jpg", "db/2.jpg", "db/3.jpg", "db/4.jpg"]
    assert io.get_keypoints(p, "db/1.jpg").shape == (5, 2)  # foreign = complete for reading
    assert provenance.resumable_features(p) == {"db/1.jpg", "db/2.jpg"}
    io.write_features(p, "db/3.jpg", _kp(2))  # repaired in place
    assert provenance.resumable_features(p) == {"db/1.jpg", "db/2.jpg", "db/3.jpg"}
    with h5py.File(p) as f:  # hloc-style read of the mix
        assert f["db"]["3.jpg"]["keypoints"].shape == (2, 2)
        assert "complete" not in f["db/1.jpg"].attrs


def test_merge_and_repair(tmp_path):
    p, q = tmp_path / "f.h5", tmp_path / "g.h5"
    for n in "abc":
        io.write_features(p, n, _kp(1))
    io.write_features(q, "db/d", _kp(3))
    with h5py.File(q, "a") as f:  # an interrupted entry: not merged
        f.create_group("db/e").attrs["complete"] = np.uint8(0)
        f["db/e"].create_dataset("keypoints", data=np.zeros((1, 2)))
    h5.merge_h5([p, q], tmp_path / "all.h5")
    assert io.list_h5_names(tmp_path / "all.h5", include_incomplete=True) == ["a", "b", "c", "db/d"]
    assert io.get_keypoints(tmp_path / "all.h5", "db/d").shape == (3, 2)
    assert h5.repair_h5(q) == (1, 1)
    assert io.list_h5_names(q, include_incomplete=True) == ["db/d"]
