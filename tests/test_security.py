"""Reliability and security, round 3 (issue 20): one test (or more) per numbered failure of the
issue, each reproducing it first: the marker file must not appear, the outside file must not be
read, the wrong result must be refused, the error must be one line with exit status 2."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import h5py
import numpy as np
import pytest

from descriptors import export
from descriptors.data import synth
from localize import (
    colmap,
    extract_features,
    h5,
    image_io,
    io,
    make_patches,
    match_features,
    pairs_from_covisibility,
    parsers,
    provenance,
)
from localize import localize_sfm as loc
from localize import triangulation as tri
from localize.cli import VERBOSE, ToolkitError, cli_errors
from localize.data import roxford, strecha
from pipelines import aachen
from pipelines import hpatches as ph
from pipelines import phototour as pt
from pipelines import train as PT

SIFT_SMALL = {**extract_features.confs["sift"], "max_keypoints": 64}


def _feats(n: int, d: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    desc = rng.normal(size=(n, d)).astype(np.float32)
    return {
        "keypoints": rng.uniform(0, 50, (n, 2)).astype(np.float32),
        "descriptors": desc / np.linalg.norm(desc, axis=1, keepdims=True),
        "scores": np.ones(n, np.float32),
        "image_size": np.array([64, 64]),
    }


def _photo(name: str, side: int = 128) -> np.ndarray:
    return cv2.resize(synth.load_photo(name, gray=True), (side, side), interpolation=cv2.INTER_AREA)


@pytest.fixture(autouse=True)
def _fresh_log_handler():
    """Each CLI call installs the one log handler on the stderr of ITS test (not a closed one
    captured by an earlier test)."""
    root = logging.getLogger()
    for hd in [hd for hd in root.handlers if getattr(hd, "_descloc", False)]:
        root.removeHandler(hd)
    yield


def _exit2(capsys, fn, argv, needle: str, prog: str | None = None) -> str:
    """``fn(argv)`` exits 2 with ONE stderr line (no traceback) containing ``needle``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, err
    assert err and "Traceback" not in "\n".join(err), err
    assert needle in err[-1], err
    if prog is not None:
        assert err[-1].startswith(f"{prog}: "), err
    return err[-1]


# ------------------------------------------------------------------------------------------
# 1. no code execution from a data file
# ------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_1_ground_truth_pickle_runs_no_code(tmp_path):
    d = tmp_path / "roxford5k"
    d.mkdir()
    marker = tmp_path / "PWNED"
    gnd = {
        "imlist": ["a"],
        "qimlist": ["q"],
        "gnd": [{"bbx": [0, 0, 1, 1], "easy": [0], "hard": [], "junk": [], "x": _Evil(marker)}],
    }
    (d / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(gnd, protocol=4))
    with pytest.raises(roxford.RevisitopError, match="refusing global io.open"):
        roxford.read_revisitop(tmp_path, "roxford5k", check_images=False)
    assert not marker.exists()
    # a pickle with numpy arrays (what real ground truth may hold) still loads
    ok = {
        "imlist": ["a", "b"],
        "qimlist": ["q"],
        "gnd": [{"bbx": np.array([0.0, 0, 4, 4]), "easy": np.array([1]), "hard": [0], "junk": []}],
    }
    (d / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(ok, protocol=2))
    data = roxford.read_revisitop(tmp_path, "roxford5k", check_images=False)
    assert data.n == 2 and data.gnd[0]["easy"].tolist() == [1]


@pytest.mark.parametrize(
    "cfg, why",
    [
        ({"imlist": [], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, 1]}]}, "non-empty list"),
        ({"imlist": ["a"], "qimlist": [], "gnd": []}, "non-empty list"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": []}, "len(gnd)=0"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1]}]}, "4 finite numbers"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, np.nan]}]}, "4 finite"),
        (
            {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, 1], "easy": [1]}]},
            "out of range",
        ),
        (
            {"imlist": ["../../etc/passwd"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, 1]}]},
            "'..'",
        ),
        ({"imlist": ["a"], "qimlist": ["/abs"], "gnd": [{"bbx": [0, 0, 1, 1]}]}, "absolute"),
    ],
)
def test_1_ground_truth_structure_is_validated(tmp_path, cfg, why):
    (tmp_path / "gnd_x.pkl").write_bytes(pickle.dumps(cfg))
    with pytest.raises(roxford.RevisitopError, match=why.replace("(", r"\(").replace(")", r"\)")):
        roxford.read_revisitop(tmp_path, "x", check_images=False)


# ------------------------------------------------------------------------------------------
# 2. no reads outside the data root
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../outside.jpg", "ABS"])
def test_2_make_patches_refuses_model_names_outside_the_root(tmp_path, monkeypatch, bad):
    images = tmp_path / "images"
    images.mkdir()
    outside = tmp_path / "outside.jpg"
    cv2.imwrite(str(outside), _photo("camera"))
    cv2.imwrite(str(images / "a.jpg"), _photo("coffee"))
    bad = str(outside) if bad == "ABS" else bad
    cam = {"model": "SIMPLE_PINHOLE", "width": 128, "height": 128, "params": [100, 64, 64]}
    rec = colmap.build_reference_reconstruction(
        [cam],
        [
            {"name": n, "camera_idx": 0, "qvec_wxyz": [1, 0, 0, 0], "tvec": [i, 0, 0]}
            for i, n in enumerate(["a.jpg", bad])
        ],
    )
    read: list[str] = []
    real = make_patches._load_gray
    monkeypatch.setattr(make_patches, "_load_gray", lambda p: (read.append(str(p)), real(p))[1])
    with pytest.raises(ValueError, match="absolute|'..'"):
        make_patches.build("default", images, tmp_path / "out", reference=rec, progress=False)
    assert read == []  # nothing read, the outside file least


# ------------------------------------------------------------------------------------------
# 3. silently wrong results are refused or recomputed
# ------------------------------------------------------------------------------------------
def _pairs(path: Path, *pairs: tuple[str, str]) -> Path:
    path.write_text("\n".join(f"{a} {b}" for a, b in pairs))
    return path


def test_3_matches_of_reextracted_features_are_recomputed(tmp_path, caplog):
    fp, mp = tmp_path / "f.h5", tmp_path / "m.h5"
    io.write_features(fp, "a.jpg", _feats(10, seed=1))
    io.write_features(fp, "b.jpg", _feats(12, seed=2))
    pairs = _pairs(tmp_path / "p.txt", ("a.jpg", "b.jpg"))
    match_features.main("nn-mutual", pairs, fp, matches=mp)
    io.write_features(fp, "a.jpg", _feats(20, seed=3))  # re-extracted: new keypoints
    caplog.set_level(logging.INFO)
    match_features.main("nn-mutual", pairs, fp, matches=mp)
    assert "changed since: recomputing" in caplog.text
    with h5py.File(mp) as f:
        g = f[io.names_to_pair("a.jpg", "b.jpg")]
        assert len(g["matches0"]) == 20  # indexes the NEW keypoints
        with h5py.File(fp) as ff:
            assert g.attrs["features0"] == provenance.features_id(ff, "a.jpg")
    caplog.clear()
    match_features.main("nn-mutual", pairs, fp, matches=mp)  # now current: skipped
    assert "1/1 pairs already in" in caplog.text


def test_3_features_file_refuses_another_descriptor_or_conf(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), _photo("camera"))
    fp = tmp_path / "f.h5"
    extract_features.main(SIFT_SMALL, images, feature_path=fp, num_workers=0)
    with h5py.File(fp) as f:
        assert f.attrs["descloc_descriptor"] == "sift"
    with pytest.raises(h5.H5Error, match="another conf"):
        extract_features.main(
            {**SIFT_SMALL, "max_keypoints": 32}, images, feature_path=fp, num_workers=0
        )
    with pytest.raises(h5.H5Error, match="another descriptor"):  # before loading 'foo'
        extract_features.main(
            SIFT_SMALL, images, feature_path=fp, num_workers=0, features_override="foo"
        )
    with pytest.raises(h5.H5Error, match="another descriptor"):
        extract_features.main(
            extract_features.confs["rootsift"], images, feature_path=fp, num_workers=0
        )
    extract_features.main(SIFT_SMALL, images, feature_path=fp, num_workers=0)  # same: fine


def test_3_shards_made_differently_are_not_merged(tmp_path):
    a, b, dest = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "f.h5"
    for path, k, name in ((a, 64, "x.jpg"), (b, 32, "y.jpg")):
        with h5.H5Writer(path) as w:
            provenance.check_provenance(
                w.file, extract_features.provenance({**SIFT_SMALL, "max_keypoints": k})
            )
            io.write_features(w.file, name, _feats(4))
    h5.merge_h5([a], dest)
    with h5py.File(dest) as f:
        assert f.attrs["descloc_descriptor"] == "sift"  # provenance carried over
    with pytest.raises(h5.H5Error, match="cannot merge .*b.h5 .*another conf"):
        h5.merge_h5([b], dest)


def test_3_pair_key_collision_across_runs(tmp_path):
    fp, mp = tmp_path / "f.h5", tmp_path / "m.h5"
    for i, n in enumerate(("a/b.jpg", "a-b.jpg", "c.jpg")):
        io.write_features(fp, n, _feats(8, seed=i))
    match_features.main(
        "nn-mutual", _pairs(tmp_path / "p1.txt", ("a/b.jpg", "c.jpg")), fp, matches=mp
    )
    with pytest.raises(io.PairKeyError, match=r"are of pair \(a/b.jpg, c.jpg\)"):
        match_features.main(
            "nn-mutual", _pairs(tmp_path / "p2.txt", ("a-b.jpg", "c.jpg")), fp, matches=mp
        )
    with pytest.raises(io.PairKeyError):
        io.get_matches(mp, "a-b.jpg", "c.jpg")  # not the other pair's matches
    assert len(io.get_matches(mp, "a/b.jpg", "c.jpg")[0]) >= 0


@pytest.mark.parametrize("bad", [600, 2**30])
def test_3_match_indices_beyond_the_keypoints_are_refused(tmp_path, bad):
    mp = tmp_path / "m.h5"
    m0 = np.full(512, -1, np.int32)
    m0[:3] = [0, 5, bad]
    io.write_matches(mp, "a.jpg", "b.jpg", m0)
    with pytest.raises(h5.H5Error, match=f"match index {bad} outside the 512 keypoints"):
        tri.read_matches(mp, [("a.jpg", "b.jpg")], {"a.jpg": 512, "b.jpg": 512})
    model = SimpleNamespace(track=lambda n: {0: 7}, ids={"b.jpg": 2}, num_keypoints=lambda n: 512)
    with pytest.raises(h5.H5Error, match="outside the 512 keypoints of 'b.jpg'"):
        loc.correspondences("a.jpg", ["b.jpg"], model, mp, None, 512)
    with pytest.raises(h5.H5Error, match="outside the 100 keypoints of 'a.jpg'"):
        io.check_match_range(np.array([[200, 0]]), 100, 100, mp, "a.jpg", "b.jpg")


@pytest.mark.parametrize(
    "line, why",
    [
        ("q.jpg SIMPLE_PINHOLE 64 64 nan 32 32", "finite"),
        ("q.jpg SIMPLE_PINHOLE 64 64 inf 32 32", "finite"),
        ("q.jpg SIMPLE_PINHOLE 64 64 -50 32 32", "focal length"),
        ("q.jpg SIMPLE_PINHOLE 64 64 1e308 32 32", "focal length"),
        ("q.jpg SIMPLE_PINHOLE 0 64 50 32 32", "width and height"),
        ("q.jpg SIMPLE_RADIAL 64 64 50 nan 32 0", "finite"),
    ],
)
def test_3_query_intrinsics_are_range_checked(tmp_path, line, why):
    with pytest.raises(ValueError, match=why):
        colmap.camera_from_query_line(line)
    ql = tmp_path / "q.txt"
    ql.write_text(line + "\n")
    with pytest.raises(colmap.ColmapError, match=f"q.txt:1: .*{why}"):
        colmap.parse_query_list(ql)
    _, good = colmap.camera_from_query_line("q.jpg SIMPLE_PINHOLE 64 64 50 32 32")
    good.params = [-50.0, 32.0, 32.0]  # a Camera built in Python
    with pytest.raises(colmap.ColmapError, match="focal length"):
        loc.load_queries([("q.jpg", good)])


@pytest.mark.parametrize(
    "edit, why",
    [
        ({7: "nan 0 0"}, "non-finite"),
        ({0: "inf 0 32"}, "non-finite"),
        ({0: "0 0 32", 1: "0 0 32"}, "singular"),
        ({8: "0 64"}, "width and height"),
    ],
)
def test_3_strecha_cameras_are_finite_and_non_singular(tmp_path, edit, why):
    rows = ["100 0 32", "0 100 32", "0 0 1", "0 0 0", "1 0 0", "0 1 0", "0 0 1", "0 0 0", "64 64"]
    for i, r in edit.items():
        rows[i] = r
    (tmp_path / "x.camera").write_text("\n".join(rows) + "\n")
    with pytest.raises(colmap.ColmapError, match=why):
        strecha.read_camera_file(tmp_path / "x.camera")


def test_3_pool_sizes_must_be_positive(tmp_path, capsys):
    with pytest.raises(ValueError, match="pool sizes must be integers >= 1"):
        ph.run(["sift"], tmp_path / "nope", pool_sizes=[0])
    _exit2(
        capsys,
        ph.main,
        ["--features", "sift", "--pool-sizes", "0"],
        "must be >= 1",
        "pipelines.hpatches",
    )


def test_3_features_ref_with_other_features_for_a_name_is_refused(tmp_path):
    f1, f2 = tmp_path / "q.h5", tmp_path / "db.h5"
    io.write_features(f1, "a.jpg", _feats(8, seed=1))
    io.write_features(f2, "a.jpg", _feats(8, seed=2))  # same name, other keypoints
    io.write_features(f2, "b.jpg", _feats(8, seed=3))
    with pytest.raises(h5.H5Error, match="'a.jpg' is in .*q.h5 and .*db.h5 with different"):
        io.FeatureReader([f1, f2])
    io.write_features(f2, "a.jpg", _feats(8, seed=1))  # identical: no ambiguity
    assert io.FeatureReader([f1, f2]).check("b.jpg") == f2


# ------------------------------------------------------------------------------------------
# 4. a truncated HDF5 is called truncated, not "being written by another process"
# ------------------------------------------------------------------------------------------
def test_4_truncated_hdf5_message(tmp_path):
    fp = tmp_path / "f.h5"
    for i in range(3):
        io.write_features(fp, f"{i}.jpg", _feats(200, seed=i))
    data = fp.read_bytes()
    fp.write_bytes(data[: len(data) // 2])
    with pytest.raises(h5.H5Error) as e:
        io.get_keypoints(fp, "0.jpg")
    assert "truncated" in str(e.value) and "being written" not in str(e.value)


# ------------------------------------------------------------------------------------------
# 5. a run lock on a pipeline's output folder
# ------------------------------------------------------------------------------------------
def test_5_second_aachen_run_on_the_same_outputs_stops(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    (out / "sift").mkdir(parents=True)
    (out / "sift" / "features.h5").write_text("first run's file")
    ds = tmp_path / "ds"
    ds.mkdir()
    monkeypatch.setattr(aachen, "read_aachen", lambda d: pytest.fail("dataset read"))
    with h5.run_lock(out / "sift"):  # the first run, in progress
        msg = _exit2(
            capsys,
            aachen.main,
            ["--features", "sift", "--dataset", str(ds), "--outputs", str(out)],
            f"in use by another run (pid {os.getpid()}",
            "pipelines.aachen",
        )
    assert str(out / "sift") in msg
    assert (out / "sift" / "features.h5").read_text() == "first run's file"
    assert not (out / "sift.lock").exists()  # released, sidecar removed


# ------------------------------------------------------------------------------------------
# 6. arguments validated at parse time: one line, exit 2, nothing written
# ------------------------------------------------------------------------------------------
def test_6_bad_arguments_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    d, f = tmp_path, tmp_path / "f.h5"
    io.write_features(f, "a.jpg", _feats(3))
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr(PT, "train", lambda *a, **k: pytest.fail("training started"))
    monkeypatch.chdir(tmp_path)
    train = ["--recipe", "hardnet", "--quick"]
    cases = [
        (PT.main, train + ["--steps", "0"], "must be >= 1"),
        (PT.main, train + ["--steps", "-5"], "must be >= 1"),
        (PT.main, train + ["--batch_size", "-4"], "must be >= 1"),
        (PT.main, train + ["--lr", "nan"], "finite number > 0"),
        (PT.main, train + ["--data", str(d / "typo")], "directory not found"),
        (PT.main, train + ["--eval", "tset"], "--eval tset"),
        (PT.main, train + ["--option", "bogus=1"], "--option bogus: not an option"),
        (PT.main, train + ["--option", "init=missing.pt"], "checkpoint not found"),
        (PT.main, train + ["--eval_only", "--out", str(d / "none.pt")], "no weights at"),
        (PT.main, train + ["--out", str(afile / "w.pt")], "is not a directory"),
        (
            extract_features.cli,
            ["--image_dir", str(d), "--export_dir", str(d), "--device", "bogus"],
            "unknown torch device",
        ),
        (
            extract_features.cli,
            ["--image_dir", str(d), "--export_dir", str(d), "--device", "cuda:7"],
            "cuda:7",
        ),
        (
            extract_features.cli,
            ["--image_dir", str(d), "--export_dir", str(d), "--merge", "0"],
            "must be >= 1",
        ),
        (
            extract_features.cli,
            ["--image_dir", str(d), "--export_dir", str(d), "--num_workers", "-3"],
            "must be >= 0",
        ),
        (
            extract_features.cli,
            ["--image_dir", str(d), "--export_dir", str(d), "--commit_interval", "nan"],
            "finite number > 0",
        ),
        (
            extract_features.cli,
            ["--image_dir", str(d), "--export_dir", str(afile)],
            "is not a directory",
        ),
        (
            loc.cli,
            [
                "--reference_sfm",
                str(d),
                "--queries",
                "q",
                "--retrieval",
                str(f),
                "--features",
                str(f),
                "--matches",
                str(f),
                "--results",
                str(d / "r.txt"),
                "--max_error_px",
                "-1",
            ],
            "finite number > 0",
        ),
        (
            loc.cli,
            [
                "--reference_sfm",
                str(d),
                "--queries",
                "q",
                "--retrieval",
                str(f),
                "--features",
                str(f),
                "--matches",
                str(f),
                "--results",
                str(d),
            ],
            "is a directory",
        ),
        (
            tri.cli,
            [
                "--sfm_dir",
                str(d / "sfm"),
                "--reference_model",
                str(d),
                "--image_dir",
                str(d),
                "--pairs",
                str(f),
                "--features",
                str(f),
                "--matches",
                str(f),
                "--min_match_score",
                "nan",
            ],
            "finite number",
        ),
        (
            tri.cli,
            [
                "--sfm_dir",
                str(afile),
                "--reference_model",
                str(d),
                "--image_dir",
                str(d),
                "--pairs",
                str(f),
                "--features",
                str(f),
                "--matches",
                str(f),
            ],
            "not a directory",
        ),
        (
            export.cli,
            ["hardnet", "--format", "torchscript", "--out", str(d / "x.pt"), "--atol", "nan"],
            "finite number >= 0",
        ),
        (
            export.cli,
            ["hardnet", "--format", "torchscript", "--out", str(d / "x.pt"), "--atol", "-1"],
            "must be a finite number >= 0",
        ),
        (export.cli, ["hardnet", "--format", "torchscript", "--out", str(d)], "is a directory"),
        (
            pairs_from_covisibility.cli,
            ["--model", str(d), "--output", str(d / "p.txt"), "--num_matched", "0"],
            "must be >= 1",
        ),
        (pt.main, ["--batch", "0"], "must be >= 1"),
        (aachen.main, ["--features", "sift", "--device", "bogus"], "unknown torch device"),
        (aachen.main, ["--features", "sift", "--outputs", str(afile)], "not a directory"),
        (
            match_features.cli,
            ["--pairs", str(f), "--features", str(f), "--merge", "0"],
            "must be >= 1",
        ),
    ]
    for fn, argv, needle in cases:
        _exit2(capsys, fn, argv, needle)
    assert not list(d.glob("*.pt")) and not (d / "sfm").exists() and not (d / "x.pt").exists()
    assert not (d / "outputs").exists()  # no untrained checkpoint


def test_6_verbose_keeps_the_traceback():
    try:
        with pytest.raises(PT.InputError, match="bogus"):  # raised, not one line
            PT.main(["--recipe", "hardnet", "--quick", "--option", "bogus=1", "--verbose"])
    finally:
        VERBOSE["on"] = False


# ------------------------------------------------------------------------------------------
# 7. environment faults: one line, exit 2, no temporary / lock file left
# ------------------------------------------------------------------------------------------
def test_7_disk_full_during_extract_and_match(tmp_path, capsys, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), _photo("camera"))
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_space(*a, **k):
        raise full

    monkeypatch.setattr(io, "write_features", no_space)
    _exit2(
        capsys,
        extract_features.cli,
        ["--conf", "sift", "--image_dir", str(images), "--feature_path", str(tmp_path / "f.h5")],
        "No space left on device",
        "localize.extract_features",
    )
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.lock"))
    fp = tmp_path / "f2.h5"
    io.write_features(fp, "a.jpg", _feats(5, seed=1))
    io.write_features(fp, "b.jpg", _feats(5, seed=2))
    pairs = _pairs(tmp_path / "p.txt", ("a.jpg", "b.jpg"))
    real_write = os.write

    def write(fd, data):  # the lock file's pid: disk full
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".lock"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(h5.os, "write", write)
    _exit2(
        capsys,
        match_features.cli,
        ["--pairs", str(pairs), "--features", str(fp), "--matches", str(tmp_path / "m.h5")],
        "No space left on device",
        "localize.match_features",
    )
    monkeypatch.undo()
    assert not list(tmp_path.glob("*.lock"))  # no 0-byte lock left behind


def test_7_non_utf8_bytes_and_names(tmp_path, capsys):
    fp = tmp_path / "f.h5"
    io.write_features(fp, "a.jpg", _feats(5))
    pairs = tmp_path / "p.txt"
    pairs.write_bytes(b"a.jpg a.jpg\n\xff\xfe.jpg a.jpg\n")
    _exit2(
        capsys,
        match_features.cli,
        ["--pairs", str(pairs), "--features", str(fp)],
        "p.txt:2: not valid UTF-8",
        "localize.match_features",
    )
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"\xe9t\xe9.jpg\n")
    with pytest.raises(ValueError, match="list.txt:1: not valid UTF-8"):
        parsers.read_image_list(lst)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "ok.png"), _photo("camera"))
    os.rename(images / "ok.png", os.path.join(os.fsencode(images), b"caf\xe9.png"))
    _exit2(
        capsys,
        extract_features.cli,
        ["--conf", "sift", "--image_dir", str(images), "--feature_path", str(tmp_path / "g.h5")],
        "is not valid UTF-8",
        "localize.extract_features",
    )
    assert not (tmp_path / "g.h5").exists() and not list(tmp_path.glob("*.lock"))


def test_7_environment_errors_are_toolkit_one_liners(capsys):
    for e in (
        OSError(errno.EROFS, "Read-only file system", "/ro/x.h5"),
        IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"),
        NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"),
        b"\xff".decode("utf-8", "strict")
        if False
        else UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    ):
        with pytest.raises(SystemExit) as ex:
            with cli_errors("prog"):
                raise e
        err = capsys.readouterr().err.strip().splitlines()
        assert ex.value.code == 2 and len(err) == 1 and err[0].startswith("prog: "), err
    for cls in (
        h5.H5Error,
        image_io.ImageReadError,
        colmap.ColmapError,
        roxford.RevisitopError,
        export.ExportError,
        PT.InputError,
    ):
        assert issubclass(cls, ToolkitError)


# ------------------------------------------------------------------------------------------
# 8. a pixel cap checked from the header, before decoding
# ------------------------------------------------------------------------------------------
def _png_declaring(path: Path, w: int, h: int) -> None:
    """A small valid PNG whose IHDR is rewritten to declare w x h (the data stays small)."""
    ok, buf = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    data = bytearray(buf.tobytes())
    ihdr = data[12:29]  # type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def test_8_pixel_cap_before_decoding(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    _png_declaring(big, 20000, 20000)
    assert big.stat().st_size < 1000
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(image_io.cv2, "imdecode", lambda *a: (decoded.append(1), real(*a))[1])
    with pytest.raises(
        image_io.ImageReadError, match="declares 20000x20000 = 400 MP, over the cap of 100 MP"
    ):
        image_io.read_image(big)
    assert decoded == []  # refused before decoding
    small = tmp_path / "s.png"
    cv2.imwrite(str(small), _photo("camera", 64))
    with pytest.raises(image_io.ImageReadError, match="over the cap"):
        image_io.read_image(small, max_pixels=1000)
    assert image_io.read_image(small, max_pixels=64 * 64).shape == (64, 64)
    images = tmp_path / "images"
    images.mkdir()
    os.replace(small, images / "s.png")
    with pytest.raises(image_io.ImageReadError, match="over the cap"):
        extract_features.main(
            SIFT_SMALL, images, feature_path=tmp_path / "f.h5", num_workers=0, max_pixels=100
        )


# ------------------------------------------------------------------------------------------
# 9. exit status 2 for pipelines.hpatches / phototour / descriptors.export
# ------------------------------------------------------------------------------------------
def test_9_exit_codes(tmp_path, capsys):
    _exit2(
        capsys,
        ph.main,
        ["--features", "sift", "--data", str(tmp_path / "nope")],
        "directory not found",
        "pipelines.hpatches",
    )
    _exit2(
        capsys,
        pt.main,
        ["--features", "sift", "--data", str(tmp_path / "nope")],
        "not found",
        "pipelines.phototour",
    )
    _exit2(
        capsys,
        export.cli,
        ["sift", "--format", "torchscript", "--out", str(tmp_path / "s.pt")],
        "OpenCV descriptor",
        "descriptors.export",
    )
    assert not list(tmp_path.iterdir())
