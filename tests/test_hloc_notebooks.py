"""hloc's ``pipeline_SfM`` and ``demo`` notebook cells on descloc's stages.

Each cell is hloc's (notebooks/pipeline_SfM.ipynb, notebooks/demo.ipynb at hloc c13273b) with
only two kinds of change: ``from hloc import`` -> ``from localize import`` and descloc's conf
names (``netvlad`` -> ``vlad``, ``superpoint_aachen`` / ``aliked-n16`` -> ``sift`` /
``rootsift``, ``superglue`` / ``aliked+lightglue`` -> ``NN-ratio``). Left out: the download
cells (the scene is the project's synthetic one, rendered here) and ``hloc.utils.viz_3d``
(plotly, not a dependency). No hloc needed.

With ``HLOC_SRC`` set to an hloc checkout, the demo cells also run on hloc itself (``from hloc
import``, hloc's conf names: its ``sift`` is the RootSIFT our ``rootsift`` names) on the same
photos, and the two runs are compared: both register every mapping photo and localize the night
query, with the same relative pose to the mapping photos (the two models differ by a similarity).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pycolmap
import pytest

from localize import parsers
from localize.data import render as rnd
from localize.data import scene as scn


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A folder of photos in the demo notebook's layout: ``mapping/*.jpg`` (8 renders of the
    synthetic plaza from an arc of viewpoints, as tests/test_sfm.py) and one night render from
    inside the arc, ``query/night.jpg``; no poses handed over."""
    images = tmp_path_factory.mktemp("nb") / "images"
    (images / "mapping").mkdir(parents=True)
    (images / "query").mkdir()
    world = scn.make_street_scene(0)
    W, H = 480, 360
    K = rnd.intrinsics(W, H, 60.0)
    truth = {}
    for i, x in enumerate(np.linspace(-6, 6, 8)):
        c = np.array([x, -1.6 - 0.5 * np.cos(i), 8.0 - 0.08 * x * x])
        R, t = rnd.look_at_point(c, (0.4 * x, -6.0, 32.0))
        rnd.write_rgb(images / "mapping" / f"{i:02d}.jpg", rnd.render(world, K, R, t, W, H))
        truth[f"mapping/{i:02d}.jpg"] = (R, t)
    R, t = rnd.look_at_point(np.array([1.0, -1.8, 7.9]), (0.4, -6.0, 32.0))
    rnd.write_rgb(
        images / "query" / "night.jpg", rnd.render(world, K, R, t, W, H, night=True, rng=1)
    )
    truth["query/night.jpg"] = (R, t)
    np.save(images.parent / "truth.npy", truth, allow_pickle=True)  # name -> (R, t) cam_from_world
    return images


def test_pipeline_sfm_notebook(scene, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # --- cell: imports (hloc -> localize)
    from localize import (
        extract_features,
        match_features,
        pairs_from_retrieval,
        reconstruction,
        visualization,
    )

    # --- cell: paths and confs (descloc conf names)
    images = scene / "mapping"
    outputs = Path("outputs/sfm/")
    sfm_pairs = outputs / "pairs-netvlad.txt"
    sfm_dir = outputs / "sfm_superpoint+superglue"
    retrieval_conf = extract_features.confs["vlad"]
    feature_conf = extract_features.confs["sift"]
    matcher_conf = match_features.confs["NN-ratio"]
    # --- cell
    retrieval_path = extract_features.main(retrieval_conf, images, outputs)
    pairs_from_retrieval.main(retrieval_path, sfm_pairs, num_matched=5)
    # --- cell
    feature_path = extract_features.main(feature_conf, images, outputs)
    match_path = match_features.main(matcher_conf, sfm_pairs, feature_conf["output"], outputs)
    # --- cell
    model = reconstruction.main(sfm_dir, images, sfm_pairs, feature_path, match_path)
    # --- cells: pictures
    visualization.visualize_sfm_2d(model, images, color_by="visibility", n=5)
    visualization.visualize_sfm_2d(model, images, color_by="track_length", n=5)
    visualization.visualize_sfm_2d(model, images, color_by="depth", n=5)

    assert model.num_reg_images() == 8 and model.num_points3D() > 100
    assert len(parsers.parse_pairs(sfm_pairs)) > 0


#: the demo cells' conf names per library (hloc's ``sift`` is RootSIFT)
DEMO_CONFS = {"localize": ("rootsift", "NN-ratio"), "hloc": ("sift", "NN-ratio")}


def _stages(lib: str) -> SimpleNamespace:
    """The modules the demo notebook imports, from ``localize`` or from hloc."""
    names = ["extract_features", "match_features", "pairs_from_exhaustive", "reconstruction"]
    names += ["visualization", "localize_sfm"]
    return SimpleNamespace(**{n: importlib.import_module(f"{lib}.{n}") for n in names})


def run_demo_cells(lib: str, images: Path) -> dict:
    """hloc's demo notebook cells with ``from hloc import`` -> ``from {lib} import``; run in
    the current directory. Returns the model, the query's pose result and the references."""
    m = _stages(lib)
    extract_features, match_features = m.extract_features, m.match_features
    pairs_from_exhaustive, reconstruction = m.pairs_from_exhaustive, m.reconstruction
    visualization = m.visualization
    plot_images, read_image = visualization.plot_images, visualization.read_image
    QueryLocalizer, pose_from_cluster = (
        m.localize_sfm.QueryLocalizer,
        m.localize_sfm.pose_from_cluster,
    )
    # --- cell
    outputs = Path("outputs/demo/")
    sfm_pairs = outputs / "pairs-sfm.txt"
    loc_pairs = outputs / "pairs-loc.txt"
    sfm_dir = outputs / "sfm"
    features = outputs / "features.h5"
    matches = outputs / "matches.h5"
    feature_conf = extract_features.confs[DEMO_CONFS[lib][0]]
    matcher_conf = match_features.confs[DEMO_CONFS[lib][1]]
    # --- cell
    references = sorted(p.relative_to(images).as_posix() for p in (images / "mapping/").iterdir())
    plot_images([read_image(images / r) for r in references], dpi=25)
    # --- cell
    extract_features.main(feature_conf, images, image_list=references, feature_path=features)
    pairs_from_exhaustive.main(sfm_pairs, image_list=references)
    match_features.main(matcher_conf, sfm_pairs, features=features, matches=matches)
    # --- cell
    model = reconstruction.main(
        sfm_dir, images, sfm_pairs, features, matches, image_list=references
    )
    # --- cell
    visualization.visualize_sfm_2d(model, images, color_by="visibility", n=2)
    # --- cell
    query = "query/night.jpg"
    plot_images([read_image(images / query)], dpi=75)
    # --- cell
    extract_features.main(
        feature_conf, images, image_list=[query], feature_path=features, overwrite=True
    )
    pairs_from_exhaustive.main(loc_pairs, image_list=[query], ref_list=references)
    match_features.main(matcher_conf, loc_pairs, features=features, matches=matches, overwrite=True)
    # --- cell
    camera = pycolmap.infer_camera_from_image(images / query)
    ref_ids = [model.find_image_with_name(r).image_id for r in references]
    conf = {
        "estimation": {"ransac": {"max_error": 12}},
        "refinement": {"refine_focal_length": True, "refine_extra_params": True},
    }
    localizer = QueryLocalizer(model, conf)
    ret, log = pose_from_cluster(localizer, query, camera, ref_ids, features, matches)

    print(f"found {ret['num_inliers']}/{len(ret['inlier_mask'])} inlier correspondences.")
    visualization.visualize_loc_from_log(images, query, log, model)
    return {"model": model, "ret": ret, "log": log, "references": references}


def _check_demo(run: dict) -> None:
    model, ret, log = run["model"], run["ret"], run["log"]
    assert model.num_reg_images() == len(run["references"])
    assert ret["num_inliers"] >= 20 and ret["inlier_mask"].shape == (len(log["points3D_ids"]),)
    assert np.isfinite(ret["cam_from_world"].matrix()).all()


def test_demo_notebook(scene, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _check_demo(run_demo_cells("localize", scene))


def query_error(run: dict, truth: dict) -> tuple[float, float]:
    """The query's centre error (metres) and rotation error (degrees) against the rendered
    truth, after a Sim3 of the model to the true mapping centres (pycolmap)."""
    centers = {n: -R.T @ t for n, (R, t) in truth.items()}
    names = run["references"]
    ro = pycolmap.RANSACOptions()
    ro.max_error = 0.5
    sim = pycolmap.align_reconstruction_to_locations(
        run["model"], names, np.stack([centers[n] for n in names]), 3, ro
    )
    q = run["ret"]["cam_from_world"]
    c = sim * np.asarray(q.inverse().translation)
    R = np.asarray(q.rotation.matrix()) @ np.asarray(sim.rotation.matrix()).T
    Rt = truth["query/night.jpg"][0]
    angle = np.degrees(np.arccos(np.clip((np.trace(R.T @ Rt) - 1) / 2, -1, 1)))
    return float(np.linalg.norm(c - centers["query/night.jpg"])), float(angle)


@pytest.mark.skipif(not os.environ.get("HLOC_SRC"), reason="set HLOC_SRC to an hloc checkout")
def test_demo_notebook_same_on_hloc(scene, tmp_path, monkeypatch):
    """The same cells on hloc itself and on descloc: same registrations, same query pose."""
    src = Path(os.environ["HLOC_SRC"])
    if not (src / "hloc" / "__init__.py").is_file():
        pytest.fail(f"HLOC_SRC={src} is not an hloc checkout")
    monkeypatch.syspath_prepend(str(src))
    import matplotlib

    matplotlib.use("Agg")
    runs = {}
    for lib in ("hloc", "localize"):
        (tmp_path / lib).mkdir()
        monkeypatch.chdir(tmp_path / lib)
        runs[lib] = run_demo_cells(lib, scene)
        _check_demo(runs[lib])
    ours, theirs = runs["localize"], runs["hloc"]
    assert ours["model"].num_reg_images() == theirs["model"].num_reg_images()
    n_ours, n_hloc = ours["model"].num_points3D(), theirs["model"].num_points3D()
    print(
        f"points3D: descloc {n_ours}, hloc {n_hloc}; query inliers: "
        f"descloc {ours['ret']['num_inliers']}, hloc {theirs['ret']['num_inliers']}"
    )
    assert n_ours >= 0.5 * n_hloc
    truth = np.load(scene.parent / "truth.npy", allow_pickle=True).item()
    (e_ours, a_ours), (e_hloc, a_hloc) = query_error(ours, truth), query_error(theirs, truth)
    print(
        f"query error: descloc {e_ours:.3f} m {a_ours:.2f} deg, hloc {e_hloc:.3f} m {a_hloc:.2f} deg"
    )
    # as accurate as hloc on the same photos (a small tolerance for a near-equal pair)
    assert e_ours <= max(1.2 * e_hloc, 0.25) and a_ours <= max(1.2 * a_hloc, 1.0)
    sys.modules.pop("hloc", None)
