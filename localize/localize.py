"""Localize query images against a triangulated model (hloc ``localize_sfm`` without clustering).

For each query:

1. its retrieved database images from the retrieval pairs file (file order = rank);
2. for each of them, the query<->db matches (``matches.h5``) whose db keypoint observes a 3D
   point of the model (via :func:`localize.colmap.point_tracks`) give 2D-3D correspondences. As in
   hloc, one query keypoint may get SEVERAL 3D candidates (one per distinct 3D point it reaches
   through different db images); RANSAC sorts them out;
3. ``colmap.estimate_absolute_pose`` (P3P LO-RANSAC + refinement) with the query intrinsics from
   the query list (hloc keypoints; the adapter adds 0.5).

A query that fails (no retrieval pairs, no features, 0 matches, fewer than ``min_num_2d3d``
correspondences, PnP failure) gets a logged reason and, as hloc, the pose of its top retrieved
database image (identity pose when it has no retrieval pair at all). The results file therefore
lists EVERY query, in the Aachen submission format ``basename qw qx qy qz tx ty tz``
(world-to-camera, ``str()`` floats, single spaces). Per-query logs go to
``<results stem>_logs.json``. Both files are written atomically.

Names: hloc writes basenames, so two queries with one basename in different folders
(``query/day/x.jpg``, ``query/night/x.jpg``) would give two indistinguishable lines. Those
queries (only those) are written with their FULL name (warning logged);
``localize.evaluate`` matches a result line by full name first, then by basename, and refuses a
bare basename shared by two ground-truth queries. Every other line stays hloc's basename, so
the file remains a valid submission whenever the basenames are unique (as in Aachen). Query
names must be relative paths inside the image root (``localize.io.check_name``).
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from localize import colmap, io
from localize.cli import cli_errors

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "max_error_px": 12.0,      # RANSAC inlier threshold (hloc Aachen: 12)
    "min_num_2d3d": 8,         # fewer 2D-3D correspondences -> failure (fallback pose)
    "min_num_inliers": 6,      # a PnP pose with fewer inliers -> failure (fallback pose)
    "num_loc": None,           # use only the top-k retrieved db images (None: all in the file)
    "min_match_score": None,   # drop matches with a lower matching score
    "refine_focal": False,
    "refine_extra_params": False,
}


def _basename(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def load_queries(queries) -> list[tuple[str, Any]]:
    """Queries as a list of (name, pycolmap.Camera).

    Accepts a list of (name, Camera) pairs, or one / several query-list paths
    (``*_time_queries_with_intrinsics.txt``), or a glob pattern of them. Query lists are read in
    sorted path order and concatenated; duplicate names keep the first entry.
    """
    if isinstance(queries, (str, os.PathLike)):
        queries = [queries]
    queries = list(queries)
    out: list[tuple[str, Any]] = []
    for q in queries:
        if isinstance(q, (str, os.PathLike)):
            s = str(q)
            paths = sorted(glob.glob(s)) if any(c in s for c in "*?[") else [s]
            if not paths:
                raise FileNotFoundError(f"no query list matches {s}")
            for p in paths:
                out.extend(colmap.parse_query_list(p))
        else:
            name, cam = q
            out.append((io.check_name(str(name), f"queries entry {len(out)}"), cam))
    seen, uniq = set(), []
    for name, cam in out:
        if name in seen:
            logger.warning("query %s listed twice; keeping the first entry", name)
            continue
        seen.add(name)
        uniq.append((name, cam))
    return uniq


def result_names(names: Sequence[str]) -> dict[str, str]:
    """{query name: name written in the results file}: the basename (hloc), or the full name
    for queries whose basename another query shares (see the module docstring); the keys
    ``localize.evaluate`` uses."""
    from localize.evaluate import unique_keys
    return unique_keys(names)


def _format_pose(name: str, q: np.ndarray, t: np.ndarray) -> str:
    """One results line; ``name`` as written (see :func:`result_names`)."""
    return " ".join([name] + [str(float(x)) for x in q] + [str(float(x)) for x in t])


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def logs_path_for(results_path: str | os.PathLike) -> Path:
    """``<results without suffix>_logs.json`` (hloc writes ``<results>_logs.pkl``)."""
    p = Path(results_path)
    return p.with_name(p.stem + "_logs.json")


class _Model:
    """Cached view of a triangulated reconstruction: tracks, xyz, db poses."""

    def __init__(self, reconstruction):
        self.rec = reconstruction
        self.tracks = colmap.point_tracks(reconstruction)       # name -> {kp idx -> p3d id}
        self.xyz = colmap.points_xyz(reconstruction)             # p3d id -> (3,)
        self.ids = colmap.image_ids_by_name(reconstruction)

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        if name not in self.ids:
            return None
        return colmap.rigid_to_qt(self.rec.images[self.ids[name]].cam_from_world())


def correspondences(qname: str, db_names: Sequence[str], model: _Model,
                    matches_path: Path, min_match_score: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """2D-3D correspondences of one query through its retrieved db images.

    Returns:
        (kp_idx (K,) int64 query keypoint indices, p3d_ids (K,) int64, info) where a keypoint
        appears once per DISTINCT 3D point it reaches; info has ``num_matches`` (all query-db
        matches), ``num_matches_3d`` (those landing on a 3D point), ``missing_pairs``,
        ``pairs_not_in_model``, ``per_db`` {db name: num matches}.
    """
    kp_to_3d: dict[int, list[int]] = defaultdict(list)
    info: dict[str, Any] = {"num_matches": 0, "num_matches_3d": 0, "missing_pairs": [],
                            "pairs_not_in_model": [], "per_db": {}}
    for db in db_names:
        if db not in model.tracks:
            info["pairs_not_in_model"].append(db)
            continue
        if not io.has_pair(matches_path, qname, db):
            info["missing_pairs"].append(db)
            continue
        m, s = io.get_matches(matches_path, qname, db)
        if min_match_score is not None:
            m = m[s >= min_match_score]
        info["num_matches"] += len(m)
        info["per_db"][db] = int(len(m))
        track = model.tracks[db]
        for qi, di in m:
            pid = track.get(int(di))
            if pid is None:
                continue
            info["num_matches_3d"] += 1
            lst = kp_to_3d[int(qi)]
            if pid not in lst:
                lst.append(pid)
    kp_idx = np.array([k for k, v in kp_to_3d.items() for _ in v], np.int64)
    p3d = np.array([p for v in kp_to_3d.values() for p in v], np.int64)
    return kp_idx, p3d, info


def main(reference_sfm, queries, retrieval: str | os.PathLike | Mapping[str, Sequence[str]],
         features: str | os.PathLike, matches: str | os.PathLike,
         results_path: str | os.PathLike, conf: Mapping[str, Any] | None = None,
         **kwargs: Any) -> dict[str, Any]:
    """Localize every query and write the results + logs files.

    Args:
        reference_sfm: triangulated model directory or pycolmap.Reconstruction.
        queries: list of (name, pycolmap.Camera) or query-list path(s) / glob (see
            :func:`load_queries`).
        retrieval: query-db pairs file (or {query: [db, ...]}), best first.
        features: features.h5 with the query keypoints.
        matches: matches.h5 holding the query-db pairs.
        results_path: output, Aachen submission format, one line per query.
        conf / kwargs: overrides of :data:`DEFAULTS`.
    Returns:
        logs dict: ``{"conf", "features", "matches", "retrieval", "results",
        "loc": {query name: {"success", "reason", "num_pairs", "num_matches", "num_2d3d",
        "num_inliers", "fallback"}}, "summary": {"num_queries", "num_localized",
        "num_failed", "failure_reasons": {reason class: count}}}``.
    """
    conf = {**DEFAULTS, **dict(conf or {}), **kwargs}
    unknown = set(conf) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown localization option(s): {sorted(unknown)}")
    features, matches, results_path = Path(features), Path(matches), Path(results_path)
    rec = (reference_sfm if hasattr(reference_sfm, "images")
           else colmap.read_model(reference_sfm))
    if rec.num_points3D() == 0:
        logger.warning("reference model has no 3D points: every query will fail")
    model = _Model(rec)
    query_list = load_queries(queries)
    if not query_list:
        raise ValueError("no queries to localize")
    if isinstance(retrieval, (str, os.PathLike)):
        retrieval_dict = io.parse_retrieval(retrieval)
        retrieval_src = str(retrieval)
    else:
        retrieval_dict = {k: list(v) for k, v in retrieval.items()}
        retrieval_src = "<dict>"

    written = result_names([n for n, _ in query_list])
    dup = [n for n, w in written.items() if w == n and _basename(n) != n]
    if dup:
        logger.warning("%d queries share their basename with another query (e.g. %s): their "
                       "result lines use the full name instead of hloc's basename", len(dup),
                       dup[0])

    lines: list[str] = []
    loc: dict[str, dict[str, Any]] = {}
    for qname, camera in tqdm(query_list, desc="localize", unit="query"):
        db_names = list(retrieval_dict.get(qname, []))
        if conf["num_loc"]:
            db_names = db_names[: int(conf["num_loc"])]
        entry: dict[str, Any] = {"success": False, "reason": "", "num_pairs": len(db_names),
                                 "num_matches": 0, "num_2d3d": 0, "num_inliers": 0,
                                 "fallback": None, "top_db": db_names[0] if db_names else None}
        pose = None
        if not db_names:
            entry["reason"] = "no retrieval pairs"
        elif not io.has_features(features, qname):
            entry["reason"] = f"no features for the query in {features.name}"
        else:
            kpq = io.get_keypoints(features, qname)
            kp_idx, p3d_ids, info = correspondences(qname, db_names, model, matches,
                                                    conf["min_match_score"])
            entry.update({"num_keypoints": int(len(kpq)), "num_matches": info["num_matches"],
                          "num_matches_3d": info["num_matches_3d"], "num_2d3d": int(len(kp_idx)),
                          "matches_per_db": info["per_db"]})
            if info["missing_pairs"]:
                entry["missing_pairs"] = info["missing_pairs"]
                logger.warning("query %s: %d retrieval pair(s) absent from %s", qname,
                               len(info["missing_pairs"]), matches.name)
            if info["pairs_not_in_model"]:
                entry["pairs_not_in_model"] = info["pairs_not_in_model"]
            if len(kpq) == 0:
                entry["reason"] = "query has 0 keypoints"
            elif info["num_matches"] == 0:
                entry["reason"] = "0 matches to the retrieved db images"
            elif len(kp_idx) < int(conf["min_num_2d3d"]):
                entry["reason"] = (f"too few 2D-3D correspondences ({len(kp_idx)} < "
                                   f"{conf['min_num_2d3d']})")
            else:
                xyz = np.stack([model.xyz[int(i)] for i in p3d_ids])
                ret, reason = colmap.estimate_absolute_pose(
                    kpq[kp_idx], xyz, camera, max_error_px=float(conf["max_error_px"]),
                    min_num_inliers=int(conf["min_num_inliers"]),
                    refine_focal=bool(conf["refine_focal"]),
                    refine_extra_params=bool(conf["refine_extra_params"]))
                if ret is None:
                    entry["reason"] = f"PnP failed: {reason}"
                else:
                    pose = (ret["qvec_wxyz"], ret["tvec"])
                    entry.update({"success": True, "reason": "ok",
                                  "num_inliers": int(ret["num_inliers"])})
        if pose is None:
            fb = next((p for p in (model.pose(d) for d in db_names) if p is not None), None)
            if fb is not None:
                entry["fallback"] = next(d for d in db_names if d in model.ids)
                pose = fb
            else:
                entry["fallback"] = "identity"
                pose = (np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3))
            logger.warning("query %s not localized: %s (fallback pose: %s)", qname,
                           entry["reason"], entry["fallback"])
        lines.append(_format_pose(written[qname], *pose))
        loc[qname] = entry

    _atomic_write(results_path, "\n".join(lines) + "\n")
    reasons: dict[str, int] = defaultdict(int)
    for e in loc.values():
        if not e["success"]:
            reasons[e["reason"].split(" (")[0].split(":")[0]] += 1
    n_ok = sum(e["success"] for e in loc.values())
    logs = {"conf": conf, "features": str(features), "matches": str(matches),
            "retrieval": retrieval_src, "results": str(results_path), "loc": loc,
            "summary": {"num_queries": len(loc), "num_localized": n_ok,
                        "num_failed": len(loc) - n_ok, "failure_reasons": dict(reasons)}}
    _atomic_write(logs_path_for(results_path), json.dumps(logs, indent=1, default=_json_default))
    logger.info("localized %d / %d queries -> %s", n_ok, len(loc), results_path)
    return logs


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference_sfm", type=Path, required=True)
    p.add_argument("--queries", nargs="+", required=True, help="query list file(s) or glob")
    p.add_argument("--retrieval", type=Path, required=True)
    p.add_argument("--features", type=Path, required=True)
    p.add_argument("--matches", type=Path, required=True)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--max_error_px", type=float, default=DEFAULTS["max_error_px"])
    return p.parse_args(argv)


def cli(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line; known errors exit 2 with one line ``localize.localize: <message>``."""
    a = _parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO)
    with cli_errors("localize.localize"):
        return main(a.reference_sfm, a.queries, a.retrieval, a.features, a.matches, a.results,
                    max_error_px=a.max_error_px)


if __name__ == "__main__":
    cli()
