"""A run's pictures: PNGs of an hloc-style localization run (matches, keypoints, localized
and failed queries, SfM views), drawn with :mod:`localize.visualization`.

Files written into ``out_dir`` (``/`` in image names becomes ``-``):
``matches_<k>_<name0>__<name1>.png``, ``keypoints_<k>_<name0>__<name1>.png``,
``loc_<group>_<k>_<query>.png`` (group ``day`` / ``night`` / ``query`` / ``failed``) and
``sfm_<color_by>.png``. Images are 6 inches high at ``dpi`` pixels per inch.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from localize import io, parsers
from localize import visualization as viz
from localize.evaluate import read_poses
from localize.geometry import pose_error
from localize.localize_sfm import _failure_class
from localize.visualization import (
    INLIER,
    KEYPOINT,
    MATCH,
    OUTLIER,
    SFM_COLORINGS,
    _folder,
    _loc_figures,
    _name,
    _new_figure,
    _plot_inliers,
    _read_hloc_logs,
    _reconstruction,
    add_legend,
    add_text,
    plot_keypoints,
    plot_matches,
    read_image,
    save_plot,
    visualize_sfm_2d,
)

logger = logging.getLogger(__name__)


def _flat(name: str) -> str:
    return name.replace("/", "-")


def condition(name: str) -> str:
    """'night' / 'day' when a folder of the query name says so, else 'query'."""
    parts = Path(name).parts[:-1]
    return "night" if "night" in parts else "day" if "day" in parts else "query"


def _loc_caption(
    name: str,
    entry: Mapping[str, Any],
    estimated: Mapping[str, tuple],
    gt_poses: Mapping[str, tuple] | None,
) -> str:
    """``<condition> query: 45 inliers / 120 2D-3D[, error 0.12 m 0.8 deg]`` or
    ``<condition> query NOT localized: <reason>``."""
    cond = condition(name)
    if not entry.get("success"):
        return f"{cond} query NOT localized: {entry.get('reason') or 'unknown reason'}"
    s = f"{cond} query: {entry.get('num_inliers', 0)} inliers / {entry.get('num_2d3d', 0)} 2D-3D"
    est = estimated.get(name, estimated.get(name.rsplit("/", 1)[-1]))
    if gt_poses is not None and name in gt_poses and est is not None:
        dt, dr = pose_error(est[0], est[1], *gt_poses[name])
        s += f"\nerror {dt:.3f} m, {dr:.2f} deg"
    return s


def _spread(items: list, n: int) -> list:
    """``n`` items evenly spaced through ``items`` (first and last included)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i)] for i in np.linspace(0, len(items) - 1, n)]


def _pick_queries(loc: Mapping[str, Mapping[str, Any]], n: int) -> list[tuple[str, str]]:
    """(group, query) to draw: per condition, ``n`` localized queries from the most inliers to
    the fewest; ``n`` failed queries, one per failure reason first."""
    picked: list[tuple[str, str]] = []
    by_cond: dict[str, list[str]] = defaultdict(list)
    by_reason: dict[str, list[str]] = defaultdict(list)
    for q, e in loc.items():
        if e.get("success"):
            by_cond[condition(q)].append(q)
        else:
            by_reason[_failure_class(str(e.get("reason", "")))].append(q)
    for cond in sorted(by_cond):
        ranked = sorted(by_cond[cond], key=lambda q: (-loc[q].get("num_inliers", 0), q))
        picked += [(cond, q) for q in _spread(ranked, n)]
    failed: list[str] = []
    queues = [sorted(v) for _, v in sorted(by_reason.items())]
    while len(failed) < n and any(queues):
        failed += [qs.pop(0) for qs in queues if qs][: n - len(failed)]
    return picked + [("failed", q) for q in failed]


def save_pipeline_figures(
    image_dir: str | os.PathLike,
    features_h5: str | os.PathLike,
    matches_h5: str | os.PathLike,
    pairs_txt: str | os.PathLike,
    out_dir: str | os.PathLike,
    n: int,
    loc_logs: Mapping[str, Any] | None = None,
    gt_poses: Mapping[str, tuple] | None = None,
    reconstruction: Any = None,
    dpi: float = 100,
) -> list[Path]:
    """PNG pictures of an hloc-style run, into ``out_dir``.

    - ``matches_<k>_<name0>__<name1>.png``: the ``n`` pairs of ``pairs_txt`` with the most
      matches (with ``loc_logs``: the most matches on PnP inliers of the query, then the most
      matches), one pair per first image; green / red by PnP inlier of the query keypoint when
      the query was localized, else one colour.
    - ``keypoints_<k>_<name0>__<name1>.png``: the keypoints of the same pairs.
    - with ``loc_logs`` (and ``reconstruction``): ``loc_<group>_<k>_<query>.png``, per query
      condition (``day`` / ``night`` from the name's folders, else ``query``) ``n`` localized
      queries from the most inliers to the fewest, and (group ``failed``) ``n`` failed ones,
      one per failure reason first: the query's 2D-3D correspondences through the db image
      with the most inliers (:func:`localize.visualization.visualize_loc_from_log`), captioned with the inliers, the
      pose error when ``gt_poses`` has the query, or the failure reason.
    - with ``reconstruction``: ``sfm_<color_by>.png``, one model image coloured by visibility,
      track length and depth (:func:`localize.visualization.visualize_sfm_2d`).

    Args:
        image_dir: root of the image names.
        features_h5, matches_h5: the run's features (``keypoints``) and query-db matches.
        pairs_txt: the query-db pairs file (query first).
        n: pictures per kind (>= 1).
        loc_logs: the dict ``localize.localize_sfm.main`` returns (also its ``*_logs.json``);
            the hloc logs next to its ``results`` (``<results>_logs.pkl``) are read too.
        gt_poses: {query: (q wxyz (4,), t (3,))} world-to-camera ground truth.
        reconstruction: the model the queries were localized in (pycolmap.Reconstruction or
            folder); required with ``loc_logs``.
        dpi: pixels per inch (images are 6 inches high).
    Returns:
        the PNG paths written.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if loc_logs is not None and reconstruction is None:
        raise ValueError(
            "save_pipeline_figures: loc_logs need the reconstruction (the db "
            "keypoints of the 2D-3D correspondences come from its tracks)"
        )
    current = viz._current[0]
    try:
        return _pipeline_figures(
            Path(image_dir),
            features_h5,
            matches_h5,
            pairs_txt,
            Path(out_dir),
            n,
            loc_logs,
            gt_poses,
            reconstruction,
            dpi,
        )
    finally:
        viz._current[0] = current  # the run's figures are not left as the current one


def _pipeline_figures(
    image_dir: Path,
    features_h5: str | os.PathLike,
    matches_h5: str | os.PathLike,
    pairs_txt: str | os.PathLike,
    out_dir: Path,
    n: int,
    loc_logs: Mapping[str, Any] | None,
    gt_poses: Mapping[str, tuple] | None,
    reconstruction: Any,
    dpi: float,
) -> list[Path]:
    """:func:`save_pipeline_figures` once its arguments are checked."""
    image_dir = _folder(image_dir, "image folder")
    loc = dict((loc_logs or {}).get("loc", {}))
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        written.append(save_plot(out_dir / name, fig=fig))
        fig.clear()

    def image(name: str) -> np.ndarray:
        return read_image(image_dir / name)

    with contextlib.ExitStack() as files:
        feats = io.open_for_reading(files, features_h5)
        matches = io.open_for_reading(files, matches_h5)
        ranked = []
        for a, b in tqdm(
            parsers.parse_pairs(pairs_txt), desc="rank pairs", unit="pair", disable=None
        ):
            if not io.has_pair(matches, a, b):
                continue
            m, _ = io.get_matches(matches, a, b)
            inl = set(loc.get(a, {}).get("inliers") or [])
            n_inl = int(sum(int(i) in inl for i in m[:, 0]))
            ranked.append((-n_inl, -len(m), a, b))
        best, seen = [], set()
        for _, _, a, b in sorted(ranked):
            if a not in seen and len(best) < n:
                best.append((a, b))
                seen.add(a)
        for k, (a, b) in enumerate(best):
            m, _ = io.get_matches(matches, a, b)
            ka, kb = io.get_keypoints(feats, a), io.get_keypoints(feats, b)
            ia, ib = image(a), image(b)
            fig = _new_figure([ia, ib], dpi=dpi, figsize=6)
            entry = loc.get(a)
            if entry is not None and entry.get("success"):
                ok = np.isin(m[:, 0], np.asarray(entry.get("inliers") or [], np.int64))
                _plot_inliers(fig, ka[m[:, 0]], kb[m[:, 1]], ok)
                text = f"{len(m)} matches, {int(ok.sum())} from PnP inliers of the query"
                add_legend(
                    1,
                    [
                        (INLIER, f"query keypoint is a PnP inlier ({int(ok.sum())})"),
                        (OUTLIER, f"query keypoint not a PnP inlier ({int((~ok).sum())})"),
                    ],
                    fig=fig,
                )
            else:
                plot_matches(
                    ka[m[:, 0]],
                    kb[m[:, 1]],
                    MATCH,
                    lw=0.8,
                    ps=6,
                    a=float(np.clip(100 / max(len(m), 1), 0.12, 0.8)),
                    fig=fig,
                )
                text = f"{len(m)} matches" + (" (query NOT localized)" if entry else "")
            add_text(0, text, fig=fig)
            _name(fig, 0, a)
            _name(fig, 1, b)
            save(fig, f"matches_{k:03d}_{_flat(a)}__{_flat(b)}.png")

            fig = _new_figure([ia, ib], dpi=dpi, figsize=6)
            plot_keypoints([ka, kb], colors=KEYPOINT, ps=6, fig=fig)
            for i, (kp, name) in enumerate(((ka, a), (kb, b))):
                add_text(i, f"{len(kp)} keypoints", fig=fig)
                _name(fig, i, name)
            save(fig, f"keypoints_{k:03d}_{_flat(a)}__{_flat(b)}.png")

    if reconstruction is not None:
        rec = _reconstruction(reconstruction)
        for color_by in SFM_COLORINGS:
            for fig in visualize_sfm_2d(rec, image_dir, color_by=color_by, dpi=dpi):
                save(fig, f"sfm_{color_by}.png")
    if loc_logs is None:
        return written
    estimated = read_poses(loc_logs["results"]) if gt_poses is not None else {}
    hloc_loc = _read_hloc_logs(loc_logs["results"])
    count: dict[str, int] = defaultdict(int)
    for group, q in _pick_queries(loc, n):
        if q not in hloc_loc:
            logger.warning("query %s: not in the hloc logs of %s", q, loc_logs["results"])
            continue
        caption = _loc_caption(q, loc[q], estimated, gt_poses)
        for fig in _loc_figures(image_dir, q, hloc_loc[q], rec, None, 1, dpi, caption, figsize=6):
            save(fig, f"loc_{group}_{count[group]:03d}_{_flat(q)}.png")
            count[group] += 1
    return written


__all__ = ["condition", "save_pipeline_figures"]
