"""localize.extract_features: hloc layout, resume, empty images, errors, resize mapping, 90 deg rotation,
pipelined extraction (byte-identical), --half, lock, SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from descriptors import registry
from descriptors.data import synth
from descriptors.models import build_model, save_checkpoint
from descriptors.patches import detect_dog, extract_patches, opencv_angle_to_ori
from localize import (
    dog_features,
    extract_features,
    h5,
    image_io,
    io,
    match_features,
    nearest_neighbor,
    parsers,
)

SIFT_SMALL = {**extract_features.confs["sift"], "max_keypoints": 256}
PATCH_SIFT = {**SIFT_SMALL, "opencv_full_image": False}  # registry SIFT on our oriented patches


def _photo(name="camera", side=320):
    return cv2.resize(synth.load_photo(name, gray=True), (side, side), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    (d / "db").mkdir()
    cv2.imwrite(str(d / "db" / "a.png"), _photo("camera"))
    cv2.imwrite(str(d / "db" / "b.jpg"), _photo("coffee", 240))
    cv2.imwrite(str(d / "flat.png"), np.full((96, 128), 128, np.uint8))
    return d


def test_layout_resume_and_empty_image(image_dir, tmp_path, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger="localize.extract_features"):
        fp = extract_features.main(SIFT_SMALL, image_dir, export_dir=tmp_path)
    assert fp == tmp_path / "feats-sift-n4096-r1600.h5"
    assert "no keypoints in image flat.png" in caplog.text
    assert io.list_h5_names(fp) == ["db/a.png", "db/b.jpg", "flat.png"]
    with h5py.File(fp) as f:
        g = f["db"]["a.png"]
        n = g["keypoints"].shape[0]
        assert 50 < n <= 256 and g["keypoints"].shape == (n, 2)
        assert g["keypoints"].dtype == np.float32 and g["descriptors"].shape == (128, n)
        for k in ("scores", "scales", "oris"):
            assert g[k].shape == (n,)
        assert g["image_size"][()].tolist() == [320, 320]
        assert float(g["keypoints"].attrs["uncertainty"]) == pytest.approx(1.0)
        assert f["db/b.jpg/image_size"][()].tolist() == [240, 240]
        e = f["flat.png"]
        assert e["keypoints"].shape == (0, 2) and e["descriptors"].shape == (128, 0)
        assert e["scores"].shape == (0,) and e["image_size"][()].tolist() == [128, 96]
    d = io.get_descriptors(fp, "db/a.png")
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-4)
    kp = io.get_keypoints(fp, "db/a.png")
    assert kp.min() >= -0.5 and kp.max() <= 319.5

    # matching the empty image gives empty matches
    pairs = tmp_path / "pairs.txt"
    parsers.write_pairs(pairs, [("flat.png", "db/a.png"), ("db/a.png", "db/b.jpg")])
    mp = match_features.main("nn-ratio", pairs, fp)
    assert io.get_matches(mp, "flat.png", "db/a.png")[0].shape == (0, 2)
    assert io.get_matches(mp, "db/a.png", "flat.png")[0].shape == (0, 2)

    # resume: nothing left to do -> no image is touched
    monkeypatch.setattr(dog_features, "prepare_image", lambda *a, **k: pytest.fail("re-extracted"))
    assert extract_features.main(SIFT_SMALL, image_dir, export_dir=tmp_path) == fp


def test_missing_image_and_unknown_descriptor(image_dir, tmp_path):
    fp = tmp_path / "f.h5"
    with pytest.raises(image_io.ImageReadError, match="db/nope.png"):
        extract_features.main(
            SIFT_SMALL, image_dir, feature_path=fp, image_list=["db/a.png", "db/nope.png"]
        )
    assert io.list_h5_names(fp) == ["db/a.png"]  # finished work committed, file valid
    with pytest.raises(registry.DescriptorError, match="nosuchnet"):
        extract_features.main(
            SIFT_SMALL, image_dir, feature_path=tmp_path / "g.h5", features_override="nosuchnet"
        )
    with pytest.raises(FileNotFoundError, match="no_dir"):
        extract_features.main(SIFT_SMALL, tmp_path / "no_dir", feature_path=tmp_path / "g.h5")


def test_resize_maps_back_to_original(tmp_path):
    big = _photo("camera", 320)
    conf = {**SIFT_SMALL, "resize_max": 160}
    ex = registry.load("sift")
    f_big = dog_features.extract_image(big, ex, conf)
    small = cv2.resize(big, (160, 160), interpolation=cv2.INTER_AREA)
    f_small = dog_features.extract_image(small, ex, conf)
    np.testing.assert_allclose(
        f_big["keypoints"], (f_small["keypoints"] + 0.5) * 2 - 0.5, atol=1e-4
    )
    np.testing.assert_allclose(f_big["scales"], f_small["scales"] * 2, rtol=1e-5)
    assert f_big["image_size"].tolist() == [320, 320] and f_big["uncertainty"] == pytest.approx(2.0)


def test_contrast_stretch_finds_keypoints_in_a_dark_photo():
    """A photo darkened to grey levels 0..25 gives few DoG keypoints; ``contrast_stretch`` maps
    its percentiles back to 0..255 and finds about as many as in the day photo, at the same
    places; a flat image is left as it is."""
    day = _photo("camera", 320)
    dark = (day.astype(np.float32) * 0.1 + 0.5).astype(np.uint8)
    ex = registry.load("sift")
    conf = {**SIFT_SMALL, "max_keypoints": None}
    n_day = len(dog_features.extract_image(day, ex, conf)["keypoints"])
    n_dark = len(dog_features.extract_image(dark, ex, conf)["keypoints"])
    lit = dog_features.extract_image(dark, ex, {**conf, "contrast_stretch": True})
    assert n_dark < 0.5 * n_day and len(lit["keypoints"]) > 0.7 * n_day, (n_day, n_dark)
    day_kp = dog_features.extract_image(day, ex, conf)["keypoints"]
    d = np.linalg.norm(lit["keypoints"][:, None] - day_kp[None], axis=2).min(1)
    assert np.median(d) < 1.0
    flat = np.full((64, 64), 7, np.uint8)
    assert dog_features.stretch_contrast(flat) is flat
    on = extract_features.provenance({**conf, "contrast_stretch": True})
    off = extract_features.provenance(conf)  # as recorded before the key existed
    assert on != off and "contrast_stretch" not in str(off)


def test_checkpoint_descriptor_half_and_shards(image_dir, tmp_path, monkeypatch):
    torch.manual_seed(0)
    # untrained weights are fine here; skip the (slow on 2 cores) orthogonal init
    monkeypatch.setattr(torch.nn.init, "orthogonal_", lambda w, gain=1.0: w)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", build_model("l2net"), "l2net", {}, "test", 0)
    conf = {**extract_features.confs["hardnet"], "max_keypoints": 24}
    names = ["db/a.png", "db/b.jpg"]
    for i in range(2):
        extract_features.main(
            conf,
            image_dir,
            export_dir=tmp_path,
            image_list=names,
            as_half=True,
            features_override=str(ckpt),
            shard=f"{i}/2",
            device="cpu",
        )
    fp = tmp_path / "feats-tiny-n24-r1600.h5"
    assert io.list_h5_names(h5.shard_path(fp, 1, 2)) == ["db/b.jpg"]
    h5.merge_shards(fp, 2)
    assert io.list_h5_names(fp) == names
    with h5py.File(fp) as f:
        assert f["db/a.png/descriptors"].dtype == np.float16
        assert f["db/a.png/descriptors"].shape == (128, 24)
        assert f["db/a.png/keypoints"].dtype == np.float32
    d = io.get_descriptors(fp, "db/b.jpg")
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=2e-3)


def test_rotation_90_orientation_convention():
    """Rotate by 90 deg: corresponding DoG keypoints must give the same patches / descriptors
    with ori = -deg2rad(kp.angle), and clearly different ones with the opposite sign."""
    img = _photo("camera", 320)
    rot = np.ascontiguousarray(np.rot90(img))  # (x, y) -> (y, W - 1 - x)
    _, xa, sa, aa, _ = detect_dog(img, 256)
    _, xb, sb, ab, _ = detect_dog(rot, 256)

    def isolated(x):  # OpenCV duplicates a location for multiple orientations: skip those
        d = np.linalg.norm(x[:, None] - x[None], axis=2)
        np.fill_diagonal(d, np.inf)
        return d.min(1) > 1.0

    mapped = np.stack([xa[:, 1], img.shape[1] - 1 - xa[:, 0]], 1)
    dist = np.linalg.norm(mapped[:, None] - xb[None], axis=2)
    j = dist.argmin(1)
    ok = (dist.min(1) < 0.5) & isolated(xa) & isolated(xb)[j] & (np.abs(sa - sb[j]) < 0.1 * sa)
    ia, ib = np.where(ok)[0], j[ok]
    assert len(ia) >= 20

    def corr(sign):
        pa = extract_patches(img, xa[ia], sa[ia], sign * opencv_angle_to_ori(aa[ia]))
        pb = extract_patches(rot, xb[ib], sb[ib], sign * opencv_angle_to_ori(ab[ib]))
        pa = pa.reshape(len(ia), -1).numpy()
        pb = pb.reshape(len(ib), -1).numpy()
        pa = pa - pa.mean(1, keepdims=True)
        pb = pb - pb.mean(1, keepdims=True)
        return np.median((pa * pb).sum(1) / np.linalg.norm(pa, axis=1) / np.linalg.norm(pb, axis=1))

    assert corr(+1) > 0.9 and corr(-1) < 0.5
    # full descriptor path (patches -> registry extractor) through extract_image
    ex = registry.load("sift")
    fa = dog_features.extract_image(img, ex, PATCH_SIFT)
    fb = dog_features.extract_image(rot, ex, PATCH_SIFT)
    # same detector, no resize: OpenCV's xy minus its 0.25 px upsampling shift
    np.testing.assert_allclose(fa["keypoints"], xa - dog_features.OPENCV_XY_OFFSET, atol=1e-4)
    da, db = fa["descriptors"], fb["descriptors"]
    assert np.median((da[ia] * db[ib]).sum(1)) > 0.9
    assert np.mean((da[ia] @ db.T).argmax(1) == ib) > 0.9


def test_mr_size_is_the_patch_support():
    """The conf's mr_size is the side of the patches the descriptor sees (in sigma): the
    registry SIFT on extract_image's patches equals SIFT on extract_patches at that support."""
    img = _photo("camera", 320)
    ex = registry.load("sift")
    _, xy, size, angle, _ = detect_dog(img, 128)
    out = {}
    for mr in (12.0, 16.0):
        f = dog_features.extract_image(img, ex, {**PATCH_SIFT, "max_keypoints": 128, "mr_size": mr})
        p = extract_patches(img, xy, size, opencv_angle_to_ori(angle), mr_size=mr)
        np.testing.assert_allclose(f["descriptors"], ex(p), atol=1e-5)
        out[mr] = f["descriptors"]
    assert np.median((out[12.0] * out[16.0]).sum(1)) < 0.95  # a different support


def _tiny_ckpt(tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(torch.nn.init, "orthogonal_", lambda w, gain=1.0: w)
    return save_checkpoint(tmp_path / "tiny.pt", build_model("l2net"), "l2net", {}, "test", 0)


def _datasets(path):
    out = {}
    with h5py.File(path) as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (
                    obj.dtype.str,
                    obj.shape,
                    obj[()].tobytes(),
                    dict(obj.attrs.items()).get("uncertainty"),
                )

        f.visititems(visit)
    return out


@pytest.mark.parametrize("descriptor", ["sift", "tiny"])
def test_pipeline_is_byte_identical_to_sequential(image_dir, tmp_path, monkeypatch, descriptor):
    """Worker pool + prefetch (num_workers=2) writes exactly what extract_image gives per image."""
    names = ["db/a.png", "db/b.jpg", "flat.png"]
    if descriptor == "sift":
        conf, ex = SIFT_SMALL, registry.load("sift")
    else:
        ckpt = _tiny_ckpt(tmp_path, monkeypatch)
        conf = {**extract_features.confs["hardnet"], "max_keypoints": 40, "batch_size": 16}
        ex = registry.load(str(ckpt), device="cpu", batch_size=16)
    ref = tmp_path / "sequential.h5"
    with io.H5Writer(ref) as w:
        for n in names:
            io.write_features(
                w.file,
                n,
                dog_features.extract_image(
                    image_io.read_image(image_dir / n),
                    ex,
                    extract_features.resolve_conf(conf),
                    device="cpu",
                ),
            )
    out = extract_features.main(
        conf,
        image_dir,
        feature_path=tmp_path / "pipelined.h5",
        image_list=names,
        extractor=ex,
        device="cpu",
        num_workers=2,
    )
    a, b = _datasets(ref), _datasets(out)
    assert sorted(a) == sorted(b) and len(a) >= 3 * 5
    for k in a:
        assert a[k] == b[k], k


def test_iter_prepared_order_prefetch_and_errors(image_dir):
    names = ["db/b.jpg", "db/a.png", "flat.png"] * 3
    got = [
        n
        for n, _ in dog_features.iter_prepared(
            names, image_dir, SIFT_SMALL, num_workers=2, prefetch=3
        )
    ]
    assert got == names
    it = dog_features.iter_prepared(
        ["db/a.png", "db/nope.png"], image_dir, SIFT_SMALL, num_workers=2
    )
    assert next(it)[0] == "db/a.png"
    with pytest.raises(image_io.ImageReadError, match="db/nope.png"):
        next(it)


def test_half_autocast_accuracy():
    """bf16 autocast on CPU (the shipped hardnet weights): descriptors within 1e-3 cosine of
    float32 and the same matches on a warped copy (docstring numbers come from this check)."""
    ex = registry.load("hardnet", device="cpu")
    img = _photo("camera", 200)
    warped = cv2.warpPerspective(
        img, np.array([[0.9, 0.1, 12], [-0.08, 0.95, 9], [0, 0, 1]]), (200, 200)
    )
    conf = {**extract_features.confs["hardnet"], "max_keypoints": 48}
    f32 = [dog_features.extract_image(im, ex, conf, device="cpu") for im in (img, warped)]
    f16 = [
        dog_features.extract_image(im, ex, {**conf, "half": True}, device="cpu")
        for im in (img, warped)
    ]
    for a, b in zip(f32, f16):
        np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
        cos = (a["descriptors"] * b["descriptors"]).sum(1)
        assert 0 < 1 - cos.min() < 1e-3
        np.testing.assert_allclose(np.linalg.norm(b["descriptors"], axis=1), 1, atol=1e-5)
    m32, _ = nearest_neighbor.match_descriptors(f32[0]["descriptors"], f32[1]["descriptors"], 0.9)
    m16, _ = nearest_neighbor.match_descriptors(f16[0]["descriptors"], f16[1]["descriptors"], 0.9)
    assert (m32 >= 0).sum() >= 10 and np.mean(m32 == m16) >= 0.95


def test_lock_and_partial_foreign_entry(image_dir, tmp_path):
    fp = tmp_path / "f.h5"
    with h5py.File(fp, "w") as f:  # hloc-style entry with descriptors but no keypoints
        f.create_group("db/a.png").create_dataset("descriptors", data=np.zeros((128, 3)))
    with io.H5Writer(fp):
        with pytest.raises(io.H5Error, match=rf"f.h5 is being written .*pid {os.getpid()}"):
            extract_features.main(SIFT_SMALL, image_dir, feature_path=fp, image_list=["db/a.png"])
    extract_features.main(SIFT_SMALL, image_dir, feature_path=fp, image_list=["db/a.png"])
    assert io.get_keypoints(fp, "db/a.png").shape[0] > 50  # repaired, not skipped


def test_cli_sigterm_commits_and_resumes(image_dir, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = _photo("camera", 128)
    for i in range(12):
        cv2.imwrite(str(imgs / f"{i:02d}.png"), np.roll(src, 7 * i, axis=1))
    fp = tmp_path / "feats.h5"
    cmd = [
        sys.executable,
        "-m",
        "localize.extract_features",
        "--conf",
        "sift",
        "--image_dir",
        str(imgs),
        "--feature_path",
        str(fp),
        "--max_keypoints",
        "64",
        "--commit_interval",
        "1000",
    ]
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(
        cmd, cwd=root, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    for line in child.stderr:  # wait until extraction runs, then stop it
        if "extracting sift" in line:
            break
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    assert not h5.lock_path(fp).exists() and sorted(os.listdir(tmp_path)) == ["feats.h5", "imgs"]
    partial = io.list_h5_names(fp)
    assert partial == io.list_h5_names(fp, include_incomplete=True)  # all committed
    assert len(partial) < 12
    ex, conf = registry.load("sift"), {**extract_features.confs["sift"], "max_keypoints": 64}
    extract_features.main(
        conf, imgs, feature_path=fp
    )  # resume in-process (a torch import costs ~20 s)
    assert len(io.list_h5_names(fp)) == 12
    for n in partial[-1:] + ["11.png"]:  # one from each run: same as a clean extraction
        ref = dog_features.extract_image(image_io.read_image(imgs / n), ex, conf)
        np.testing.assert_array_equal(io.get_descriptors(fp, n), ref["descriptors"])


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--max_keypoints", "0"),
        ("--max_keypoints", "-5"),
        ("--resize_max", "-5"),
        ("--resize_max", "0"),
    ],
)
def test_cli_rejects_bad_numeric_flags(tmp_path, flag, value, capsys):
    """Issue 9 item 5: 0 / -5 no longer mean 'unlimited' or shrink images to 1x1."""
    from localize import extract_features

    with pytest.raises(SystemExit) as e:
        extract_features.cli(
            [
                "--conf",
                "sift",
                "--image_dir",
                str(tmp_path),
                "--export_dir",
                str(tmp_path),
                flag,
                value,
            ]
        )
    assert e.value.code == 2
    assert ">= 1" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.h5"))


def test_conf_limits_validated_and_all_is_explicit():
    from localize import extract_features

    with pytest.raises(ValueError, match="max_keypoints"):
        extract_features.resolve_conf({"descriptor": "sift", "max_keypoints": 0})
    with pytest.raises(ValueError, match="resize_max"):
        extract_features.resolve_conf({"descriptor": "sift", "resize_max": -5})
    for bad in (0, -3.0, float("nan"), "16", True):
        with pytest.raises(ValueError, match="mr_size"):
            extract_features.resolve_conf({"descriptor": "sift", "mr_size": bad})
    assert extract_features._keypoint_count("all") == "all"
    assert (
        extract_features.resolve_conf({"descriptor": "sift", "max_keypoints": None})[
            "max_keypoints"
        ]
        is None
    )


def _blob(x0: float, y0: float, side: int = 128, sigma: float = 4.0) -> np.ndarray:
    """A Gaussian blob centred at (x0, y0) in pixel-centre coordinates (pixel i covers
    [i - 0.5, i + 0.5]), on a flat background."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
    return (40 + 180 * g).round().astype(np.uint8)


@pytest.mark.parametrize("x0,y0", [(63.0, 63.0), (60.3, 70.6), (50.75, 80.25)])
def test_keypoints_sit_on_the_blob_centre(x0, y0):
    """hloc's convention (pixel centres at integers, what COLMAP import adds 0.5 to): a blob at
    a known sub-pixel position is stored there, at full and at half resolution; OpenCV's own
    xy are OPENCV_XY_OFFSET (0.25 px) right of / below it."""
    ex = registry.load("sift")
    for img, conf in [
        (_blob(x0, y0), SIFT_SMALL),
        (
            _blob(2 * x0 + 0.5, 2 * y0 + 0.5, 256, 8.0),  # same blob, 2x larger
            {**SIFT_SMALL, "resize_max": 128},
        ),
    ]:
        f = dog_features.extract_image(img, ex, conf)
        k = int(np.argmax(f["scales"]))  # the blob itself (largest DoG scale)
        s = img.shape[1] / 128
        np.testing.assert_allclose(
            f["keypoints"][k], [(x0 + 0.5) * s - 0.5, (y0 + 0.5) * s - 0.5], atol=0.06 * s
        )
    _, xy, size, _, _ = detect_dog(_blob(x0, y0), 16, 0.01)
    k = int(np.argmax(size))
    np.testing.assert_allclose(xy[k] - dog_features.OPENCV_XY_OFFSET, [x0, y0], atol=0.06)


def test_keypoints_and_oris_follow_a_90_degree_rotation():
    """np.rot90 maps pixel centres (x, y) -> (y, W - 1 - x) exactly: stored keypoints follow it
    to ~0 px (OpenCV's raw xy miss by 2 * 0.25 px on one axis), and stored oris (degrees, hloc's
    DoG convention) all turn by -90."""
    img = _photo("camera", 320)
    rot = np.ascontiguousarray(np.rot90(img))
    ex = registry.load("sift")
    fa, fb = (dog_features.extract_image(im, ex, SIFT_SMALL) for im in (img, rot))
    mapped = np.stack([fa["keypoints"][:, 1], 319 - fa["keypoints"][:, 0]], 1)
    d = np.linalg.norm(mapped[:, None] - fb["keypoints"][None], axis=2)
    j, ok = d.argmin(1), d.min(1) < 0.6
    assert ok.sum() > 100 and np.median(d.min(1)[ok]) < 0.02
    _, xa, _, _, _ = detect_dog(img, 256)
    _, xb, _, _, _ = detect_dog(rot, 256)
    raw = np.linalg.norm(np.stack([xa[:, 1], 319 - xa[:, 0]], 1)[:, None] - xb[None], axis=2)
    assert abs(np.median(raw.min(1)[raw.min(1) < 0.8]) - 2 * dog_features.OPENCV_XY_OFFSET) < 0.05
    assert fa["oris"].min() >= -180 and fa["oris"].max() < 180
    turn = (fb["oris"][j[ok]] - fa["oris"][ok] + 180) % 360 - 180
    assert np.median(np.abs(turn + 90)) < 1.0


def test_hloc_conf_is_translated_or_refused():
    """hloc's nested conf: 'dog' with one of our descriptors runs with hloc's defaults (rootsift,
    every keypoint); any other extractor or descriptor is a one-line error."""
    c = extract_features.resolve_conf(
        {
            "output": "feats-sift",
            "model": {"name": "dog"},
            "preprocessing": {"grayscale": True, "resize_max": 1600},
        }
    )
    assert (c["descriptor"], c["max_keypoints"], c["resize_max"], c["output"]) == (
        "rootsift",
        None,
        1600,
        "feats-sift",
    )
    c = extract_features.resolve_conf(
        {"model": {"name": "dog", "descriptor": "sdb", "max_keypoints": 500}, "preprocessing": {}}
    )
    assert (c["descriptor"], c["max_keypoints"], c["resize_max"]) == ("sdb", 500, None)
    assert c["output"] == extract_features.output_name("sdb", 500, None) == "feats-sdb-n500-rfull"
    # hloc's DoG support unless the hloc conf names one; our own confs cut wider patches
    assert c["mr_size"] == extract_features.HLOC_DOG_MR_SIZE == 12.0
    c = extract_features.resolve_conf({"model": {"name": "dog", "descriptor": "sdb", "mr_size": 9}})
    assert c["mr_size"] == 9
    assert extract_features.resolve_conf("sdb")["mr_size"] == 16.0
    # hloc's 'hardnet' / 'sosnet' mean the PUBLISHED weights: a file must be named, never ours
    for name in ("hardnet", "sosnet"):
        with pytest.raises(ValueError, match="published") as e:
            extract_features.resolve_conf({"model": {"name": "dog", "descriptor": name}})
        assert "\n" not in str(e.value)
    c = extract_features.resolve_conf(
        {"model": {"name": "dog", "descriptor": "hardnet", "weights": "/x/HardNet++.pth"}}
    )
    assert c["descriptor"] == "/x/HardNet++.pth"
    for bad, needle in [
        ({"name": "superpoint", "max_keypoints": 4096}, "superpoint"),
        ({"name": "dog", "descriptor": "sosnet"}, "sosnet"),
        ({"name": "dog", "descriptor": "orb"}, "orb"),
        ({"name": "dog", "nms_radius": 3}, "nms_radius"),
    ]:
        with pytest.raises(ValueError, match=needle) as e:
            extract_features.resolve_conf({"output": "x", "model": bad, "preprocessing": {}})
        assert "\n" not in str(e.value)
    assert registry.NAMES[:2] == registry.OPENCV_NAMES


def test_hloc_positional_order(image_dir, tmp_path):
    """extract_features.main(conf, image_dir, export_dir, as_half, image_list, feature_path, overwrite)."""
    fp = extract_features.main(SIFT_SMALL, image_dir, tmp_path, True, ["db/a.png"])
    assert fp == tmp_path / f"{SIFT_SMALL['output']}.h5" and io.list_h5_names(fp) == ["db/a.png"]
    with h5py.File(fp) as f:
        assert f["db/a.png/descriptors"].dtype == np.float16
    other = tmp_path / "other.h5"
    assert (
        extract_features.main(SIFT_SMALL, image_dir, None, False, ["db/a.png"], other, True)
        == other
    )
    with h5py.File(other) as f:
        assert f["db/a.png/descriptors"].dtype == np.float32
