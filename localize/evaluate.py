"""Pose recall of a localization results file against ground-truth poses (Aachen protocol).

Both the results and the ground truth are in the Aachen submission format, one query per line:
``name qw qx qy qz tx ty tz`` (world-to-camera, quaternion w first). A ground-truth query is
matched to the result line with its exact name, else to the one line with its basename (the
results file uses basenames, as hloc writes them; ground truth or the condition lists may
carry the full ``query/day/...`` path). Queries sharing a basename (``query/day/x.jpg`` and
``query/night/x.jpg``) can only be matched by full name: ``localize.localize_sfm`` writes full names
for exactly those, and a bare ``x.jpg`` line (or two result lines that both could be one
query) is an error naming the file and the names, never a silent drop. Results are keyed by
basename (hloc), or by full name for queries whose basename another query shares.

Errors follow the Aachen benchmark (:func:`localize.geometry.pose_error`): position error =
distance in metres between the camera centres ``c = -R^T t``; rotation error = angle in degrees
of ``R_est R_gt^T``. A query absent from the results file counts as not localized (dt = inf,
dR = 180).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from descriptors import tables
from localize.geometry import Pose, as_qt, camera_center, pose_error, viewing_direction
from localize.parsers import read_pose_lines

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: tuple[tuple[float, float], ...] = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))


def _basename(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def unique_keys(names: Sequence[str]) -> dict[str, str]:
    """{name: key}: its basename, or the full name when another name shares the basename."""
    count: dict[str, set[str]] = {}
    for n in names:
        count.setdefault(_basename(n), set()).add(n)
    return {n: (n if len(count[_basename(n)]) > 1 else _basename(n)) for n in names}


def read_poses(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a submission-format file -> {key: (q wxyz (4,), t (3,))}, key = basename, or the
    name as written when two lines' names share a basename (:func:`unique_keys`).

    Empty lines and lines starting with '#' are skipped. A malformed line raises ValueError
    naming the file and the line number.
    """
    lines = read_pose_lines(path)
    keys = unique_keys([n for n, _, _ in lines])
    return {keys[name]: (q, t) for name, q, t in lines}


def _find(
    name: str,
    full: Mapping[str, object],
    by_base: Mapping[str, list[str]],
    shared: bool,
    owned: set[str],
    what: str,
) -> str | None:
    """The entry of ``full`` for query ``name``: the exact name, else the single entry with its
    basename that is not another query's exact name (``owned``). None when there is none.

    Raises ValueError (``what`` names the file) when the basename match is ambiguous: the
    query's basename is ``shared`` by another query, or several entries carry it.
    """
    if name in full:
        return name
    cands = [c for c in by_base.get(_basename(name), []) if c not in owned]
    if not cands:
        return None
    if shared or len(cands) > 1:
        raise ValueError(
            f"{what}: cannot tell which of {sorted(cands)} is query {name!r}: "
            f"several queries or entries share the basename "
            f"{_basename(name)!r}; write full names for them"
        )
    return cands[0]


def _by_base(names: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(_basename(n), []).append(n)
    return out


def _normalize_gt(
    ground_truth: Mapping[str, Pose] | str | os.PathLike,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name as given: (q (4,), t (3,))} (full names kept)."""
    if isinstance(ground_truth, (str, os.PathLike)):
        return {name: (q, t) for name, q, t in read_pose_lines(ground_truth)}
    return {str(name): as_qt(pose) for name, pose in ground_truth.items()}


def _summary(errors: list[tuple[float, float]], thresholds) -> dict:
    n = len(errors)
    if n == 0:
        return {
            "n": 0,
            "recall": [float("nan")] * len(thresholds),
            "median_dt": float("nan"),
            "median_dR": float("nan"),
        }
    dt = np.array([e[0] for e in errors])
    dR = np.array([e[1] for e in errors])
    recall = [float(np.mean((dt <= tt) & (dR <= tr))) for tt, tr in thresholds]
    return {
        "n": n,
        "recall": recall,
        "median_dt": float(np.median(dt)),
        "median_dR": float(np.median(dR)),
    }


def evaluate(
    results_path: str | os.PathLike,
    ground_truth: Mapping | str | os.PathLike,
    conditions: Mapping[str, str] | None = None,
    thresholds: Sequence[tuple[float, float]] = DEFAULT_THRESHOLDS,
) -> dict:
    """Recall at (metres, degrees) thresholds per condition and overall.

    Args:
        results_path: submission-format results file (basenames).
        ground_truth: {name: (q wxyz, t)} or {name: pycolmap.Rigid3d} or a path to a
            submission-format ground-truth file. Every ground-truth query is evaluated.
        conditions: {name: 'day'|'night'|...}; names may be full paths or basenames.
            Queries without a condition are only counted in 'all'.
        thresholds: sequence of (max position error m, max rotation error deg).
    Returns:
        {"thresholds": [[m, deg], ...],
         "conditions": {cond: {"n", "recall" [per threshold, 0..1], "median_dt", "median_dR"},
                        ..., "all": {...}},
         "per_query": {key: {"dt", "dR", "condition", "found"}},
         "num_missing": int}
        with key = the query's basename, or its full name when another ground-truth query
        shares the basename (:func:`unique_keys`).
    Raises:
        ValueError naming the results file when a result line cannot be told apart between
        queries sharing a basename (see the module docstring).
    """
    thresholds = [tuple(map(float, t)) for t in thresholds]
    results = {name: (q, t) for name, q, t in read_pose_lines(results_path)}
    gt = _normalize_gt(ground_truth)
    if not gt:
        raise ValueError(f"{results_path}: empty ground truth")
    cond = dict(conditions or {})
    keys = unique_keys(list(gt))
    owned = set(gt)
    res_base, cond_base, gt_base = _by_base(results), _by_base(cond), _by_base(gt)

    per_query: dict[str, dict] = {}
    by_cond: dict[str, list[tuple[float, float]]] = {}
    used: set[str] = set()
    missing = 0
    for name in sorted(gt, key=lambda n: keys[n]):
        q_gt, t_gt = gt[name]
        shared = len(gt_base[_basename(name)]) > 1
        r = _find(name, results, res_base, shared, owned, str(results_path))
        if r is not None:
            dt, dR = pose_error(*results[r], q_gt, t_gt)
            found = True
            used.add(r)
        else:
            dt, dR, found = float("inf"), 180.0, False
            missing += 1
        ck = _find(name, cond, cond_base, shared, owned, "query conditions")
        c = None if ck is None else cond[ck]
        per_query[keys[name]] = {"dt": dt, "dR": dR, "condition": c, "found": found}
        if c is not None:
            by_cond.setdefault(c, []).append((dt, dR))
    if missing:
        logger.warning(
            "%s: %d of %d ground-truth queries have no result line", results_path, missing, len(gt)
        )
    extra = set(results) - used
    if extra:
        logger.info("%s: %d result lines without ground truth ignored", results_path, len(extra))

    out_conds = {c: _summary(v, thresholds) for c, v in sorted(by_cond.items())}
    out_conds["all"] = _summary([(d["dt"], d["dR"]) for d in per_query.values()], thresholds)
    return {
        "thresholds": [list(t) for t in thresholds],
        "conditions": out_conds,
        "per_query": per_query,
        "num_missing": missing,
    }


def _fmt_thr(t) -> str:
    m, d = t
    return f"{m:g}m,{d:g}°"


def format_table(evaluation: Mapping, title: str | None = None) -> str:
    """Text table of an `evaluate` output, or of {method_name: evaluate output}.

    One row per (method, condition): recall (%) at each threshold, median dt (m) / dR (deg).
    """
    if "conditions" in evaluation:
        evaluation = {title or "": evaluation}
        title = None
    rows = []
    thresholds = None
    for method, ev in evaluation.items():
        thresholds = thresholds or ev["thresholds"]
        for c, s in ev["conditions"].items():
            rec = " / ".join("  nan" if math.isnan(r) else f"{100 * r:5.1f}" for r in s["recall"])
            rows.append(
                (str(method), c, str(s["n"]), rec, f"{s['median_dt']:.3f}", f"{s['median_dR']:.2f}")
            )
    thr = " / ".join(_fmt_thr(t) for t in (thresholds or []))
    header = ["method", "condition", "n", f"recall % ({thr})", "med dt m", "med dR deg"]
    return tables.format_table(header, rows, align="llrlrr", title=title)


def covisible_db_views(
    gt_pose: Pose, db_poses: Mapping[str, Pose], num: int = 5, max_angle_deg: float = 60.0
) -> list[str]:
    """The ``num`` database views nearest a query's ground-truth camera centre whose viewing
    direction is within ``max_angle_deg`` of the query's (the rule of ``pairs.from_poses``):
    the views a correct retrieval should return."""
    cq, dq = camera_center(gt_pose), viewing_direction(gt_pose)
    cand = []
    for name, p in db_poses.items():
        c, d = camera_center(p), viewing_direction(p)
        if math.degrees(math.acos(float(np.clip(d @ dq, -1.0, 1.0)))) <= max_angle_deg:
            cand.append((float(np.linalg.norm(c - cq)), name))
    return [n for _, n in sorted(cand)[:num]]


def retrieval_recall(
    ranked: Mapping[str, Sequence[str]],
    ground_truth: Mapping[str, Pose],
    db_poses: Mapping[str, Pose],
    ks: Sequence[int] = (1, 5, 10),
    num_covisible: int = 5,
) -> dict[int, float]:
    """Retrieval recall@k: the fraction of queries with at least one of their
    :func:`covisible_db_views` among the top k retrieved database images.

    Args:
        ranked: query name -> database names, best first.
        ground_truth: query name -> pose (queries missing from ``ranked`` count as misses).
        db_poses: database name -> pose (world-to-camera).
    """
    if not ground_truth:
        return {int(k): float("nan") for k in ks}
    hits = {int(k): 0 for k in ks}
    for q, pose in ground_truth.items():
        good = set(covisible_db_views(pose, db_poses, num_covisible))
        r = list(ranked.get(q, []))
        for k in ks:
            hits[int(k)] += bool(good & set(r[:k]))
    return {k: v / len(ground_truth) for k, v in hits.items()}


__all__ = [
    "evaluate",
    "format_table",
    "read_poses",
    "unique_keys",
    "covisible_db_views",
    "retrieval_recall",
    "DEFAULT_THRESHOLDS",
]


def cli(argv: Sequence[str] | None = None) -> dict:
    """``python -m localize.evaluate --results R --ground_truth GT [--conditions FILE]``:
    print the recall table; ``FILE`` holds ``<query name> <condition>`` per line."""
    from descriptors.util import setup_logging
    from localize.cli import ArgumentParser, cli_errors, existing_file

    p = ArgumentParser(description="Recall of a submission-format results file")
    p.add_argument("--results", type=existing_file, required=True, help="results file")
    p.add_argument(
        "--ground_truth",
        type=existing_file,
        required=True,
        help="ground-truth poses, submission format",
    )
    p.add_argument(
        "--conditions",
        type=existing_file,
        help="'<query name> <condition>' per line (e.g. day / night)",
    )
    a = p.parse_args(None if argv is None else list(argv))
    setup_logging()
    with cli_errors("localize.evaluate"):
        cond = None
        if a.conditions:
            from localize.parsers import read_text_lines

            cond = dict(ln.split()[:2] for ln in read_text_lines(a.conditions) if ln.strip())
        out = evaluate(a.results, a.ground_truth, cond)
        print(format_table({a.results.stem: out}))
        return out


if __name__ == "__main__":
    cli()
