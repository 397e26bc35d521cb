"""Reliability (issue 9): stale features after an image changes, names outside the image root,
hloc matches-key collisions, queries sharing a basename, truncated images, damaged HDF5
datasets, one-line CLI errors."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import h5py
import numpy as np
import pytest

from descriptors import registry
from descriptors.data import synth
from localize import (
    colmap,
    dog_features,
    extract_features,
    image_io,
    io,
    match_features,
    pairs_from_exhaustive,
    pairs_from_retrieval,
    parsers,
    provenance,
)
from localize import evaluate as ev
from localize import localize_sfm as loc
from localize import triangulation as tri
from localize.cli import cli_errors
from pipelines import aachen
from pipelines import outputs as run_outputs

REPO = Path(__file__).resolve().parents[1]
SIFT_SMALL = {**extract_features.confs["sift"], "max_keypoints": 128}


def _photo(name: str, side: int = 160) -> np.ndarray:
    return cv2.resize(synth.load_photo(name, gray=True), (side, side), interpolation=cv2.INTER_AREA)


def _feats(n: int, d: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    desc = rng.normal(size=(n, d)).astype(np.float32)
    return {
        "keypoints": rng.uniform(0, 50, (n, 2)).astype(np.float32),
        "descriptors": desc / np.linalg.norm(desc, axis=1, keepdims=True),
        "scores": np.ones(n, np.float32),
        "image_size": np.array([64, 64]),
    }


# ------------------------------------------------------------------------------------------
# 1. freshness
# ------------------------------------------------------------------------------------------
def test_changed_image_is_reextracted(tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), _photo("camera"))
    cv2.imwrite(str(images / "b.png"), _photo("coffee"))
    fp = tmp_path / "f.h5"
    extract_features.main(SIFT_SMALL, images, feature_path=fp, num_workers=0)
    with h5py.File(fp) as f:
        stored = {n: f[n].attrs[provenance.FINGERPRINT_ATTR] for n in ("a.png", "b.png")}
    assert stored["a.png"] == image_io.image_fingerprint(images / "a.png")
    kp_b = io.get_keypoints(fp, "b.png")

    # same name, new content: without the fingerprint the old entry would be reused
    cv2.imwrite(str(images / "a.png"), _photo("astronaut"))
    caplog.set_level(logging.INFO)
    extract_features.main(SIFT_SMALL, images, feature_path=fp, num_workers=0)
    assert "'a.png' changed on disk" in caplog.text
    assert "for 1 images" in caplog.text  # b.png was not recomputed
    fresh = dog_features.extract_image(
        image_io.read_image(images / "a.png"), registry.load("sift"), SIFT_SMALL
    )
    np.testing.assert_array_equal(io.get_keypoints(fp, "a.png"), fresh["keypoints"])
    np.testing.assert_array_equal(io.get_keypoints(fp, "b.png"), kp_b)
    with h5py.File(fp) as f:
        assert f["a.png"].attrs[provenance.FINGERPRINT_ATTR] == image_io.image_fingerprint(
            images / "a.png"
        )
        assert f["b.png"].attrs[provenance.FINGERPRINT_ATTR] == stored["b.png"]


def test_image_fingerprint_hashes_the_whole_file(tmp_path):
    """Issue 20 (3): a 300 KB image changed in the MIDDLE with size and mtime restored was not
    recomputed (only the first and last 64 KiB were hashed)."""
    p = tmp_path / "x.jpg"
    p.write_bytes(bytes(300_000))
    st = p.stat()
    f0 = image_io.image_fingerprint(p)
    data = bytearray(p.read_bytes())
    data[150_000] = 1  # the middle: outside both ends
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    f1 = image_io.image_fingerprint(p)
    assert f1 != f0 and f1.split()[0] == f0.split()[0]  # same size, new hash
    os.utime(p, ns=(1, 1))  # touched only: same content
    assert image_io.image_fingerprint(p) == f1
    with pytest.raises(image_io.ImageReadError, match="nope.jpg"):
        image_io.image_fingerprint(tmp_path / "nope.jpg")


def _fake_dataset(root: Path) -> SimpleNamespace:
    (root / "images" / "db").mkdir(parents=True)
    (root / "model").mkdir()
    (root / "queries").mkdir()
    for i, n in enumerate(("camera", "coffee")):
        cv2.imwrite(str(root / "images" / "db" / f"{i}.png"), _photo(n, 64))
    cv2.imwrite(str(root / "images" / "q.png"), _photo("astronaut", 64))
    for n in ("cameras.bin", "images.bin", "points3D.bin"):
        (root / "model" / n).write_bytes(b"model " + n.encode())
    ql = root / "queries" / "day_time_queries_with_intrinsics.txt"
    ql.write_text("q.png SIMPLE_PINHOLE 64 64 50 32 32\n")
    return SimpleNamespace(
        image_dir=root / "images",
        db_names=["db/0.png", "db/1.png"],
        queries=[("q.png", None)],
        reference_model=root / "model",
        query_lists=[ql],
    )


def test_pipeline_fingerprint_follows_content_not_path(tmp_path):
    root = tmp_path / "ds"
    data = _fake_dataset(root)
    fp0 = aachen._dataset_fingerprint(root, data, aachen.image_fingerprints(data))
    assert aachen._dataset_fingerprint(root, data, aachen.image_fingerprints(data)) == fp0
    cv2.imwrite(str(root / "images" / "db" / "1.png"), _photo("astronaut", 64))
    fp1 = aachen._dataset_fingerprint(root, data, aachen.image_fingerprints(data))
    assert fp1["images_blake2b"] != fp0["images_blake2b"] and fp1["files"] == fp0["files"]
    (root / "model" / "images.bin").write_bytes(b"another model")
    fp2 = aachen._dataset_fingerprint(root, data, aachen.image_fingerprints(data))
    assert fp2["files"]["model/images.bin"] != fp1["files"]["model/images.bin"]
    os.remove(root / "images" / "q.png")
    with pytest.raises(image_io.ImageReadError, match="q.png"):
        aachen.image_fingerprints(data)

    w = tmp_path / "w.pt"
    w.write_bytes(b"weights v1")
    f0 = run_outputs.features_fingerprint(str(w))
    os.utime(w, ns=(1, 1))  # touched only: still reused
    assert run_outputs.features_fingerprint(str(w)) == f0
    w.write_bytes(b"weights v2")  # retrained: invalidated
    assert run_outputs.features_fingerprint(str(w)) != f0

    out = tmp_path / "out"
    (out / "sfm").mkdir(parents=True)
    for n in ("features.h5", "matches-db.h5", "fingerprint.json"):
        (out / n).write_text("x")
    run_outputs.wipe(out, keep="features.h5")
    assert [p.name for p in out.iterdir()] == ["features.h5"]


# ------------------------------------------------------------------------------------------
# 2. names
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../x.jpg", "/abs/x.jpg", "db/../../x.jpg", "db//x.jpg"])
def test_names_outside_the_root_name_file_and_line(tmp_path, bad):
    lst = tmp_path / "list.txt"
    lst.write_text(f"# images\ndb/ok.jpg\n{bad}\n")
    with pytest.raises(ValueError, match=r"list.txt:3: image name"):
        extract_features.list_images(tmp_path, lst)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"db/ok.jpg db/b.jpg\ndb/ok.jpg {bad}")
    with pytest.raises(ValueError, match=r"pairs.txt:2: image name"):
        parsers.parse_pairs(pairs)
    ql = tmp_path / "q.txt"
    ql.write_text(
        f"query/ok.jpg SIMPLE_PINHOLE 64 64 50 32 32\n{bad} SIMPLE_PINHOLE 64 64 50 32 32"
    )
    with pytest.raises(ValueError, match=r"q.txt:2: image name"):
        colmap.parse_query_list(ql)
    with pytest.raises(ValueError, match=r"q.txt:2: image name"):
        pairs_from_retrieval._select(["query/ok.jpg"], None, ql, "query", tmp_path / "g.h5")
    with pytest.raises(ValueError, match="entry 1 .*image name"):
        extract_features.list_images(tmp_path, ["db/ok.jpg", bad])
    assert extract_features.list_images(tmp_path, ["a/b.jpg", "c.jpg"]) == ["a/b.jpg", "c.jpg"]


def test_matches_key_collision_is_refused(tmp_path):
    feats = tmp_path / "f.h5"
    with io.H5Writer(feats) as w:
        for i, n in enumerate(("a-b.jpg", "a/b.jpg", "c.jpg")):
            io.write_features(w.file, n, _feats(6, seed=i))
    pairs = tmp_path / "pairs.txt"
    for lines in (["a-b.jpg c.jpg", "a/b.jpg c.jpg"], ["a/b.jpg c.jpg", "c.jpg a-b.jpg"]):
        parsers.write_pairs(pairs, [tuple(s.split()) for s in lines])
        with pytest.raises(ValueError) as e:
            match_features.main("nn-mutual", pairs, feats, matches=tmp_path / "m.h5")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(str(pairs)) and "share the matches key" in msg
        for line in lines:  # both pairs named
            assert "({}, {})".format(*line.split()) in msg
        assert not (tmp_path / "m.h5").exists()  # refused before any matching
    # the same two images in both orders are one pair, not a collision
    parsers.write_pairs(pairs, [("a/b.jpg", "c.jpg"), ("c.jpg", "a/b.jpg")])
    m = match_features.main("nn-mutual", pairs, feats, matches=tmp_path / "m.h5")
    assert io.list_h5_names(m) == ["a-b.jpg/c.jpg"]


def test_queries_sharing_a_basename_are_evaluated_separately(tmp_path):
    rng = np.random.default_rng(0)
    gt = {}
    for n in ("query/day/x.jpg", "query/night/x.jpg", "query/day/y.jpg"):
        q = rng.normal(size=4)
        gt[n] = (q / np.linalg.norm(q), rng.normal(size=3))
    written = loc.result_names(list(gt))
    assert written == {
        "query/day/x.jpg": "query/day/x.jpg",
        "query/night/x.jpg": "query/night/x.jpg",
        "query/day/y.jpg": "y.jpg",
    }
    res = tmp_path / "results.txt"
    res.write_text("\n".join(loc._format_pose(written[n], *gt[n]) for n in gt) + "\n")
    cond = {"query/day/x.jpg": "day", "query/night/x.jpg": "night", "query/day/y.jpg": "day"}
    e = ev.evaluate(res, gt, cond)
    assert set(e["per_query"]) == {"query/day/x.jpg", "query/night/x.jpg", "y.jpg"}
    assert e["num_missing"] == 0 and e["conditions"]["all"]["recall"][0] == 1.0
    assert e["conditions"]["night"]["n"] == 1 and e["conditions"]["day"]["n"] == 2
    assert set(ev.read_poses(res)) == {"query/day/x.jpg", "query/night/x.jpg", "y.jpg"}

    # hloc-style basenames for queries that share one: ambiguous, an error naming the file
    res.write_text("\n".join(loc._format_pose(n.rsplit("/", 1)[-1], *gt[n]) for n in gt))
    with pytest.raises(ValueError, match=r"results.txt: cannot tell .*'x.jpg'"):
        ev.evaluate(res, gt, cond)
    # unique basenames keep hloc's format and keys
    gt1 = {k: v for k, v in gt.items() if k != "query/night/x.jpg"}
    res.write_text("\n".join(loc._format_pose(n.rsplit("/", 1)[-1], *gt1[n]) for n in gt1))
    e = ev.evaluate(res, gt1, cond)
    assert set(e["per_query"]) == {"x.jpg", "y.jpg"} and e["num_missing"] == 0


# ------------------------------------------------------------------------------------------
# 3. corrupt data
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_image_is_refused(tmp_path, ext):
    ok, buf = cv2.imencode(ext, _photo("camera", 128))
    data = buf.tobytes()
    full = tmp_path / f"full{ext}"
    full.write_bytes(data + (b"\0" * 16 if ext == ".jpg" else b""))  # trailing padding is fine
    np.testing.assert_array_equal(
        image_io.read_image(full), cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    )
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(cut), cv2.IMREAD_GRAYSCALE) is not None or ext == ".png"
    with pytest.raises(image_io.ImageReadError, match=f"cut{ext}.*truncated") as e:
        image_io.read_image(cut)
    assert "\n" not in str(e.value)
    with pytest.raises(image_io.ImageReadError, match=f"cut{ext}"):
        extract_features.main(
            SIFT_SMALL,
            tmp_path,
            feature_path=tmp_path / "f.h5",
            image_list=[cut.name],
            num_workers=0,
        )


def _overwrite_bytes(path: Path, dataset: str, value: bytes) -> None:
    """Overwrite the first bytes of a contiguous dataset in the file itself (not via HDF5)."""
    with h5py.File(path) as f:
        off = f[dataset].id.get_offset()
    assert off is not None
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(value)


@pytest.mark.parametrize("key", ["descriptors", "keypoints"])
def test_nan_in_hdf5_dataset_is_rejected(tmp_path, key):
    fp = tmp_path / "f.h5"
    io.write_features(fp, "db/a.jpg", _feats(5))
    io.get_descriptors(fp, "db/a.jpg")
    _overwrite_bytes(fp, f"db/a.jpg/{key}", b"\xff" * 8)  # 0xffffffff is a float32 NaN
    getter = io.get_descriptors if key == "descriptors" else io.get_keypoints
    for read in (getter, io.read_features):
        with pytest.raises(io.H5Error, match=f"f.h5: db/a.jpg/{key} holds 2 non-finite") as e:
            read(fp, "db/a.jpg")
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------
# 4. CLI errors: one line on stderr, exit 2
# ------------------------------------------------------------------------------------------
def _one_line_exit(capsys, fn, argv, prog, needle):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"{prog}: ") and needle in err[-1], err


def test_cli_errors_are_one_line(tmp_path, capsys):
    missing = str(tmp_path / "missing")
    fake = tmp_path / "f.h5"
    io.write_features(fake, "a.jpg", _feats(3))
    _one_line_exit(
        capsys,
        extract_features.cli,
        ["--conf", "sift", "--image_dir", missing, "--export_dir", str(tmp_path)],
        "localize.extract_features",
        "missing",
    )
    _one_line_exit(
        capsys,
        match_features.cli,
        ["--pairs", missing, "--features", str(fake)],
        "localize.match_features",
        "missing",
    )
    _one_line_exit(
        capsys,
        pairs_from_exhaustive.cli,
        ["--features", missing, "--output", str(tmp_path / "p.txt")],
        "localize.pairs_from_exhaustive",
        "missing",
    )
    _one_line_exit(
        capsys,
        loc.cli,
        [
            "--reference_sfm",
            missing,
            "--queries",
            missing,
            "--retrieval",
            missing,
            "--features",
            str(fake),
            "--matches",
            missing,
            "--results",
            str(tmp_path / "r.txt"),
        ],
        "localize.localize_sfm",
        "missing",
    )
    _one_line_exit(
        capsys,
        tri.cli,
        [
            "--sfm_dir",
            str(tmp_path / "sfm"),
            "--reference_model",
            missing,
            "--image_dir",
            missing,
            "--pairs",
            missing,
            "--features",
            str(fake),
            "--matches",
            missing,
        ],
        "localize.triangulation",
        "missing",
    )
    _one_line_exit(
        capsys,
        aachen.main,
        ["--features", "nosuchnet", "--dataset", str(tmp_path), "--outputs", str(tmp_path / "out")],
        "pipelines.aachen",
        "nosuchnet",
    )


def test_unexpected_errors_keep_their_traceback():
    with pytest.raises(RuntimeError):
        with cli_errors("x"):
            raise RuntimeError("a bug")
    with pytest.raises(ValueError):  # not raised by the toolkit's code
        with cli_errors("x"):
            raise ValueError("from a test")
    with pytest.raises(KeyError):
        with cli_errors("x"):
            {}["k"]


def test_cli_module_exit_status(tmp_path):
    """``python -m localize.pairs_from_exhaustive`` itself: status 2 and one stderr line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "localize.pairs_from_exhaustive",
            "--features",
            str(tmp_path / "nope.h5"),
            "--output",
            str(tmp_path / "p.txt"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"localize.pairs_from_exhaustive: HDF5 file not found: {tmp_path / 'nope.h5'}"
    ]
