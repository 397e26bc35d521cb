"""hloc compatibility as a contract: real hloc functions on our files, ours on hloc's.

Runs only when ``HLOC_SRC`` points to an hloc checkout (``HLOC_SRC=/work/scratch/hloc``);
skipped otherwise. Uses the tiny hand-made scene of ``tests/test_localize.py`` (5 posed views of
a random point cloud, exact keypoints, true matches), so it takes seconds.

- ``hloc.triangulation.main`` on our features.h5 / matches.h5 / pairs + reference model, and our
  ``localize.triangulation.main`` on files written the way hloc's extractors / matchers write them
  (same positional arguments);
- ``hloc.localize_sfm.main`` and ours on the same inputs (same positional arguments): the same
  poses; ``hloc.visualization.visualize_loc`` reading our ``<results>_logs.pkl``;
- ``hloc.utils.parsers.parse_image_lists`` / ``parse_retrieval`` on our query list and pairs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from test_localize import CAM, H, W, make_queries, world  # noqa: F401  (fixture reused)

from localize import colmap, io, parsers
from localize import evaluate as ev
from localize import localize_sfm as loc
from localize import triangulation as tri

HLOC_SRC = os.environ.get("HLOC_SRC")
pytestmark = pytest.mark.skipif(not HLOC_SRC, reason="set HLOC_SRC to an hloc checkout")


@pytest.fixture(scope="module")
def hloc():
    """The hloc package of ``HLOC_SRC`` (its import failing is a test failure, not a skip)."""
    if not (Path(HLOC_SRC) / "hloc" / "__init__.py").is_file():
        pytest.fail(f"HLOC_SRC={HLOC_SRC} is not an hloc checkout")
    sys.path.insert(0, HLOC_SRC)
    import matplotlib

    matplotlib.use("Agg")
    import hloc.localize_sfm  # noqa: F401
    import hloc.triangulation  # noqa: F401
    import hloc.utils.parsers  # noqa: F401
    import hloc.visualization  # noqa: F401

    return sys.modules["hloc"]


def _true_points_error(rec, world) -> float:
    """Median distance (model units) between triangulated points seen in db/0.jpg and the true
    3D points of the keypoints they observe."""
    n = "db/0.jpg"
    inv = {k: i for i, k in enumerate(world["kp_index"][n]) if k >= 0}
    xyz = colmap.points_xyz(rec)
    err = [
        np.linalg.norm(xyz[pid] - world["X"][inv[kp]])
        for kp, pid in colmap.point_tracks(rec)[n].items()
    ]
    return float(np.median(err))


def test_hloc_triangulation_reads_our_files(hloc, world, tmp_path):
    (tmp_path / "images").mkdir()
    # hloc's default verification (from the known poses) writes two-view geometries whose
    # configuration stays UNDEFINED, which pycolmap 4.x triangulation ignores (0 points, with
    # any files); its RANSAC verification (estimate_two_view_geometries) sets it
    rec = hloc.triangulation.main(
        tmp_path / "sfm_hloc",
        world["ref"],
        tmp_path / "images",
        world["pairs"],
        world["features"],
        world["matches"],
        estimate_two_view_geometries=True,
    )
    ours = tri.main(
        tmp_path / "sfm_ours",
        world["ref"],
        tmp_path / "images",
        world["pairs"],
        world["features"],
        world["matches"],
    )
    assert rec.num_points3D() > 300 and ours.num_points3D() > 300
    # hloc reads our keypoints in its own convention: its points sit on the true ones
    assert _true_points_error(rec, world) < 0.05
    assert _true_points_error(ours, world) < 0.05


def _write_hloc_layout(world, feats: Path, matches: Path) -> None:
    """features / matches files as hloc's ``extract_features`` / ``match_features`` write them
    (plain h5py groups, descriptors (D, N), ``names_to_pair`` keys, no attributes of ours)."""
    with h5py.File(feats, "w") as fd:
        for name in world["db"]:
            kp = io.get_keypoints(world["features"], name)
            grp = fd.create_group(name)
            grp.create_dataset("keypoints", data=kp)
            grp.create_dataset("descriptors", data=np.zeros((8, len(kp)), np.float16))
            grp.create_dataset("scores", data=np.ones(len(kp), np.float16))
            grp.create_dataset("image_size", data=np.array([W, H]))
    with h5py.File(matches, "w") as fd:
        for a, b in parsers.parse_pairs(world["pairs"]):
            m, s = io.get_matches(world["matches"], a, b)
            m0 = np.full(len(io.get_keypoints(world["features"], a)), -1, np.int16)
            m0[m[:, 0]] = m[:, 1]
            s0 = np.zeros(len(m0), np.float16)
            s0[m[:, 0]] = s
            grp = fd.create_group(io.names_to_pair(a, b))
            grp.create_dataset("matches0", data=m0)
            grp.create_dataset("matching_scores0", data=s0)


def test_our_triangulation_reads_hloc_files(hloc, world, tmp_path):
    feats, matches = tmp_path / "feats-hloc.h5", tmp_path / "matches-hloc.h5"
    _write_hloc_layout(world, feats, matches)
    rec, stats = tri.run(
        tmp_path / "sfm", world["ref"], tmp_path / "images", world["pairs"], feats, matches
    )
    assert stats["num_pairs_imported"] == stats["num_pairs"]
    assert rec.num_points3D() > 300 and _true_points_error(rec, world) < 0.05


@pytest.fixture(scope="module")
def localized(hloc, world, tmp_path_factory):
    """Our and hloc's localization of the same queries (query list file, pairs file)."""
    tmp = tmp_path_factory.mktemp("interop_loc")
    queries, pairs, feats, matches, gt = make_queries(world, tmp)
    qlist = tmp / "day_time_queries_with_intrinsics.txt"
    qlist.write_text(
        "".join(
            f"{q} SIMPLE_RADIAL {W} {H} {' '.join(map(str, CAM['params']))}\n" for q, _ in queries
        )
    )
    (tmp / "images").mkdir()
    for name in [q for q, _ in queries] + list(world["db"]):  # visualize_loc reads images
        (tmp / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp / "images" / name), np.full((H, W, 3), 127, np.uint8))
    sfm = tri.main(
        tmp / "sfm",
        world["ref"],
        tmp / "images",
        world["pairs"],
        world["features"],
        world["matches"],
    )
    glob = tmp / "*_time_queries_with_intrinsics.txt"
    ours = tmp / "ours.txt"
    logs = loc.main(sfm, glob, pairs, feats, matches, ours)
    theirs = tmp / "hloc.txt"
    hloc.localize_sfm.main(sfm, glob, pairs, feats, matches, theirs)
    return dict(
        tmp=tmp,
        sfm=sfm,
        glob=glob,
        pairs=pairs,
        ours=ours,
        theirs=theirs,
        logs=logs,
        queries=queries,
        gt=gt,
    )


def test_hloc_parsers_read_our_query_lists_and_pairs(hloc, localized):
    parsed = hloc.utils.parsers.parse_image_lists(localized["glob"], with_intrinsics=True)
    ours = loc.load_queries(localized["glob"])
    assert [n for n, _ in parsed] == [n for n, _ in ours]
    for (_, a), (_, b) in zip(parsed, ours):
        assert a.model == b.model and (a.width, a.height) == (b.width, b.height)
        assert np.allclose(a.params, b.params)
    assert hloc.utils.parsers.parse_retrieval(localized["pairs"]) == parsers.parse_retrieval(
        localized["pairs"]
    )


def test_same_poses_as_hloc_localize_sfm(localized):
    ours, theirs = ev.read_poses(localized["ours"]), ev.read_poses(localized["theirs"])
    assert set(theirs) <= set(ours)  # hloc skips queries without retrieval pairs
    assert localized["logs"]["loc"]["query/day/good.jpg"]["success"]
    from localize.geometry import pose_error

    dt, dr = pose_error(*ours["good.jpg"], *theirs["good.jpg"])
    assert dt < 0.01 and dr < 0.05
    # failed queries fall back to the top retrieved db image's pose in both
    dt, dr = pose_error(*ours["blank.jpg"], *theirs["blank.jpg"])
    assert dt < 1e-9 and dr < 1e-6


def test_hloc_visualize_loc_reads_our_logs(hloc, localized):
    import matplotlib.pyplot as plt

    plt.close("all")
    hloc.visualization.visualize_loc(
        localized["ours"],
        localized["tmp"] / "images",
        reconstruction=localized["sfm"],
        selected=["query/day/good.jpg"],
        top_k_db=1,
    )
    fig = plt.gcf()
    assert len(fig.axes) == 2  # query and its best db image
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    n_in = localized["logs"]["loc"]["query/day/good.jpg"]["num_inliers"]
    assert any(
        t.startswith("inliers: ") and int(t.split()[1].split("/")[0]) > n_in // 5 for t in texts
    ), texts
    plt.close("all")
