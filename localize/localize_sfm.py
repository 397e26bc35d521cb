"""Localize query images against a triangulated model (hloc ``localize_sfm`` without clustering).

Usage::

    python -m localize.localize_sfm --reference_sfm SFM --queries LIST --retrieval PAIRS
        --features FEATS --matches MATCHES --results results.txt

Per query: 2D-3D correspondences through its retrieved db images (file order = rank), then
``colmap_sfm.estimate_absolute_pose`` (LO-RANSAC + refinement). Every query gets a line in the
Aachen submission format ``name qw qx qy qz tx ty tz`` (world-to-camera; a failed query gets the
pose of its top db image), hloc basenames unless two queries share one. Logs:
``<results stem>_logs.json`` (ours) and ``<results>_logs.pkl`` (hloc's fields).
:func:`main` has ``hloc.localize_sfm.main``'s positional order.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pickle
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import pycolmap
from tqdm import tqdm

from descriptors.util import atomic_write, atomic_write_text, merge_conf, setup_logging, write_json
from localize import colmap, colmap_sfm, io, parsers
from localize.cli import (
    ArgumentParser,
    cli_errors,
    existing_dir,
    existing_file,
    output_file,
    positive_float,
)
from localize.evaluate import unique_keys
from localize.geometry import rigid_to_qt

logger = logging.getLogger(__name__)

default_conf: dict[str, Any] = {
    "max_error_px": 12.0,  # RANSAC inlier threshold (hloc Aachen: 12)
    "min_num_2d3d": 8,  # fewer 2D-3D correspondences -> failure (fallback pose)
    "min_num_inliers": 6,  # a PnP pose with fewer inliers -> failure (fallback pose)
    "num_loc": None,  # use only the top-k retrieved db images (None: all in the file)
    "min_match_score": None,  # drop matches with a lower matching score
    "refine_focal": False,
    "refine_extra_params": False,
}


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
            where = f"queries entry {len(out)}"
            try:
                colmap.check_camera(cam)
            except ValueError as e:
                raise colmap.ColmapError(f"{where} ({name}): {e}") from None
            out.append((parsers.check_name(str(name), where), cam))
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
    for queries whose basename another query shares; the keys
    ``localize.evaluate`` uses."""
    return unique_keys(names)


def _format_pose(name: str, q: np.ndarray, t: np.ndarray) -> str:
    """One results line; ``name`` as written (see :func:`result_names`)."""
    return " ".join([name] + [str(float(x)) for x in q] + [str(float(x)) for x in t])


def logs_path_for(results: str | os.PathLike) -> Path:
    """Our JSON logs: ``<results without suffix>_logs.json``."""
    p = Path(results)
    return p.with_name(p.stem + "_logs.json")


def hloc_logs_path(results: str | os.PathLike) -> Path:
    """hloc's pickled logs: ``<results>_logs.pkl`` (suffix kept, as ``localize_sfm`` does)."""
    return Path(f"{results}_logs.pkl")


class _Model:
    """Lazy view of a triangulated reconstruction: an image's track (keypoint -> 3D point) and
    the 3D points are read when a query first needs them, so opening the model costs
    O(images), not O(observations), and a query costs the same in a small or a large map."""

    def __init__(self, reconstruction):
        self.rec = reconstruction
        self.ids = colmap.image_ids_by_name(reconstruction)
        self._tracks: dict[str, dict[int, int]] = {}

    def track(self, name: str) -> dict[int, int] | None:
        """{keypoint index -> point3D_id} of a model image (None: not in the model)."""
        if name not in self.ids:
            return None
        if name not in self._tracks:
            self._tracks[name] = colmap.image_track(self.rec.images[self.ids[name]])
        return self._tracks[name]

    def num_keypoints(self, name: str) -> int:
        """Keypoints (points2D) of a model image."""
        return int(self.rec.images[self.ids[name]].num_points2D())

    def xyz(self, ids: np.ndarray) -> np.ndarray:
        """(K,) point3D ids -> (K, 3) float64 world coordinates."""
        pts = self.rec.points3D
        return np.array([pts[int(i)].xyz for i in ids], np.float64).reshape(-1, 3)

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        if name not in self.ids:
            return None
        return rigid_to_qt(self.rec.images[self.ids[name]].cam_from_world())


@dataclass
class Correspondences:
    """2D-3D correspondences of one query through its retrieved db images.

    ``kp_idx`` (K,) int64 query keypoint indices and ``p3d_ids`` (K,) int64 3D point ids, a
    keypoint once per DISTINCT 3D point it reaches; ``db_of`` (K,) lists, for each of them, the
    indices into ``db_ids`` of the db images that led there (hloc's ``keypoint_index_to_db``).
    """

    kp_idx: np.ndarray
    p3d_ids: np.ndarray
    db_of: list[list[int]]
    db_ids: list[int]  # image ids of the retrieved db images in the model
    num_matches: int = 0  # all query-db matches
    num_matches_3d: int = 0  # those landing on a 3D point (hloc's num_matches)
    missing_pairs: list[str] = field(default_factory=list)
    pairs_not_in_model: list[str] = field(default_factory=list)
    per_db: dict[str, int] = field(default_factory=dict)


def correspondences(
    qname: str,
    db_names: Sequence[str],
    model: _Model,
    matches_path: Path | h5py.File,
    min_match_score: float | None = None,
    num_query_keypoints: int | None = None,
) -> Correspondences:
    """2D-3D correspondences of query ``qname`` through ``db_names`` (see
    :class:`Correspondences`); ``matches_path``: the matches file or an open ``h5py.File``.
    Match indices outside the query's ``num_query_keypoints`` or the db image's keypoints in
    the model raise ``io.H5Error`` (``io.check_match_range``)."""
    kp_to_3d: dict[int, dict[int, list[int]]] = defaultdict(dict)  # kp -> p3d -> [db index]
    out = Correspondences(np.zeros(0, np.int64), np.zeros(0, np.int64), [], [])
    for db in db_names:
        track = model.track(db)
        if track is None:
            out.pairs_not_in_model.append(db)
            continue
        out.db_ids.append(model.ids[db])
        if not io.has_pair(matches_path, qname, db):
            out.missing_pairs.append(db)
            continue
        m, s = io.get_matches(matches_path, qname, db)
        nq = np.iinfo(np.int64).max if num_query_keypoints is None else num_query_keypoints
        io.check_match_range(
            m,
            nq,
            model.num_keypoints(db),
            getattr(matches_path, "filename", matches_path),
            qname,
            db,
        )
        if min_match_score is not None:
            m = m[s >= min_match_score]
        out.num_matches += len(m)
        out.per_db[db] = int(len(m))
        for qi, di in m:
            pid = track.get(int(di))
            if pid is None:
                continue
            out.num_matches_3d += 1
            kp_to_3d[int(qi)].setdefault(pid, []).append(len(out.db_ids) - 1)
    out.kp_idx = np.array([k for k, v in kp_to_3d.items() for _ in v], np.int64)
    out.p3d_ids = np.array([p for v in kp_to_3d.values() for p in v], np.int64)
    out.db_of = [dbs for v in kp_to_3d.values() for dbs in v.values()]
    return out


def _hloc_log(
    corr: Correspondences | None,
    kpq: np.ndarray | None,
    ret: dict | None,
    camera: pycolmap.Camera,
    db_ids: list[int],
) -> dict[str, Any]:
    """One query's entry of hloc's ``_logs.pkl`` (``localize_sfm.pose_from_cluster``'s fields;
    ``keypoints_query`` in COLMAP coordinates, +0.5, as hloc writes them)."""
    if corr is None or kpq is None:
        kp_idx, p3d, db_of, kq = np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros((0, 2))
        n_3d = 0
    else:
        kp_idx, p3d, db_of, n_3d = corr.kp_idx, corr.p3d_ids, corr.db_of, corr.num_matches_3d
        kq = kpq[kp_idx].astype(np.float64) + 0.5
    pnp = None
    if ret is not None:
        pnp = {
            "cam_from_world": ret["cam_from_world"],
            "num_inliers": int(ret["num_inliers"]),
            "inlier_mask": np.asarray(ret["inlier_mask"], bool),
            "camera": camera,
        }
    return {
        "db": list(db_ids),
        "PnP_ret": pnp,
        "keypoints_query": kq,
        "points3D_ids": [int(i) for i in p3d],
        "points3D_xyz": None,
        "num_matches": int(n_3d),
        "keypoint_index_to_db": (
            [int(i) for i in kp_idx],
            [(int(j), list(d)) for j, d in zip(p3d, db_of)],
        ),
        "covisibility_clustering": False,
    }


class QueryLocalizer:
    """hloc's ``QueryLocalizer``: PnP of one query against a reconstruction.

    ``config``: hloc's ``{"estimation": {"ransac": {"max_error"}}, "refinement":
    {"refine_focal_length", "refine_extra_params"}}``; the rest as :data:`default_conf`.
    """

    def __init__(
        self, reconstruction: pycolmap.Reconstruction, config: Mapping[str, Any] | None = None
    ) -> None:
        self.reconstruction = reconstruction
        self.model = _Model(reconstruction)
        self.conf = merge_conf(default_conf, _from_hloc(None, False, config), where="localization")

    def localize(
        self,
        points2D_all: np.ndarray,
        points2D_idxs: Sequence[int],
        points3D_id: Sequence[int],
        query_camera: pycolmap.Camera,
    ) -> dict | None:
        """Pose from ``points2D_all[points2D_idxs]`` ((N, 2) hloc pixels) and the 3D points
        ``points3D_id``; hloc's return dict (``cam_from_world``, ``num_inliers``,
        ``inlier_mask``) or None when PnP fails."""
        idx = np.asarray(points2D_idxs, np.int64)
        if len(idx) == 0:
            return None
        ret, _ = colmap_sfm.estimate_absolute_pose(
            np.asarray(points2D_all)[idx],
            self.model.xyz(np.asarray(points3D_id, np.int64)),
            query_camera,
            max_error_px=float(self.conf["max_error_px"]),
            min_num_inliers=int(self.conf["min_num_inliers"]),
            refine_focal=bool(self.conf["refine_focal"]),
            refine_extra_params=bool(self.conf["refine_extra_params"]),
        )
        return ret


def pose_from_cluster(
    localizer: QueryLocalizer,
    qname: str,
    query_camera: pycolmap.Camera,
    db_ids: Sequence[int],
    features_path: str | os.PathLike,
    matches_path: str | os.PathLike,
    **kwargs: Any,
) -> tuple[dict | None, dict[str, Any]]:
    """hloc's ``pose_from_cluster``: localize ``qname`` through the db images ``db_ids`` (image
    ids of ``localizer.reconstruction``). Returns (PnP result with ``camera`` or None, hloc's log
    dict: ``db``, ``PnP_ret``, ``keypoints_query``, ``points3D_ids``, ``num_matches``,
    ``keypoint_index_to_db``)."""
    if kwargs:
        raise ValueError(f"pose_from_cluster: unsupported option(s) {sorted(kwargs)}")
    rec = localizer.reconstruction
    names = [rec.images[int(i)].name for i in db_ids]
    kpq = io.get_keypoints(features_path, qname)
    corr = correspondences(
        qname,
        names,
        localizer.model,
        Path(matches_path),
        localizer.conf["min_match_score"],
        len(kpq),
    )
    ret = localizer.localize(kpq, corr.kp_idx, corr.p3d_ids, query_camera)
    if ret is not None:
        ret["camera"] = query_camera
    return ret, _hloc_log(corr, kpq, ret, query_camera, corr.db_ids)


def _failure_class(reason: str) -> str:
    """'too few 2D-3D correspondences (3 < 8)' -> 'too few 2D-3D correspondences'."""
    return reason.split(" (")[0].split(":")[0]


def _from_hloc(
    ransac_thresh: float | None, covisibility_clustering: bool, config: Mapping[str, Any] | None
) -> dict[str, Any]:
    """hloc's ``localize_sfm.main`` options -> :data:`default_conf` keys."""
    if covisibility_clustering:
        raise ValueError(
            "covisibility_clustering=True is not implemented: every retrieved "
            "database image is used together (hloc's default)"
        )
    out: dict[str, Any] = {}
    if ransac_thresh is not None:
        out["max_error_px"] = float(ransac_thresh)
    config = dict(config or {})
    est = dict(config.pop("estimation", None) or {})
    ransac = dict(est.pop("ransac", None) or {})
    if "max_error" in ransac:
        out["max_error_px"] = float(ransac.pop("max_error"))
    ref = dict(config.pop("refinement", None) or {})
    if "refine_focal_length" in ref:
        out["refine_focal"] = bool(ref.pop("refine_focal_length"))
    if "refine_extra_params" in ref:
        out["refine_extra_params"] = bool(ref.pop("refine_extra_params"))
    left = {**config, **est, **ransac, **ref}
    if left:
        raise ValueError(f"hloc localization config: unsupported key(s) {sorted(left)}")
    return out


def _localize_query(
    qname: str,
    camera: Any,
    db_names: list[str],
    model: _Model,
    feats_src: Any,
    matches_src: Any,
    conf: Mapping[str, Any],
    features: Path,
    matches: Path,
) -> tuple[dict[str, Any], Any, Any, Correspondences | None, np.ndarray | None]:
    """One query: 2D-3D correspondences from its retrieved db images, then pycolmap PnP.

    Returns:
        (log entry, pose (qvec wxyz, tvec) or None, PnP result or None, correspondences or
        None, (N, 2) query keypoints or None).
    """
    entry: dict[str, Any] = {
        "success": False,
        "reason": "",
        "num_pairs": len(db_names),
        "num_matches": 0,
        "num_2d3d": 0,
        "num_inliers": 0,
        "fallback": None,
        "top_db": db_names[0] if db_names else None,
    }
    if not db_names:
        entry["reason"] = "no retrieval pairs"
        return entry, None, None, None, None
    if not io.has_features(feats_src, qname):
        entry["reason"] = f"no features for the query in {features.name}"
        return entry, None, None, None, None
    kpq = io.get_keypoints(feats_src, qname)
    corr = correspondences(qname, db_names, model, matches_src, conf["min_match_score"], len(kpq))
    entry.update(
        {
            "num_keypoints": int(len(kpq)),
            "num_matches": corr.num_matches,
            "num_matches_3d": corr.num_matches_3d,
            "num_2d3d": int(len(corr.kp_idx)),
            "matches_per_db": corr.per_db,
        }
    )
    if corr.missing_pairs:
        entry["missing_pairs"] = corr.missing_pairs
        logger.warning(
            "query %s: %d retrieval pair(s) absent from %s",
            qname,
            len(corr.missing_pairs),
            matches.name,
        )
    if corr.pairs_not_in_model:
        entry["pairs_not_in_model"] = corr.pairs_not_in_model
    if len(kpq) == 0:
        entry["reason"] = "query has 0 keypoints"
    elif corr.num_matches == 0:
        entry["reason"] = "0 matches to the retrieved db images"
    elif len(corr.kp_idx) < int(conf["min_num_2d3d"]):
        entry["reason"] = (
            f"too few 2D-3D correspondences ({len(corr.kp_idx)} < {conf['min_num_2d3d']})"
        )
    if entry["reason"]:
        return entry, None, None, corr, kpq
    ret, reason = colmap_sfm.estimate_absolute_pose(
        kpq[corr.kp_idx],
        model.xyz(corr.p3d_ids),
        camera,
        max_error_px=float(conf["max_error_px"]),
        min_num_inliers=int(conf["min_num_inliers"]),
        refine_focal=bool(conf["refine_focal"]),
        refine_extra_params=bool(conf["refine_extra_params"]),
    )
    if ret is None:
        entry["reason"] = f"PnP failed: {reason}"
        return entry, None, None, corr, kpq
    inl = corr.kp_idx[np.asarray(ret["inlier_mask"], bool)]
    entry.update(
        {
            "success": True,
            "reason": "ok",
            "num_inliers": int(ret["num_inliers"]),
            "inliers": sorted({int(i) for i in inl}),
        }
    )
    return entry, (ret["qvec_wxyz"], ret["tvec"]), ret, corr, kpq


def _fallback_pose(
    qname: str, db_names: list[str], model: _Model, entry: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Pose written for a query that failed: its best-ranked db image's pose in the model, else
    the identity (hloc's behaviour); records the choice in ``entry["fallback"]``."""
    fb = next((p for p in (model.pose(d) for d in db_names) if p is not None), None)
    if fb is not None:
        entry["fallback"] = next(d for d in db_names if d in model.ids)
        pose = fb
    else:
        entry["fallback"] = "identity"
        pose = (np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3))
    logger.warning(
        "query %s not localized: %s (fallback pose: %s)", qname, entry["reason"], entry["fallback"]
    )
    return pose


def main(
    reference_sfm: str | os.PathLike | pycolmap.Reconstruction,
    queries,
    retrieval: str | os.PathLike | Mapping[str, Sequence[str]],
    features: str | os.PathLike,
    matches: str | os.PathLike,
    results: str | os.PathLike,
    ransac_thresh: float | None = None,
    covisibility_clustering: bool = False,
    prepend_camera_name: bool = False,
    config: Mapping[str, Any] | None = None,
    *,
    conf: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Localize every query and write the results and both logs files.

    Args:
        reference_sfm: triangulated model directory or pycolmap.Reconstruction.
        queries: list of (name, pycolmap.Camera) or query-list path(s) / glob (see
            :func:`load_queries`).
        retrieval: query-db pairs file (or {query: [db, ...]}), best first.
        features: features.h5 with the query keypoints.
        matches: matches.h5 holding the query-db pairs.
        results: output, Aachen submission format, one line per query.
        ransac_thresh, covisibility_clustering, prepend_camera_name, config: hloc's
            ``localize_sfm.main`` parameters: ``ransac_thresh`` is ``max_error_px``;
            ``config`` takes hloc's ``{"estimation": {"ransac": {"max_error"}},
            "refinement": {"refine_focal_length", "refine_extra_params"}}``; covisibility
            clustering is not implemented (True is refused); ``prepend_camera_name`` writes
            ``<parent folder>/<basename>`` as hloc does for multi-camera queries.
        conf / kwargs: overrides of :data:`default_conf`.
    Returns:
        our logs dict (also ``<results stem>_logs.json``): ``{"conf", "features", "matches",
        "retrieval", "results", "loc": {query name: {"success", "reason", "num_pairs",
        "num_matches", "num_2d3d", "num_inliers", "inliers" (query keypoint indices of the PnP
        inliers, localized queries only), "fallback", "top_db", "matches_per_db", ...}},
        "summary":
        {"num_queries", "num_localized", "num_failed", "failure_reasons": {reason class:
        count}}}``. hloc's logs go to ``<results>_logs.pkl``.
    """
    conf = merge_conf(
        default_conf,
        _from_hloc(ransac_thresh, covisibility_clustering, config),
        conf,
        kwargs,
        where="localization",
    )
    features, matches, results = Path(features), Path(matches), Path(results)
    rec = (
        reference_sfm
        if isinstance(reference_sfm, pycolmap.Reconstruction)
        else colmap.read_model(reference_sfm)
    )
    if rec.num_points3D() == 0:
        logger.warning("reference model has no 3D points: every query will fail")
    model = _Model(rec)
    query_list = load_queries(queries)
    if not query_list:
        raise ValueError("no queries to localize")
    if isinstance(retrieval, (str, os.PathLike)):
        retrieval_dict = parsers.parse_retrieval(retrieval)
        retrieval_src = str(retrieval)
    else:
        retrieval_dict = {k: list(v) for k, v in retrieval.items()}
        retrieval_src = "<dict>"

    written = result_names([n for n, _ in query_list])
    if prepend_camera_name:
        written = {n: "/".join(Path(n).parts[-2:]) for n in written}
    dup = [n for n, w in written.items() if w == n and "/" in n]
    if dup:
        logger.warning(
            "%d queries share their basename with another query (e.g. %s): their "
            "result lines use the full name instead of hloc's basename",
            len(dup),
            dup[0],
        )

    lines: list[str] = []
    loc: dict[str, dict[str, Any]] = {}
    hloc_loc: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as files:  # each file opened once for all queries
        feats_src = io.open_for_reading(files, features)
        matches_src = io.open_for_reading(files, matches)
        for qname, camera in tqdm(query_list, desc="localize", unit="query", disable=None):
            db_names = list(retrieval_dict.get(qname, []))
            if conf["num_loc"]:
                db_names = db_names[: int(conf["num_loc"])]
            entry, pose, ret, corr, kpq = _localize_query(
                qname, camera, db_names, model, feats_src, matches_src, conf, features, matches
            )
            if pose is None:
                pose = _fallback_pose(qname, db_names, model, entry)
            lines.append(_format_pose(written[qname], *pose))
            loc[qname] = entry
            db_ids = (
                corr.db_ids
                if corr is not None
                else [model.ids[d] for d in db_names if d in model.ids]
            )
            hloc_loc[qname] = _hloc_log(corr, kpq, ret, camera, db_ids)

    atomic_write_text(results, "\n".join(lines) + "\n")
    reasons: dict[str, int] = defaultdict(int)
    for e in loc.values():
        if not e["success"]:
            reasons[_failure_class(e["reason"])] += 1
    n_ok = sum(e["success"] for e in loc.values())
    logs = {
        "conf": conf,
        "features": str(features),
        "matches": str(matches),
        "retrieval": retrieval_src,
        "results": str(results),
        "loc": loc,
        "summary": {
            "num_queries": len(loc),
            "num_localized": n_ok,
            "num_failed": len(loc) - n_ok,
            "failure_reasons": dict(reasons),
        },
    }
    write_json(logs_path_for(results), logs, indent=1)
    hloc_logs = {
        "features": features,
        "matches": matches,
        "retrieval": Path(retrieval_src) if retrieval_src != "<dict>" else None,
        "loc": hloc_loc,
    }
    with atomic_write(hloc_logs_path(results)) as tmp, open(tmp, "wb") as f:
        pickle.dump(hloc_logs, f)
    logger.info("localized %d / %d queries -> %s", n_ok, len(loc), results)
    return logs


def _parse_args(argv):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--reference_sfm",
        type=existing_dir,
        required=True,
        help="triangulated model (COLMAP .bin/.txt folder)",
    )
    p.add_argument("--queries", nargs="+", required=True, help="query list file(s) or glob")
    p.add_argument("--retrieval", type=existing_file, required=True, help="query-db pairs file")
    p.add_argument(
        "--features",
        type=existing_file,
        required=True,
        help="features file of queries and db images",
    )
    p.add_argument(
        "--matches", type=existing_file, required=True, help="matches file of the query pairs"
    )
    p.add_argument(
        "--results",
        type=output_file,
        required=True,
        help="poses file to write (name qw qx qy qz tx ty tz)",
    )
    p.add_argument(
        "--max_error_px",
        type=positive_float,
        default=default_conf["max_error_px"],
        help="RANSAC PnP inlier threshold (pixels)",
    )
    return p.parse_args(argv)


def cli(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line; known errors exit 2 with one line ``localize.localize_sfm: <message>``."""
    a = _parse_args(None if argv is None else list(argv))
    setup_logging()
    with cli_errors("localize.localize_sfm"):
        return main(
            a.reference_sfm,
            a.queries,
            a.retrieval,
            a.features,
            a.matches,
            a.results,
            max_error_px=a.max_error_px,
        )


if __name__ == "__main__":
    cli()
