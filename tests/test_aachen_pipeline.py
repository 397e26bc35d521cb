"""End-to-end Aachen pipeline on a small synthetic scene (CPU).

Scene: 18 database views + 9 queries (6 day, 3 night), 480x360, generated into pytest's tmp dir,
plus one BLANK day query (no keypoints, no ground truth) to exercise the zero-keypoint path
through extraction, retrieval, matching and localization.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from localize.data.aachen import read_aachen, write_synthetic_aachen
from pipelines import aachen
from pipelines import outputs as run_outputs

ROOT = Path(__file__).resolve().parent.parent
BLANK = "query/day/nexus5x/BLANK_000000.jpg"
CONF = dict(max_keypoints=1024, num_covis=10, num_loc=8)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("aachen") / "synth"
    write_synthetic_aachen(
        root, n_db=18, n_query=9, night_fraction=1 / 3, width=480, height=360, seed=0
    )
    cv2.imwrite(str(root / "images_upright" / BLANK), np.full((360, 480, 3), 127, np.uint8))
    day = root / "queries" / "day_time_queries_with_intrinsics.txt"
    first = day.read_text().splitlines()[0].split()
    with open(day, "a") as f:
        f.write(" ".join([BLANK] + first[1:]) + "\n")
    return root


def _check_recall(s: dict, data) -> None:
    """Each condition's reported recall is the fraction of ITS queries within each threshold
    (recomputed from the per-query errors), and grows with the threshold."""
    ev, per_query = s["evaluation"], s["per_query"]
    for cond in ("day", "night"):
        errs = [(e["dt"], e["dR"]) for e in per_query.values() if e["condition"] == cond]
        want = [np.mean([dt <= m and dr <= d for dt, dr in errs]) for m, d in ev["thresholds"]]
        got = ev["conditions"][cond]["recall"]
        assert got == pytest.approx(want), (cond, s["table"])
        assert all(a <= b for a, b in zip(got, got[1:]))
    assert len(per_query) == len(data.ground_truth)


def _check_run(s: dict, scene: Path, min_day_recall: float = 0.8) -> None:
    data = read_aachen(scene)
    ev = s["evaluation"]
    print(f"\n[{s['features']}] " + s["table"])
    print(run_outputs.format_timings(s["timings"], s["cpu_timings"]))
    day, night = ev["conditions"]["day"], ev["conditions"]["night"]
    assert day["n"] == 6 and night["n"] == 3
    assert day["recall"][0] >= min_day_recall, s["table"]
    _check_recall(s, data)
    # night is harder but not hopeless: some night query is localized at the coarse threshold
    assert night["recall"][-1] > 0, s["table"]
    # results list every query (incl. the blank one), basenames, 8 fields
    lines = Path(s["results_path"]).read_text().splitlines()
    assert sorted(ln.split()[0] for ln in lines) == sorted(Path(n).name for n in data.query_names)
    assert all(len(ln.split(" ")) == 8 for ln in lines)
    logs = json.loads(Path(s["logs_path"]).read_text())
    assert logs["loc"][BLANK]["reason"] == "query has 0 keypoints"
    assert not logs["loc"][BLANK]["success"] and logs["loc"][BLANK]["fallback"]
    assert s["failures"][BLANK] == "query has 0 keypoints"
    # hloc's logs next to the results, one entry per query
    with open(s["paths"]["hloc_logs"], "rb") as f:
        assert set(pickle.load(f)["loc"]) == set(data.query_names)
    res = json.loads((Path(s["out_dir"]) / "results.json").read_text())
    assert res["evaluation"]["conditions"]["day"]["recall"] == day["recall"]
    assert set(aachen.STAGES) <= set(res["timings"])
    assert s["triangulation"]["num_points3D"] > 300


def test_pipeline_sift(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    s = aachen.run("sift", scene, out, **CONF)
    _check_run(s, scene)
    # the CLI on the same outputs reuses features / matches (fingerprint unchanged)
    mtime = (out / "sift" / "features.h5").stat().st_mtime_ns
    s2 = aachen.main(
        [
            "--features",
            "sift",
            "--dataset",
            str(scene),
            "--outputs",
            str(out),
            "--max_keypoints",
            "1024",
            "--num_covis",
            "10",
            "--num_loc",
            "8",
            "--viz",
            "2",
        ]
    )
    assert (out / "sift" / "features.h5").stat().st_mtime_ns == mtime
    assert s2["evaluation"]["conditions"]["day"]["recall"][0] >= 0.8
    # --viz 2: the two best pairs' matches and keypoints, two day, two night and the failed
    # queries' inliers, SfM views; real PNGs
    pngs = [Path(f) for f in s2["viz"]]
    assert len([f for f in pngs if f.name.startswith("matches_")]) == 2
    assert len([f for f in pngs if f.name.startswith("keypoints_")]) == 2
    groups = [f.name.split("_")[1] for f in pngs if f.name.startswith("loc_")]
    assert groups.count("day") == groups.count("night") == 2 and "failed" in groups
    assert all(
        f.parent == out / "sift" / "viz" and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for f in pngs
    )


def test_pipeline_hardnet(scene, tmp_path_factory):
    w = ROOT / "weights" / "hardnet.pt"
    assert w.is_file(), f"shipped weights {w} are missing"
    # 512 keypoints: the CNN on CPU costs ~2-3 CPU s per 1024 patches; keeps the file in budget
    s = aachen.run(
        "hardnet", scene, tmp_path_factory.mktemp("out_hn"), **{**CONF, "max_keypoints": 512}
    )
    _check_run(s, scene)


def test_unknown_option_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown pipeline option"):
        aachen.run("sift", tmp_path, tmp_path, bogus=1)


def test_train_on_the_map_uses_database_views_only(scene, tmp_path):
    """--from-map: patches from db images + reference poses only; fine-tuned from the shipped
    weights; the fine-tuned and generic descriptors both relocalize the queries."""
    from pipelines import train_and_localize as tl

    assert (ROOT / "weights" / "hardnet.pt").is_file(), "shipped weights/hardnet.pt are missing"
    s = tl.run_from_map(
        "hardnet",
        scene,
        tmp_path,
        steps=3,
        baselines=(),
        patch_conf={
            "resize_max": 480,
            "max_keypoints": 400,
            "min_tri_angle_deg": 1.0,
            "max_pairs": 500,
        },
        max_keypoints=512,
        num_covis=10,
    )
    data = read_aachen(scene)
    assert set(s["patches"]["view_ids"]) <= set(data.db_names)
    assert not set(s["patches"]["view_ids"]) & set(data.query_names)
    assert s["patches"]["tracks"] > 50
    assert set(s["rows"]) == {"hardnet-from-map", "hardnet"}
    for row in s["rows"].values():
        assert row["evaluation"]["conditions"]["day"]["recall"][2] >= 0.5
    with pytest.raises(ValueError, match="not 'wlrn'"):
        tl.run_from_map("wlrn", scene, tmp_path)


def test_hndesc_on_the_map_trains_on_database_photos(scene, tmp_path):
    """--from-map for the self-supervised hndesc: pairs from the database photos only (linked,
    not copied), fine-tuned from the shipped weights."""
    from descriptors.models import read_checkpoint
    from pipelines import train_and_localize as tl

    s = tl.finetune_on_map("hndesc", scene, tmp_path, steps=2)
    data = read_aachen(scene)
    photos = Path(s["patches"]["photos"])
    linked = sorted(str(f.relative_to(photos)) for f in photos.rglob("*") if f.is_symlink())
    assert linked == sorted(data.db_names)
    assert all((photos / n).resolve() == (data.image_dir / n).resolve() for n in linked)
    ckpt = read_checkpoint(s["checkpoint"])
    assert ckpt["meta"]["init"].endswith("weights/hndesc.pt")
    assert ckpt["meta"]["photos"] == len(data.db_names)
    assert s["train"]["steps"] == 2 and not s["sfm_map"]
    with pytest.raises(ValueError, match="'..' component"):  # no link outside map-photos/
        tl._link_photos(data.image_dir, ["../x.jpg"], tmp_path / "links", scene)
    (photos / "mine.jpg").write_bytes(b"not a link")  # a user's file: refused, never deleted
    with pytest.raises(ValueError, match="mine.jpg, which is not a link"):
        tl._link_photos(data.image_dir, data.db_names, photos, scene)
    assert (photos / "mine.jpg").is_file()
    (photos / "mine.jpg").unlink()
    assert tl._link_photos(data.image_dir, data.db_names[:1], photos, scene) == photos
    assert [f.name for f in photos.rglob("*") if f.is_symlink()] == [Path(data.db_names[0]).name]


def test_missing_dataset_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        aachen.resolve_dataset(tmp_path / "typo")
