"""Pictures of keypoints, matches and localization inliers, drawn with OpenCV into PNG files.

Pure functions (no global figure state; matplotlib is not a dependency). Conventions:

- images: (H, W) uint8 grey or (H, W, 3) uint8 RGB;
- keypoints: (N, 2) float pixel xy, pixel centres at integers (``localize.io.get_keypoints``);
- matches: (M, 2) int [index into kpts0, index into kpts1] (``localize.io.get_matches``);
- pictures are (H, W, 3) uint8 RGB in memory; the ``plot_*`` functions write them as PNG
  (atomically) and return the path.

Pairs are drawn side by side (image0 left, image1 right, tops aligned, ``GAP`` px apart). Match
lines are :data:`CORRECT` (green) / :data:`WRONG` (red) when correctness is known, else
:data:`MATCH`; localization inliers use the same green / red.

``save_pipeline_figures`` draws the outputs of an hloc-style run (features.h5, matches.h5, the
pairs file and, optionally, ``localize.localize_sfm`` logs) with ``localize.io``'s readers.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from descriptors.util import atomic_write
from localize import io
from localize.data.render import write_rgb
from localize.evaluate import read_poses
from localize.geometry import pose_error

logger = logging.getLogger(__name__)

CORRECT = (0, 200, 0)         # RGB
WRONG = (230, 0, 0)
MATCH = (0, 160, 255)         # correctness unknown
KEYPOINT = (255, 200, 0)
GAP = 10                      # pixels between the two images of a pair
TEXT_SCALE = 0.5             # font scale per 640 px of picture height (never below 0.5)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB uint8 -> a contiguous (H, W, 3) uint8 RGB copy."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or \
            (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 image, got {image.shape} "
                         f"{image.dtype}")
    return np.ascontiguousarray(np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image)


def _points(kpts: np.ndarray, what: str) -> np.ndarray:
    k = np.asarray(kpts, np.float64)
    if k.ndim != 2 or k.shape[1] != 2:
        raise ValueError(f"{what} must be (N, 2) pixel xy, got shape {k.shape}")
    return k


def _pt(xy: np.ndarray, dx: int = 0) -> tuple[int, int]:
    return int(round(float(xy[0]))) + dx, int(round(float(xy[1])))


def put_text(canvas: np.ndarray, text: str) -> np.ndarray:
    """White text with a black outline at the top left, in place; the font grows with the
    picture height."""
    scale = TEXT_SCALE * max(1.0, canvas.shape[0] / 640)
    org = (5, int(round(18 * scale / TEXT_SCALE)))
    for color, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color,
                    int(round(thick * scale / TEXT_SCALE)), cv2.LINE_AA)
    return canvas


def draw_keypoints(image: np.ndarray, kpts: np.ndarray, colors: np.ndarray | Sequence[int]
                   = KEYPOINT, radius: int = 2) -> np.ndarray:
    """Image with a filled circle at every keypoint.

    Args:
        kpts: (N, 2) pixel xy.
        colors: one RGB triple, or (N, 3) per keypoint.
    Returns:
        (H, W, 3) uint8 RGB copy of ``image``.
    """
    canvas = as_rgb(image).copy()
    k = _points(kpts, "kpts")
    cols = np.broadcast_to(np.asarray(colors, np.int64).reshape(-1, 3), (len(k), 3))
    for xy, c in zip(k, cols):
        cv2.circle(canvas, _pt(xy), radius, tuple(int(v) for v in c), -1, cv2.LINE_AA)
    return canvas


def side_by_side(image0: np.ndarray, image1: np.ndarray) -> tuple[np.ndarray, int]:
    """(canvas (max(H0, H1), W0 + GAP + W1, 3) uint8 RGB with a white gap, x offset of image1)."""
    a, b = as_rgb(image0), as_rgb(image1)
    h = max(a.shape[0], b.shape[0])
    canvas = np.full((h, a.shape[1] + GAP + b.shape[1], 3), 255, np.uint8)
    canvas[:a.shape[0], :a.shape[1]] = a
    dx = a.shape[1] + GAP
    canvas[:b.shape[0], dx:] = b
    return canvas, dx


def match_colors(correct: np.ndarray | None, n: int) -> np.ndarray:
    """(n, 3) RGB: CORRECT / WRONG from ``correct`` (n,) bool, or MATCH for all when None."""
    if correct is None:
        return np.tile(np.array(MATCH), (n, 1))
    c = np.asarray(correct, bool).reshape(-1)
    if len(c) != n:
        raise ValueError(f"correct has {len(c)} entries for {n} matches")
    return np.where(c[:, None], np.array(CORRECT), np.array(WRONG))


def draw_matches(image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
                 matches: np.ndarray, correct: np.ndarray | None = None, thickness: int = 1,
                 text: str | None = None) -> np.ndarray:
    """Side-by-side picture with one line (and end dots) per match.

    Args:
        kpts0, kpts1: (N0, 2), (N1, 2) pixel xy.
        matches: (M, 2) int [i0, i1].
        correct: (M,) bool (green / red lines), or None (one colour).
        text: drawn at the top left.
    Returns:
        (max(H0, H1), W0 + GAP + W1, 3) uint8 RGB.
    """
    k0, k1 = _points(kpts0, "kpts0"), _points(kpts1, "kpts1")
    m = np.asarray(matches, np.int64).reshape(-1, 2)
    if len(m) and (m[:, 0].max() >= len(k0) or m[:, 1].max() >= len(k1) or m.min() < 0):
        raise ValueError(f"matches index keypoints out of range ({len(k0)}, {len(k1)})")
    canvas, dx = side_by_side(image0, image1)
    for (i0, i1), c in zip(m, match_colors(correct, len(m))):
        col = tuple(int(v) for v in c)
        p0, p1 = _pt(k0[i0]), _pt(k1[i1], dx)
        cv2.line(canvas, p0, p1, col, thickness, cv2.LINE_AA)
        cv2.circle(canvas, p0, 2, col, -1, cv2.LINE_AA)
        cv2.circle(canvas, p1, 2, col, -1, cv2.LINE_AA)
    if text:
        put_text(canvas, text)
    return canvas


def save_png(picture: np.ndarray, out_path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 RGB picture as PNG (atomically; parent folders created)."""
    out_path = Path(out_path)
    with atomic_write(out_path, suffix=".png") as tmp:
        write_rgb(tmp, picture)
    return out_path


def plot_keypoints(image: np.ndarray, kpts: np.ndarray, out_path: str | os.PathLike,
                   color: Sequence[int] = KEYPOINT, radius: int = 2) -> Path:
    """PNG of ``image`` (H, W) with its (N, 2) pixel-xy keypoints as dots; returns the path."""
    canvas = draw_keypoints(image, kpts, color, radius)
    put_text(canvas, f"{len(kpts)} keypoints")
    return save_png(canvas, out_path)


def plot_matches(image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
                 matches: np.ndarray, correct: np.ndarray | None, out_path: str | os.PathLike,
                 text: str | None = None) -> Path:
    """PNG of :func:`draw_matches` (green / red by ``correct`` (M,) bool, one colour when None);
    the default text counts the matches (and the correct ones). Returns the path."""
    n = len(np.asarray(matches).reshape(-1, 2))
    if text is None:
        text = f"{n} matches" + ("" if correct is None else
                                 f", {int(np.sum(correct))} correct")
    return save_png(draw_matches(image0, image1, kpts0, kpts1, matches, correct, text=text),
                    out_path)


def plot_localization(query_image: np.ndarray, kpts: np.ndarray, inlier_mask: np.ndarray | None,
                      db_image: np.ndarray, db_kpts: np.ndarray, matches: np.ndarray,
                      out_path: str | os.PathLike, text: str | None = None) -> Path:
    """One query's PnP inliers (as hloc's ``visualize_loc``): the query (left) and a retrieved
    database image (right) with their matches, green when the query keypoint is a PnP inlier,
    red when not.

    Args:
        query_image: (Hq, Wq[, 3]) uint8.
        kpts: (N, 2) pixel xy query keypoints (all of them: ``matches`` index them).
        inlier_mask: (N,) bool over ``kpts`` (True = PnP inlier), or None when unknown (all
            matches one colour).
        db_image: (Hd, Wd[, 3]) uint8; db_kpts: (K, 2) pixel xy.
        matches: (M, 2) int [query keypoint, db keypoint].
        text: top-left caption (default: inlier count among the matched query keypoints).
    Returns:
        the PNG path.
    """
    m = np.asarray(matches, np.int64).reshape(-1, 2)
    correct = None
    if inlier_mask is not None:
        mask = np.asarray(inlier_mask, bool).reshape(-1)
        if len(mask) != len(kpts):
            raise ValueError(f"inlier_mask has {len(mask)} entries for {len(kpts)} keypoints")
        correct = mask[m[:, 0]]
    if text is None:
        text = (f"{len(m)} matches" if correct is None else
                f"inliers: {int(correct.sum())}/{len(m)} matches")
    return save_png(draw_matches(query_image, db_image, kpts, db_kpts, m, correct, text=text),
                    out_path)


def _loc_caption(name: str, entry: Mapping[str, Any], estimated: Mapping[str, tuple],
                 gt_poses: Mapping[str, tuple] | None) -> str:
    """``name: ok, 45 inliers / 120 2D-3D[, 0.12 m 0.8 deg]`` or ``name: <failure reason>``."""
    if not entry.get("success"):
        return f"{name}: {entry.get('reason', 'not localized')}"
    s = f"{name}: {entry.get('num_inliers', 0)} inliers / {entry.get('num_2d3d', 0)} 2D-3D"
    est = estimated.get(name, estimated.get(name.rsplit("/", 1)[-1]))
    if gt_poses is not None and name in gt_poses and est is not None:
        dt, dr = pose_error(est[0], est[1], *gt_poses[name])
        s += f", error {dt:.2f} m {dr:.1f} deg"
    return s


def save_pipeline_figures(image_dir: str | os.PathLike, features_h5: str | os.PathLike,
                          matches_h5: str | os.PathLike, pairs_txt: str | os.PathLike,
                          out_dir: str | os.PathLike, n: int,
                          loc_logs: Mapping[str, Any] | None = None,
                          gt_poses: Mapping[str, tuple] | None = None) -> list[Path]:
    """Pictures of an hloc-style run.

    Args:
        image_dir: root the image names are relative to (images read with
            ``localize.io.read_image``).
        features_h5: features file holding ``keypoints`` of every image named below.
        matches_h5: matches file holding every pair drawn (either order, hloc keys).
        pairs_txt: pairs file (``name0 name1`` per line); the first ``n`` pairs are drawn as
            ``<out_dir>/matches_<k>_<name0>__<name1>.png`` (``/`` in names -> ``-``), matches in
            one colour (correctness unknown without geometry).
        n: number of pairs, and of localized queries, to draw (>= 1).
        loc_logs: the dict ``localize.localize_sfm.main`` returns (also its ``*_logs.json``):
            ``loc`` = {query name: entry} with ``success``, ``reason``, ``num_inliers``,
            ``num_2d3d``, ``top_db`` and ``matches_per_db``; ``results`` = the poses file. For
            the first ``n`` queries of ``loc``, ``<out_dir>/loc_<k>_<query>.png`` shows the
            query and the database image with the most matches (else ``top_db``); matches
            are green / red by PnP inlier when the entry has ``inliers`` (list of query
            keypoint indices), one colour otherwise.
        gt_poses: {query name: (q wxyz (4,), t (3,))} world-to-camera ground truth
            (``localize.data.aachen.AachenData.ground_truth``): the caption adds the pose error
            (metres, degrees) of the estimate read from ``loc_logs['results']``.
    Returns:
        the PNG paths written, pairs first.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    written: list[Path] = []

    def image(name: str) -> np.ndarray:
        return io.read_image(image_dir / name, grayscale=False)

    def flat(name: str) -> str:
        return name.replace("/", "-")

    for k, (a, b) in enumerate(io.parse_pairs(pairs_txt)[:n]):
        m, _ = io.get_matches(matches_h5, a, b)
        written.append(plot_matches(image(a), image(b), io.get_keypoints(features_h5, a),
                                    io.get_keypoints(features_h5, b), m, None,
                                    out_dir / f"matches_{k:03d}_{flat(a)}__{flat(b)}.png",
                                    text=f"{a} - {b}: {len(m)} matches"))
    if loc_logs is None:
        return written
    estimated = read_poses(loc_logs["results"]) if gt_poses is not None else {}
    for k, (q, entry) in enumerate(list(loc_logs["loc"].items())[:n]):
        per_db = entry.get("matches_per_db") or {}
        db = max(per_db, key=per_db.get) if per_db else entry.get("top_db")
        if db is None:
            logger.warning("query %s: no retrieved database image to draw", q)
            continue
        kq = io.get_keypoints(features_h5, q)
        mask = None
        if "inliers" in entry:
            mask = np.zeros(len(kq), bool)
            mask[np.asarray(entry["inliers"], np.int64)] = True
        m, _ = io.get_matches(matches_h5, q, db)
        written.append(plot_localization(image(q), kq, mask, image(db),
                                         io.get_keypoints(features_h5, db), m,
                                         out_dir / f"loc_{k:03d}_{flat(q)}.png",
                                         text=_loc_caption(q, entry, estimated, gt_poses)))
    return written


__all__ = ["CORRECT", "WRONG", "MATCH", "as_rgb", "draw_keypoints", "draw_matches",
           "side_by_side", "match_colors", "save_png", "plot_keypoints", "plot_matches",
           "plot_localization", "save_pipeline_figures"]
