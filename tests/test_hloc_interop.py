"""hloc compatibility as a contract: REAL hloc functions on our files, ours on hloc's.

Runs when ``HLOC_SRC`` points to an hloc checkout (``HLOC_SRC=/work/scratch/hloc pytest
tests/test_hloc_interop.py``); skipped otherwise. Covers extraction (hloc's positional order and
confs, hloc's DoG keypoint / orientation conventions), matching (hloc's matcher on our features,
ours on hloc-written features, hloc's NN confs honoured), pairs (exhaustive and retrieval, same
pairs in the same order) and the readers (``hloc.utils.io`` / ``hloc.utils.parsers``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

if not os.environ.get("HLOC_SRC"):
    pytest.skip("HLOC_SRC is not set (path of an hloc checkout)", allow_module_level=True)
sys.path.insert(0, os.environ["HLOC_SRC"])
pytest.importorskip("hloc")

from hloc import extract_features as hloc_extract  # noqa: E402
from hloc import match_features as hloc_match  # noqa: E402
from hloc import pairs_from_exhaustive as hloc_pairs_exhaustive  # noqa: E402
from hloc import pairs_from_retrieval as hloc_pairs_retrieval  # noqa: E402
from hloc.utils import io as hio  # noqa: E402
from hloc.utils import parsers as hparsers  # noqa: E402

from descriptors.data import synth  # noqa: E402
from localize import (
    extract_features,
    io,
    match_features,  # noqa: E402
    pairs_from_exhaustive,
    pairs_from_retrieval,
    parsers,
)

#: hloc's DoG conf, few keypoints (CPU budget); hloc's default descriptor is rootsift
HLOC_SIFT = {
    **hloc_extract.confs["sift"],
    "model": {"name": "dog", "descriptor": "sift", "max_keypoints": -1},
}
NAMES = ["db/a.png", "db/b.png", "query/q.png"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three photos, our features (extracted with hloc's positional order), exhaustive pairs."""
    root = tmp_path_factory.mktemp("hloc")
    images = root / "images"
    for n, (photo, side) in zip(NAMES, [("camera", 240), ("camera", 200), ("coffee", 200)]):
        (images / n).parent.mkdir(parents=True, exist_ok=True)
        img = cv2.resize(
            synth.load_photo(photo, gray=True), (side, side), interpolation=cv2.INTER_AREA
        )
        cv2.imwrite(str(images / n), img)
    conf = {**extract_features.confs["sift"], "max_keypoints": 300}
    feats = extract_features.main(
        conf, images, root, False
    )  # hloc: (conf, images, outputs, as_half)
    pairs_path = pairs_from_exhaustive.main(root / "pairs.txt", features=feats)
    return {"root": root, "images": images, "features": feats, "pairs": pairs_path}


def _all_matches(reader, path, pair_list):
    return {(a, b): reader(path, a, b)[0] for a, b in pair_list}


# ------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------
def test_hloc_readers_on_our_files(world):
    feats, pairs_path = world["features"], world["pairs"]
    mp = match_features.main("NN-ratio", pairs_path, feats, matches=world["root"] / "m.h5")
    assert sorted(hio.list_h5_names(feats)) == io.list_h5_names(feats) == NAMES  # hloc: a set
    for n in NAMES:
        kp, unc = hio.get_keypoints(feats, n, return_uncertainty=True)
        np.testing.assert_array_equal(kp, io.get_keypoints(feats, n))
        assert unc == pytest.approx(1.0)
        with h5py.File(feats) as f:  # hloc's in-file layout: (D, N) descriptors
            np.testing.assert_array_equal(f[n]["descriptors"][()].T, io.get_descriptors(feats, n))
    assert hparsers.parse_retrieval(pairs_path) == parsers.parse_retrieval(pairs_path)
    plist = parsers.parse_pairs(pairs_path)
    for a, b in plist:
        for x, y in [(a, b), (b, a)]:  # either order, as hloc's find_pair
            m_h, s_h = hio.get_matches(mp, x, y)
            m_o, s_o = io.get_matches(mp, x, y)
            np.testing.assert_array_equal(m_h, m_o)
            np.testing.assert_allclose(s_h, s_o)
    assert sum(len(hio.get_matches(mp, a, b)[0]) for a, b in plist) > 20


# ------------------------------------------------------------------------------------------
# Matching
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["NN-ratio", "NN-mutual", "NN-superpoint"])
def test_hloc_matcher_on_our_features_equals_ours(world, name, tmp_path):
    """Same conf dict to both (hloc's own), same features file: same matches; the ratio /
    distance tests are applied (fewer matches than mutual NN alone)."""
    conf = hloc_match.confs[name]
    plist = parsers.parse_pairs(world["pairs"])
    theirs = hloc_match.main(conf, world["pairs"], world["features"], matches=tmp_path / "hloc.h5")
    ours = match_features.main(
        conf, world["pairs"], world["features"], matches=tmp_path / "ours.h5"
    )
    mh, mo = _all_matches(hio.get_matches, theirs, plist), _all_matches(io.get_matches, ours, plist)
    for p in plist:
        np.testing.assert_array_equal(mh[p], mo[p], err_msg=f"{name} {p}")
    if name != "NN-mutual":
        mutual = match_features.main(
            hloc_match.confs["NN-mutual"],
            world["pairs"],
            world["features"],
            matches=tmp_path / "mutual.h5",
        )
        n_mutual = sum(len(io.get_matches(mutual, *p)[0]) for p in plist)
        assert 0 < sum(len(m) for m in mo.values()) < n_mutual


def _write_hloc_layout(path: Path, feats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Features written the way hloc's extract_features writes them (as_half: every float32
    array float16, descriptors (D, N), libver latest, uncertainty on keypoints)."""
    with h5py.File(str(path), "a", libver="latest") as fd:
        for name, (kp, desc) in feats.items():
            grp = fd.create_group(name)
            grp.create_dataset("keypoints", data=kp.astype(np.float16))
            grp.create_dataset("descriptors", data=desc.T.astype(np.float16))
            grp.create_dataset("scores", data=np.ones(len(kp), np.float16))
            grp.create_dataset("image_size", data=np.array([640, 480]))
            grp["keypoints"].attrs["uncertainty"] = 1.0


def test_our_matcher_on_hloc_written_features(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(120, 64))
    feats = {}
    for i, n in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        d = base[rng.permutation(120)[:100]] + 0.3 * rng.normal(size=(100, 64))
        feats[n] = (rng.uniform(0, 480, (100, 2)), d / np.linalg.norm(d, axis=1, keepdims=True))
    fp = tmp_path / "feats-hloc.h5"
    _write_hloc_layout(fp, feats)
    pp = tmp_path / "pairs.txt"
    hloc_pairs_exhaustive.main(pp, features=fp)
    plist = parsers.parse_pairs(pp)
    conf = hloc_match.confs["NN-ratio"]
    ours = match_features.main(conf, pp, "feats-hloc", tmp_path)  # hloc: features NAME + export_dir
    assert ours == tmp_path / f"feats-hloc_{conf['output']}_pairs.h5"
    theirs = hloc_match.main(conf, pp, fp, matches=tmp_path / "hloc.h5")
    for p in plist:
        np.testing.assert_array_equal(io.get_matches(ours, *p)[0], hio.get_matches(theirs, *p)[0])
        assert len(io.get_matches(ours, *p)[0]) > 10
    np.testing.assert_array_equal(
        io.get_keypoints(fp, "a.jpg"), feats["a.jpg"][0].astype(np.float16).astype(np.float32)
    )


# ------------------------------------------------------------------------------------------
# Pairs
# ------------------------------------------------------------------------------------------
def test_exhaustive_pairs_equal_hloc(world, tmp_path):
    """Same pairs in the same order from name lists. From a features file hloc takes the
    names in ``set`` order (its ``list_h5_names``), we take them sorted: same pairs then."""
    names = [f"db/{i}.jpg" for i in range(5)]
    refs = [f"ref/{i}.jpg" for i in range(3)]
    for i, kw in enumerate([{"image_list": names}, {"image_list": names, "ref_list": refs}]):
        hloc_pairs_exhaustive.main(tmp_path / f"h{i}.txt", **kw)
        pairs_from_exhaustive.main(tmp_path / f"o{i}.txt", **kw)
        assert (tmp_path / f"o{i}.txt").read_text() == (tmp_path / f"h{i}.txt").read_text()
    assert parsers.parse_pairs(tmp_path / "o0.txt")[:2] == [
        ("db/0.jpg", "db/1.jpg"),
        ("db/0.jpg", "db/2.jpg"),
    ]
    for kw, n in [
        ({"features": world["features"]}, 3),
        ({"image_list": refs, "ref_features": world["features"]}, 9),
    ]:
        hloc_pairs_exhaustive.main(tmp_path / "h.txt", **kw)
        pairs_from_exhaustive.main(tmp_path / "o.txt", **kw)
        theirs, ours = (parsers.parse_pairs(tmp_path / f) for f in ("h.txt", "o.txt"))
        same = (
            {frozenset(p) for p in theirs} == {frozenset(p) for p in ours}
            if "features" in kw
            else sorted(theirs) == sorted(ours)
        )  # (query, ref): directed
        assert same and len(ours) == n


def test_retrieval_pairs_equal_hloc(tmp_path):
    """Same database images per query, best first (hloc orders the queries of a prefix in
    ``set`` order, we sort them: compared per query)."""
    rng = np.random.default_rng(1)
    names = [f"db/{i}.jpg" for i in range(12)] + [f"query/{i}.jpg" for i in range(4)]
    vecs = rng.normal(size=(len(names), 32))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    g = io.write_global_descriptors(tmp_path / "global.h5", dict(zip(names, vecs)))
    for kw in [{"query_prefix": "query", "db_prefix": "db"}, {}, {"query_list": names[-2:]}]:
        hloc_pairs_retrieval.main(g, tmp_path / "h.txt", 3, **kw)
        pairs_from_retrieval.main(g, tmp_path / "o.txt", 3, **kw)
        ours, theirs = (hparsers.parse_retrieval(tmp_path / f) for f in ("o.txt", "h.txt"))
        assert ours == theirs and ours, kw


# ------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------
def test_extract_with_hloc_conf_and_positional_order(world, tmp_path):
    """The notebook call ``hloc_extract.main(conf, images, outputs, as_half)`` with hloc's
    own 'sift' conf (dog + rootsift, every keypoint) runs here; hloc extractors we cannot run
    fail with one line."""
    fp = extract_features.main(
        hloc_extract.confs["sift"], world["images"], tmp_path, True, ["db/a.png"]
    )
    assert fp == tmp_path / "feats-sift.h5"
    kp = hio.get_keypoints(fp, "db/a.png")
    with h5py.File(fp) as f:
        d = f["db/a.png/descriptors"][()]
    assert d.dtype == np.float16 and d.shape == (128, len(kp)) and len(kp) > 100
    assert np.all(d >= 0)  # rootsift (hloc's DoG default)
    for name in ("superpoint_aachen", "sosnet", "netvlad"):
        with pytest.raises(ValueError, match="cannot run here|published") as e:
            extract_features.main(hloc_extract.confs[name], world["images"], tmp_path)
        assert "\n" not in str(e.value)


def test_dog_conventions_match_hloc(world, tmp_path):
    """hloc's real DoG extractor (pycolmap SIFT) and ours on the same images: the same blobs at
    the same scale with the same orientation in DEGREES; positions differ by hloc's +0.5 px
    (pycolmap returns COLMAP's corner-origin coordinates, which hloc's DoG stores unchanged),
    i.e. ours sit on hloc's documented convention (pixel centres at integers)."""
    names = ["db/a.png", "query/q.png"]
    theirs = hloc_extract.main(HLOC_SIFT, world["images"], tmp_path, False, names)
    ours = extract_features.main(
        HLOC_SIFT, world["images"], None, False, names, tmp_path / "ours.h5"
    )
    offsets, turns = [], []
    for n in names:
        with h5py.File(theirs) as f:
            kh, sh, oh = (f[n][k][()].astype(np.float64) for k in ("keypoints", "scales", "oris"))
        fo = io.read_features(ours, n)
        ko, so, oo = (fo[k].astype(np.float64) for k in ("keypoints", "scales", "oris"))
        d = np.linalg.norm(ko[:, None] - (kh[None] - 0.5), axis=2)
        j = d.argmin(1)
        ok = (d.min(1) < 0.3) & (np.abs(np.log(sh[j] / so)) < 0.05)
        assert ok.sum() > 20
        offsets.append(kh[j[ok]] - ko[ok])
        turns.append((oh[j[ok]] - oo[ok] + 180) % 360 - 180)
    off, turn = np.concatenate(offsets), np.concatenate(turns)
    np.testing.assert_allclose(np.median(off, 0), [0.5, 0.5], atol=0.05)
    assert np.median(np.abs(turn)) < 5.0
