"""SfM from unposed photos (``localize.reconstruction``, ``pipelines.sfm``), sequential pairs,
the ``vlad`` retrieval conf, patches from unposed photos, bad input.

The photos: 8 renders (480x360, 60 deg field of view) of the synthetic plaza
(``localize.data.scene``) from an arc of camera centres 10-12 m wide, 24 m in front of the
north facades, handed to the pipeline WITHOUT poses; the renderer's cameras are the ground truth
(a COLMAP model, ``--gt``).

Bound on the camera-centre error after the robust Sim3 to the true centres: 0.25 m for the median
view and 0.6 m for the worst. At 24 m depth one pixel of the 416 px focal length is 6 cm on the
facade; with sub-pixel SIFT (0.25 px reprojection error) the relative poses are good to
~0.1 deg, and the rest of the error is the Sim3 fitted on 8 nearly coplanar centres (measured:
median 0.06 m, worst 0.29 m incremental / 0.13 m global; rotation 1.0 deg for every view, the
alignment's own tilt: relative rotations agree within 0.1 deg).
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest

from localize import colmap, extract_features, io, pairs_from_retrieval, parsers, reconstruction
from localize import pairs_from_sequential as seq
from localize.data import render as rnd
from localize.data import scene as scn
from localize.geometry import rotmat_to_qvec

N_VIEWS = 8
FAST = {"max_keypoints": 1024, "num_threads": 1, "progress": False}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """(photo folder without poses, ground-truth COLMAP model folder)."""
    root = tmp_path_factory.mktemp("sfm")
    world = scn.make_street_scene(0)
    W, H = 480, 360
    K = rnd.intrinsics(W, H, 60.0)
    (root / "photos").mkdir()
    cams, ims = [], []
    for i, x in enumerate(np.linspace(-6, 6, N_VIEWS)):
        c = np.array([x, -1.6 - 0.5 * np.cos(i), 8.0 - 0.08 * x * x])
        R, t = rnd.look_at_point(c, (0.4 * x, -6.0, 32.0))
        rnd.write_rgb(root / "photos" / f"{i:03d}.jpg", rnd.render(world, K, R, t, W, H))
        cams.append(
            {"model": "SIMPLE_RADIAL", "width": W, "height": H, "params": rnd.colmap_params(K)}
        )
        ims.append(
            {"name": f"{i:03d}.jpg", "camera_idx": i, "qvec_wxyz": rotmat_to_qvec(R), "tvec": t}
        )
    colmap.write_reference_model(root / "gt", cams, ims)
    return root / "photos", root / "gt"


@pytest.fixture(scope="module")
def incremental(photos, tmp_path_factory):
    from pipelines import sfm

    out = tmp_path_factory.mktemp("out")
    return sfm.run(photos[0], "sift", out, gt=photos[1], mapper="incremental", **FAST)


@pytest.mark.parametrize("mapper", ["incremental", "global"])
def test_every_view_registered_and_near_the_true_cameras(photos, incremental, mapper):
    from pipelines import sfm

    s = (
        incremental
        if mapper == "incremental"
        else sfm.run(
            photos[0],
            "sift",
            Path(incremental["out_dir"]).parent,
            gt=photos[1],
            mapper=mapper,
            **FAST,
        )
    )
    r, e = s["reconstruction"], s["evaluation"]
    assert r["num_reg_images"] == N_VIEWS and r["registered"] == f"{N_VIEWS} of 8 registered"
    assert r["num_points3D"] > 200 and r["mean_reprojection_error_px"] < 1.0
    assert e["aligned"] and e["num_registered_gt"] == N_VIEWS
    err = np.array([v[0] for v in e["per_view"].values()])
    assert np.median(err) < 0.25 and err.max() < 0.6, err
    assert e["within_25cm_2deg"] >= 0.75
    # the model folder is a COLMAP model and the summary was written
    assert colmap.read_model(s["paths"]["sfm"]).num_reg_images() == N_VIEWS
    assert Path(s["paths"]["results"]).is_file()
    if mapper == "global":  # features and matches of the first run were reused
        assert s["pairs_method"].startswith("cached")


def test_reconstruction_main_has_hlocs_parameters():
    hloc_params = [
        "sfm_dir",
        "image_dir",
        "pairs",
        "features",
        "matches",
        "camera_mode",
        "verbose",
        "skip_geometric_verification",
        "min_match_score",
        "image_list",
        "image_options",
        "mapper_options",
    ]
    sig = inspect.signature(reconstruction.main)
    positional = [
        n for n, p in sig.parameters.items() if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    assert positional == hloc_params
    assert sig.parameters["verbose"].default is False
    assert sig.parameters["skip_geometric_verification"].default is False
    assert str(sig.parameters["camera_mode"].default).endswith("AUTO")
    assert sig.parameters["mapper"].kind == inspect.Parameter.KEYWORD_ONLY


def test_sequential_pairs_order_overlap_loop_closure(tmp_path):
    names = [f"f{i:02d}.jpg" for i in range(12)]
    p = seq.sequential(names, overlap=2)
    assert p[:3] == [("f00.jpg", "f01.jpg"), ("f00.jpg", "f02.jpg"), ("f01.jpg", "f02.jpg")]
    assert len(p) == 11 + 10
    q = seq.sequential(names, overlap=3, quadratic_overlap=True)  # steps 1, 2, 3 and 4
    assert ("f00.jpg", "f04.jpg") in q and ("f00.jpg", "f05.jpg") not in q
    # loop closure: frame 11 looks like frame 0 (the walk came back)
    vec = {n: np.eye(12, dtype=np.float32)[i] for i, n in enumerate(names)}
    vec["f11.jpg"] = (vec["f00.jpg"] + 0.1 * vec["f11.jpg"]) / np.sqrt(1.01)
    g = io.write_global_descriptors(
        tmp_path / "g.h5", vec, {n: np.array([640, 480]) for n in names}
    )
    out = seq.main(
        tmp_path / "pairs.txt",
        names,
        overlap=2,
        loop_closure=True,
        retrieval_path=g,
        retrieval_interval=11,
        num_loc=1,
    )
    pairs = parsers.parse_pairs(out)
    assert ("f00.jpg", "f11.jpg") in pairs or ("f11.jpg", "f00.jpg") in pairs
    assert len(pairs) == len(set(map(frozenset, pairs))) == 21 + 1
    with pytest.raises(ValueError, match="retrieval_path"):
        seq.from_sequence(names, loop_closure=True)


def test_vlad_conf_feeds_pairs_from_retrieval(photos, tmp_path):
    """hloc's pipeline_SfM cell: extract_features.main(retrieval_conf, images, outputs) then
    pairs_from_retrieval.main(retrieval_path, sfm_pairs, num_matched=5)."""
    conf = {**extract_features.confs["vlad"], "max_keypoints": 512, "resize_max": 320}
    path = extract_features.main(conf, photos[0], tmp_path)
    assert path == tmp_path / "global-feats-vlad.h5"
    pairs = parsers.parse_pairs(
        pairs_from_retrieval.main(path, tmp_path / "pairs.txt", num_matched=5)
    )
    assert len(pairs) == N_VIEWS * 5
    # neighbours on the arc are retrieved first
    first = {q: d for q, d in reversed(pairs)}
    assert sum(abs(int(q[:3]) - int(d[:3])) == 1 for q, d in first.items()) >= N_VIEWS - 2


def test_make_patches_without_poses_reads_back(photos, tmp_path):
    from descriptors.data.phototour import read_phototour
    from pipelines import make_patches

    s = make_patches.main(
        [
            "--images",
            str(photos[0]),
            "--out",
            str(tmp_path / "pt" / "scene"),
            "--sfm_features",
            "sift",
            "--sfm_outputs",
            str(tmp_path / "sfm"),
            "--sfm_max_keypoints",
            "1024",
            "--conf",
            "fast",
            "--max_keypoints",
            "400",
            "--num_matched",
            "3",
            "--max_pairs",
            "2000",
        ]
    )
    d = read_phototour(tmp_path / "pt" / "scene", progress=False)
    assert len(d) == s["patches"] > 300 and d.n_points == s["tracks"]
    assert d.patches.shape[1:] == (64, 64) and s["views"] == N_VIEWS


def test_bad_input(photos, incremental, tmp_path, capsys):
    from pipelines import sfm

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(photos[0] / "000.jpg", one / "000.jpg")
    with pytest.raises(SystemExit) as e:
        sfm.main(["--images", str(one), "--features", "sift", "--outputs", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at least two images" in err
    # a truncated photo: one line naming it
    bad = tmp_path / "bad"
    shutil.copytree(photos[0], bad)
    (bad / "002.jpg").write_bytes((photos[0] / "002.jpg").read_bytes()[:3000])
    with pytest.raises(SystemExit) as e:
        sfm.main(["--images", str(bad), "--features", "sift", "--outputs", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert e.value.code == 2 and err.startswith("pipelines.sfm: ") and "002.jpg" in err
    # identical photos: a result, not a crash
    same = tmp_path / "same"
    same.mkdir()
    for i in range(3):
        shutil.copy(photos[0] / "003.jpg", same / f"{i}.jpg")
    s = sfm.run(same, "sift", tmp_path / "o", **FAST)
    assert s["reconstruction"]["registered"] == "0 of 3 registered"
    # an existing, non-empty sfm_dir of another run is refused (one line), then replaced
    p = incremental["paths"]
    with pytest.raises(colmap.ColmapError, match="not empty"):
        reconstruction.main(
            Path(p["sfm"]), photos[0], Path(p["pairs"]), Path(p["features"]), Path(p["matches"])
        )


def test_train_from_an_sfm_map(incremental, tmp_path):
    """train_and_localize --from-map takes a pipelines.sfm map (its sfm-* folder): patches from
    its registered photos and model (one set for every recipe), fine-tuning only (the map has no
    queries); every patch recipe fine-tunes its shipped network as it is."""
    from descriptors import registry
    from descriptors.models import read_checkpoint
    from descriptors.registry import weights_path
    from localize import extract_features
    from pipelines import train_and_localize as tl

    conf = {"resize_max": 480, "max_keypoints": 400, "min_tri_angle_deg": 1.0, "max_pairs": 1000}
    s = tl.run_from_map("hardnet", incremental["paths"]["sfm"], tmp_path, steps=1, patch_conf=conf)
    assert set(s["patches"]["view_ids"]) == {f"{i:03d}.jpg" for i in range(N_VIEWS)}
    assert s["patches"]["tracks"] > 50 and Path(s["checkpoint"]).is_file()
    # cut at the extraction support, as the queries will be described
    assert s["patches"]["conf"]["mr_size"] == extract_features.default_conf["mr_size"]
    # and with the night renderings of every view: night patches of the same tracks
    assert s["patches"]["conf"]["night_copies"] == tl.FROM_MAP_NIGHT >= 1
    assert s["rows"] == {}
    for name in ("sdb", "fracking"):
        f = tl.finetune_on_map(
            name, incremental["paths"]["sfm"], tmp_path, steps=1, patch_conf=conf
        )
        assert f["patches"] == s["patches"]  # the same patch set, reused
        assert registry.load(f["checkpoint"]).patch_size == registry.load(name).patch_size
        ours, shipped = read_checkpoint(f["checkpoint"]), read_checkpoint(weights_path(name))
        assert ours["arch_kwargs"] == shipped["arch_kwargs"]
        assert ours["meta"]["night_copies"] == tl.FROM_MAP_NIGHT
