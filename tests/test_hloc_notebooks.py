"""hloc's ``pipeline_SfM`` and ``demo`` notebook cells on descloc's stages.

Each cell is hloc's (notebooks/pipeline_SfM.ipynb, notebooks/demo.ipynb at hloc c13273b) with
only two kinds of change: ``from hloc import`` -> ``from localize import`` and descloc's conf
names (``netvlad`` -> ``vlad``, ``superpoint_aachen`` / ``aliked-n16`` -> ``sift`` /
``rootsift``, ``superglue`` / ``aliked+lightglue`` -> ``NN-ratio``). Left out: the download
cells (the scene is the project's synthetic one, rendered here) and ``hloc.utils.viz_3d``
(plotly, not a dependency). No hloc needed.
"""

from __future__ import annotations

from pathlib import Path

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
    for i, x in enumerate(np.linspace(-6, 6, 8)):
        c = np.array([x, -1.6 - 0.5 * np.cos(i), 8.0 - 0.08 * x * x])
        R, t = rnd.look_at_point(c, (0.4 * x, -6.0, 32.0))
        rnd.write_rgb(images / "mapping" / f"{i:02d}.jpg", rnd.render(world, K, R, t, W, H))
    R, t = rnd.look_at_point(np.array([1.0, -1.8, 7.9]), (0.4, -6.0, 32.0))
    rnd.write_rgb(
        images / "query" / "night.jpg", rnd.render(world, K, R, t, W, H, night=True, rng=1)
    )
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


def test_demo_notebook(scene, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from localize import (
        extract_features,
        match_features,
        pairs_from_exhaustive,
        reconstruction,
        visualization,
    )
    from localize.visualization import plot_images, read_image

    # --- cell
    images = scene
    outputs = Path("outputs/demo/")
    sfm_pairs = outputs / "pairs-sfm.txt"
    loc_pairs = outputs / "pairs-loc.txt"
    sfm_dir = outputs / "sfm"
    features = outputs / "features.h5"
    matches = outputs / "matches.h5"
    feature_conf = extract_features.confs["rootsift"]
    matcher_conf = match_features.confs["NN-ratio"]
    # --- cell
    references = [p.relative_to(images).as_posix() for p in (images / "mapping/").iterdir()]
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
    from localize.localize_sfm import QueryLocalizer, pose_from_cluster

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

    assert model.num_reg_images() == len(references)
    assert ret["num_inliers"] >= 20 and ret["inlier_mask"].shape == (len(log["points3D_ids"]),)
    assert np.isfinite(ret["cam_from_world"].matrix()).all()
