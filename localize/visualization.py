"""Pictures with matplotlib: hloc's ``visualization`` / ``utils.viz`` functions.

``plot_images``, ``plot_keypoints``, ``plot_matches``, ``add_text``, ``save_plot``,
``read_image``, ``cm_RdGn``, ``visualize_sfm_2d``, ``visualize_loc`` and
``visualize_loc_from_log`` take hloc's parameters, so hloc's notebook cells run with
``from localize import visualization``. pyplot is never imported: ``plot_images`` returns a
``matplotlib.figure.Figure`` and makes it the *current figure* that calls without ``fig=`` draw
on; ``visualize_*`` return a :class:`Figures` list (notebooks display both). Keypoints are hloc
xy (pixel centres at integers). A run's PNGs: :mod:`localize.run_pictures`.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import matplotlib.colors as mcolors
import matplotlib.patheffects as path_effects
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from descriptors.util import atomic_write
from localize import colmap, image_io
from localize.localize_sfm import hloc_logs_path, logs_path_for

INLIER, OUTLIER = "#00ff00", "#ff0000"  # PnP inlier / outlier: cm_RdGn(1) / cm_RdGn(0)
MATCH = "#00a0ff"  # a match whose correctness is unknown
KEYPOINT = "lime"
TRIANGULATED, NOT_TRIANGULATED = "#1f4fff", "#ff2020"
NAME_FS = 10  # points: image names (hloc: 5, unreadable)
TITLE_IN = 0.35  # inches above the images when titled
CBAR_IN = 1.0  # inches right of the image for a colour bar
SFM_COLORINGS = ("visibility", "track_length", "depth")


class _Figure(Figure):
    """A Figure that notebooks show as a PNG (no pyplot backend needed)."""

    def _repr_png_(self) -> bytes:
        buf = BytesIO()
        self.savefig(buf, format="png")
        return buf.getvalue()


class Figures(list):
    """The figures a ``visualize_*`` call drew; a notebook shows them as pictures."""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(*self)


_current: list[Figure | None] = [None]  # the figure hloc-style calls without fig= draw on


def _made_current(figs: Figures) -> Figures:
    """The last figure becomes the current one (hloc's ``save_plot()`` after a call saves it)."""
    if figs:
        _current[0] = figs[-1]
    return figs


def _fig(fig: Figure | None) -> Figure:
    fig = fig if fig is not None else _current[0]
    if fig is None:
        raise ValueError("no figure to draw on: call plot_images first (or pass fig=)")
    return fig


def cm_RdGn(x: np.ndarray | Sequence[float]) -> np.ndarray:
    """hloc's colour map: (N,) values in [0, 1] -> (N, 3) RGB, red (0) -> yellow -> green (1)."""
    x = np.clip(np.asarray(x, np.float64), 0, 1)[..., None]
    return np.clip(np.concatenate([2 - 2 * x, 2 * x, np.zeros_like(x)], -1), 0, 1)


def read_image(path: str | os.PathLike, grayscale: bool = False) -> np.ndarray:
    """hloc's ``read_image``: (H, W, 3) uint8 RGB, or (H, W) uint8 grey
    (``localize.image_io.read_image``: one-line error naming a missing or broken file)."""
    return image_io.read_image(path, grayscale=grayscale)


def _as_image(img: Any) -> np.ndarray:
    """NumPy or torch image, (H, W), (H, W, 1|3) or (1|3, H, W) -> (H, W) or (H, W, 3)."""
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3) or 0 in img.shape:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")
    return img


def _new_figure(
    imgs: Sequence[Any],
    titles: Sequence[str] | None = None,
    cmaps: str | Sequence[str] = "gray",
    dpi: float = 100,
    pad: float = 0.5,
    adaptive: bool = True,
    figsize: float = 4.5,
    right: float = 0.0,
) -> Figure:
    """Figure with the images side by side, ``figsize`` inches high, ``pad`` * 10 points
    apart, no margins; ``right`` inches kept free on the right (colour bar)."""
    imgs = [_as_image(i) for i in imgs]
    if not imgs:
        raise ValueError("plot_images: no image to plot")
    n = len(imgs)
    cmaps = list(cmaps) if isinstance(cmaps, (list, tuple)) else [cmaps] * n
    ratios = [i.shape[1] / i.shape[0] for i in imgs] if adaptive else [4 / 3] * n
    gap = pad * 10 / 72
    top = TITLE_IN if titles else 0.0
    width = figsize * sum(ratios) + gap * (n - 1) + right
    height = figsize + top
    fig = _Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    x = 0.0
    for k, (img, r) in enumerate(zip(imgs, ratios)):
        ax = fig.add_axes((x / width, 0.0, figsize * r / width, figsize / height))
        grey_range = {"vmin": 0, "vmax": 255} if img.ndim == 2 and img.dtype == np.uint8 else {}
        ax.imshow(img, cmap=cmaps[k], **grey_range)
        ax.set_axis_off()
        if titles and k < len(titles) and titles[k]:
            ax.set_title(titles[k], fontsize=12)
        x += figsize * r + gap
    return fig


def plot_images(
    imgs: Sequence[Any],
    titles: Sequence[str] | None = None,
    cmaps: str | Sequence[str] = "gray",
    dpi: float = 100,
    pad: float = 0.5,
    adaptive: bool = True,
    figsize: float = 4.5,
) -> Figure:
    """hloc's ``plot_images``: a figure with the images side by side (it becomes the current
    figure). ``imgs``: NumPy or torch images, (H, W, 3) RGB or (H, W) grey; ``adaptive``: axes
    widths follow the W / H ratios (else 4:3 each); ``figsize``: height in inches."""
    fig = _new_figure(imgs, titles, cmaps, dpi, pad, adaptive, figsize)
    _current[0] = fig
    return fig


def _xy(kpts: Any, what: str) -> np.ndarray:
    k = np.asarray(kpts.detach().cpu().numpy() if hasattr(kpts, "detach") else kpts, np.float64)
    if k.size == 0:
        return k.reshape(0, 2)
    if k.ndim != 2 or k.shape[1] != 2:
        raise ValueError(f"{what} must be (N, 2) pixel xy, got shape {k.shape}")
    return k


def _rgba(color: Any, n: int) -> np.ndarray:
    """One colour (name / RGB(A) tuple) or n colours -> (n, 4) RGBA; None: random hues."""
    if n == 0:
        return np.zeros((0, 4))
    if color is None:
        return colormaps["hsv"](np.random.default_rng(0).random(n))
    if isinstance(color, str) or (len(color) in (3, 4) and np.isscalar(color[0])):
        return np.tile(mcolors.to_rgba(color), (n, 1))
    c = mcolors.to_rgba_array(np.asarray(color) if not isinstance(color[0], str) else color)
    if len(c) != n:
        raise ValueError(f"{len(c)} colours for {n} points")
    return c


def plot_keypoints(
    kpts: Sequence[Any], colors: Any = KEYPOINT, ps: float = 4, fig: Figure | None = None
) -> None:
    """hloc's ``plot_keypoints``: ``kpts[i]`` (N_i, 2) pixel xy as dots on image i; ``colors``:
    one colour, or one per image (a colour or (N_i, 3|4) per keypoint); ``ps``: dot area, pt^2."""
    fig = _fig(fig)
    if not isinstance(colors, list):
        colors = [colors] * len(kpts)
    for ax, k, c in zip(fig.axes, kpts, colors):
        k = _xy(k, "kpts")
        ax.scatter(k[:, 0], k[:, 1], c=_rgba(c, len(k)), s=ps, linewidths=0)


def plot_matches(
    kpts0: Any,
    kpts1: Any,
    color: Any = None,
    lw: float = 1.5,
    ps: float = 4,
    indices: tuple[int, int] = (0, 1),
    a: float = 1.0,
    fig: Figure | None = None,
) -> None:
    """hloc's ``plot_matches``: a line from ``kpts0[i]`` on image ``indices[0]`` to
    ``kpts1[i]`` on image ``indices[1]`` (both (M, 2) pixel xy).

    ``color``: one colour, or (M, 3|4) / M colours (random hues when None); ``lw``: line width
    in points (0: no lines); ``ps``: end dots' area (0: none); ``a``: line opacity."""
    fig = _fig(fig)
    if len(fig.axes) <= max(indices):
        raise ValueError(f"the figure has {len(fig.axes)} images, indices are {indices}")
    ax0, ax1 = fig.axes[indices[0]], fig.axes[indices[1]]
    k0, k1 = _xy(kpts0, "kpts0"), _xy(kpts1, "kpts1")
    if len(k0) != len(k1):
        raise ValueError(f"kpts0 and kpts1 differ in length: {len(k0)} vs {len(k1)}")
    rgba = _rgba(color, len(k0))
    for ax in (ax0, ax1):
        ax.apply_aspect()
        ax.autoscale(enable=False)
    if lw > 0 and len(k0):
        to_fig = fig.transFigure.inverted()
        p0 = to_fig.transform(ax0.transData.transform(k0))
        p1 = to_fig.transform(ax1.transData.transform(k1))
        fig.add_artist(
            LineCollection(
                np.stack([p0, p1], 1),
                colors=rgba,
                linewidths=lw,
                alpha=a,
                transform=fig.transFigure,
                zorder=1,
            )
        )
    if ps > 0:
        ax0.scatter(k0[:, 0], k0[:, 1], c=rgba, s=ps, linewidths=0)
        ax1.scatter(k1[:, 0], k1[:, 1], c=rgba, s=ps, linewidths=0)


def add_text(
    idx: int,
    text: str,
    pos: tuple[float, float] = (0.01, 0.99),
    fs: float = 15,
    color: str = "w",
    lcolor: str | None = "k",
    lwidth: float = 2,
    ha: str = "left",
    va: str = "top",
    fig: Figure | None = None,
) -> None:
    """hloc's ``add_text``: ``text`` on image ``idx`` at ``pos`` (axes fraction), ``fs``
    points, with a ``lcolor`` outline (None: no outline)."""
    ax = _fig(fig).axes[idx]
    t = ax.text(*pos, text, fontsize=fs, ha=ha, va=va, color=color, transform=ax.transAxes)
    if lcolor is not None:
        t.set_path_effects(
            [path_effects.Stroke(linewidth=lwidth, foreground=lcolor), path_effects.Normal()]
        )


def save_plot(path: str | os.PathLike, fig: Figure | None = None, **kw: Any) -> Path:
    """Write the figure (default: the current one) to ``path`` atomically, format from the
    suffix (PNG when none); ``kw`` go to ``Figure.savefig``. Returns the path."""
    fig, path = _fig(fig), Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=path.suffix[1:] or "png", **kw)
    return path


def _name(fig: Figure, idx: int, name: str) -> None:
    add_text(idx, name, pos=(0.01, 0.01), fs=NAME_FS, lwidth=2.5, va="bottom", fig=fig)


def add_legend(
    idx: int,
    entries: Sequence[tuple[Any, str]],
    loc: str = "upper right",
    fig: Figure | None = None,
) -> None:
    """Legend of (colour, label) dots on image ``idx`` (our addition to hloc's functions)."""
    handles = [Line2D([], [], ls="", marker="o", ms=7, color=c, label=lab) for c, lab in entries]
    _fig(fig).axes[idx].legend(handles=handles, loc=loc, fontsize=9, framealpha=0.8)


def _colorbar(
    fig: Figure,
    mappable: ScalarMappable,
    label: str,
    ticks: Sequence[int] | None = None,
    extend: str = "neither",
) -> None:
    """Colour bar in the ``CBAR_IN`` band right of the last image (``ticks``: integer
    labels)."""
    w = fig.get_size_inches()[0]
    cax = fig.add_axes(((w - CBAR_IN + 0.12) / w, 0.08, 0.18 / w, 0.84))
    cb = fig.colorbar(mappable, cax=cax, extend=extend)
    if ticks is not None:
        cb.minorticks_off()
        cb.set_ticks(list(ticks), labels=[str(t) for t in ticks])
    cb.set_label(label, fontsize=10)
    cb.ax.tick_params(labelsize=9)


def _plot_inliers(fig: Figure, k0: np.ndarray, k1: np.ndarray, ok: np.ndarray) -> None:
    """Matches (M, 2) <-> (M, 2) on images 0 and 1, green where ``ok`` (M,) else red, red drawn
    last; lines fainter when there are many (opaque end dots)."""
    order = np.argsort(~ok, kind="stable")
    a = float(np.clip(100 / max(len(ok), 1), 0.12, 0.8))
    plot_matches(k0[order], k1[order], cm_RdGn(ok[order].astype(float)), lw=0.8, ps=6, a=a, fig=fig)


def _reconstruction(reconstruction: Any) -> Any:
    """A pycolmap.Reconstruction, or a model folder read with ``colmap.read_model``."""
    if isinstance(reconstruction, (str, os.PathLike)):
        return colmap.read_model(reconstruction)
    return reconstruction


def _folder(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def visualize_sfm_2d(
    reconstruction: Any,
    image_dir: str | os.PathLike,
    color_by: str = "visibility",
    selected: Sequence[int] = [],
    n: int = 1,
    seed: int = 0,
    dpi: float = 75,
) -> Figures:
    """hloc's ``visualize_sfm_2d``: keypoints of model images over the images.

    Args:
        reconstruction: pycolmap.Reconstruction or model folder.
        image_dir: root of the image names.
        color_by: ``visibility`` (blue: keypoint with a 3D point, red: without),
            ``track_length`` (3D points coloured by the number of images seeing them, log
            scale; keypoints without one grey) or ``depth`` (3D points by their depth in the
            camera, model units, colours spanning the 2nd to 98th percentile; keypoints
            without one not drawn).
        selected: image ids to draw; else ``n`` registered images sampled with ``seed``.
    Returns:
        one figure per image (caption: counts; name bottom left; legend or colour bar).
    """
    image_dir = _folder(image_dir, "image folder")
    if color_by not in SFM_COLORINGS:
        raise ValueError(f"color_by must be one of {SFM_COLORINGS}, got {color_by!r}")
    rec = _reconstruction(reconstruction)
    if not selected:
        ids = colmap.registered_image_ids(rec)
        selected = random.Random(seed).sample(ids, min(n, len(ids)))
    figs = Figures()
    for image_id in selected:
        name, xy, p3d = colmap.image_keypoints(rec, image_id)
        vis = p3d >= 0
        image = read_image(image_dir / name)
        if color_by == "visibility":
            fig = _new_figure([image], dpi=dpi)
            plot_keypoints([xy[~vis]], colors=NOT_TRIANGULATED, fig=fig)
            plot_keypoints([xy[vis]], colors=TRIANGULATED, fig=fig)
            text = f"visible: {int(vis.sum())}/{len(vis)}"
            add_legend(
                0,
                [
                    (TRIANGULATED, f"3D point ({int(vis.sum())})"),
                    (NOT_TRIANGULATED, f"no 3D point ({int((~vis).sum())})"),
                ],
                fig=fig,
            )
        elif color_by == "track_length":
            fig = _new_figure([image], dpi=dpi, right=CBAR_IN)
            _, tl = colmap.points_xyz_track_length(rec, p3d[vis])
            norm = mcolors.LogNorm(vmin=2, vmax=max(3, int(tl.max()) if len(tl) else 3))
            sm = ScalarMappable(norm=norm, cmap="jet")
            plot_keypoints([xy[~vis]], colors="0.6", fig=fig)
            plot_keypoints([xy[vis]], colors=[sm.to_rgba(tl)], fig=fig)
            text = (
                f"max/median track length: {int(tl.max())}/{np.median(tl):g}"
                if len(tl)
                else "no 3D point"
            )
            ticks = np.unique(np.round(np.geomspace(norm.vmin, norm.vmax, 6))).astype(int)
            _colorbar(fig, sm, "track length (images)", ticks)
            add_legend(0, [("0.6", f"no 3D point ({int((~vis).sum())})")], fig=fig)
        else:
            fig = _new_figure([image], dpi=dpi, right=CBAR_IN)
            xyz, _ = colmap.points_xyz_track_length(rec, p3d[vis])
            z = colmap.project_points(rec, image_id, xyz)[1]
            lo, hi = np.percentile(z, [2, 98]) if len(z) else (0.0, 1.0)
            sm = ScalarMappable(norm=mcolors.Normalize(lo, max(hi, lo + 1e-9)), cmap="jet")
            plot_keypoints([xy[vis]], colors=[sm.to_rgba(z)], fig=fig)
            text = f"visible: {int(vis.sum())}/{len(vis)}"
            _colorbar(fig, sm, "depth (model units)", extend="both")
        add_text(0, text, fig=fig)
        _name(fig, 0, name)
        figs.append(fig)
    return _made_current(figs)


def _loc_correspondences(
    loc: Mapping[str, Any], rec: Any, query_name: str
) -> tuple[np.ndarray, np.ndarray, list[list[tuple[int, int]]]]:
    """(query keypoints (K, 2) hloc xy, inlier mask (K,), per db image of ``loc['db']``:
    [(row into the query keypoints, db keypoint index)]) of one hloc log entry."""
    missing = {"db", "keypoints_query", "keypoint_index_to_db"} - set(loc)
    if missing:
        raise ValueError(
            f"{query_name}: not an hloc localization log (no {sorted(missing)}); "
            "pass an entry of <results>_logs.pkl or pose_from_cluster's log"
        )
    kq = _xy(loc["keypoints_query"], "keypoints_query") - 0.5  # COLMAP -> hloc
    pnp = loc.get("PnP_ret")
    inl = np.asarray(pnp["inlier_mask"], bool).reshape(-1) if pnp else np.zeros(len(kq), bool)
    _, p3d_to_db = loc["keypoint_index_to_db"]
    if len(inl) != len(kq) or len(p3d_to_db) != len(kq):
        raise ValueError(
            f"{query_name}: log has {len(kq)} keypoints, {len(inl)} inlier flags "
            f"and {len(p3d_to_db)} 3D points"
        )
    db = [int(i) for i in loc["db"]]
    per_db: list[list[tuple[int, int]]] = [[] for _ in db]
    for row, (pid, db_idxs) in enumerate(p3d_to_db):
        track = colmap.point_observations(rec, pid)
        for j in db_idxs:
            if db[j] not in track:
                raise ValueError(
                    f"{query_name}: the log and the reconstruction disagree "
                    f"(3D point {pid} not seen by image {db[j]})"
                )
            per_db[j].append((row, track[db[j]]))
    return kq, inl, per_db


def _loc_figures(
    image_dir: Path,
    query_name: str,
    loc: Mapping[str, Any],
    rec: Any,
    db_image_dir: Path | None,
    top_k_db: int,
    dpi: float,
    caption: str | None = None,
    figsize: float = 4.5,
) -> Figures:
    """Query | db image pictures of one hloc log entry: its 2D-3D correspondences through the
    ``top_k_db`` db images with the most inliers (then correspondences), green when a PnP
    inlier, red otherwise. ``caption`` (default: hloc's ``inliers: a/b``) goes top left."""
    if loc.get("covisibility_clustering", False):
        loc = {**loc["log_clusters"][loc["best_cluster"] or 0], "reason": loc.get("reason")}
    kq, inl, per_db = _loc_correspondences(loc, rec, query_name)
    q_image = read_image(image_dir / query_name)
    failed = not loc.get("PnP_ret")
    reason = loc.get("reason") or ("PnP failed" if len(kq) else "no 2D-3D correspondence")
    order = sorted(
        (j for j in range(len(per_db)) if per_db[j]),
        key=lambda j: (-sum(inl[r] for r, _ in per_db[j]), -len(per_db[j]), j),
    )
    figs = Figures()
    if not order:  # nothing to draw between: the query alone, with why
        fig = _new_figure([q_image], dpi=dpi, figsize=figsize)
        add_text(0, caption or f"not localized: {reason}", fig=fig)
        _name(fig, 0, query_name)
        return Figures([fig])
    for j in order[:top_k_db]:
        db_name, db_xy, _ = colmap.image_keypoints(rec, int(loc["db"][j]))
        rows = np.array(per_db[j], np.int64)
        ok = inl[rows[:, 0]]
        db_image = read_image((db_image_dir or image_dir) / db_name)
        fig = _new_figure([q_image, db_image], dpi=dpi, figsize=figsize)
        _plot_inliers(fig, kq[rows[:, 0]], db_xy[rows[:, 1]], ok)
        if failed:
            text = f"{len(ok)} 2D-3D through this db image"
            text = f"{caption or 'not localized: ' + reason}\n{text}"
            add_legend(1, [(OUTLIER, f"2D-3D, no pose ({len(ok)})")], fig=fig)
        else:
            text = f"inliers: {int(ok.sum())}/{len(ok)}"
            text = f"{caption}\nthis db image: {text}" if caption else text
            add_legend(
                1,
                [
                    (INLIER, f"PnP inlier ({int(ok.sum())})"),
                    (OUTLIER, f"outlier ({int((~ok).sum())})"),
                ],
                fig=fig,
            )
        add_text(0, text, fig=fig)
        _name(fig, 0, f"query: {query_name}")
        _name(fig, 1, f"db: {db_name}")
        figs.append(fig)
    return figs


def visualize_loc_from_log(
    image_dir: str | os.PathLike,
    query_name: str,
    loc: Mapping[str, Any],
    reconstruction: Any = None,
    db_image_dir: str | os.PathLike | None = None,
    top_k_db: int = 2,
    dpi: float = 75,
) -> Figures:
    """hloc's ``visualize_loc_from_log``: one query's 2D-3D correspondences, drawn between the
    query and each of the ``top_k_db`` db images with the most PnP inliers (green inlier, red
    outlier; caption ``inliers: a/b``, or ``not localized: <reason>``; both names shown).

    Args:
        loc: one query's hloc log (``pose_from_cluster``'s ``log`` or an entry of
            ``<results>_logs.pkl``): ``db`` (image ids), ``PnP_ret`` (None when PnP failed),
            ``keypoints_query`` (COLMAP coordinates), ``keypoint_index_to_db``; an optional
            ``reason`` (ours) is shown for a failed query.
        reconstruction: the model the query was localized in (pycolmap.Reconstruction or
            folder): it gives the db keypoints of each 3D point.
    Returns:
        the figures (the query alone, captioned, when it has no correspondence).
    """
    if reconstruction is None:
        raise ValueError(
            "visualize_loc_from_log needs the reconstruction: the db keypoints come from its tracks"
        )
    image_dir = _folder(image_dir, "image folder")
    return _made_current(
        _loc_figures(
            image_dir,
            query_name,
            loc,
            _reconstruction(reconstruction),
            Path(db_image_dir) if db_image_dir else None,
            top_k_db,
            dpi,
        )
    )


def _read_hloc_logs(results: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """{query: hloc log entry} of ``<results>_logs.pkl``, with our ``reason`` of each failed
    query added from ``<results stem>_logs.json`` when that file exists."""
    path = hloc_logs_path(results)
    if not path.is_file():
        raise FileNotFoundError(f"localization logs not found: {path}")
    try:
        with open(path, "rb") as f:
            loc = dict(pickle.load(f)["loc"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an hloc localization log ({type(e).__name__})") from None
    ours = logs_path_for(results)
    if ours.is_file():
        for q, e in json.loads(ours.read_text(encoding="utf-8")).get("loc", {}).items():
            if q in loc and not e.get("success", True):
                loc[q] = {**loc[q], "reason": e.get("reason")}
    return loc


def visualize_loc(
    results: str | os.PathLike,
    image_dir: str | os.PathLike,
    reconstruction: Any = None,
    db_image_dir: str | os.PathLike | None = None,
    selected: Sequence[str] = [],
    n: int = 1,
    seed: int = 0,
    prefix: str | None = None,
    **kwargs: Any,
) -> Figures:
    """hloc's ``visualize_loc``: :func:`visualize_loc_from_log` for queries of the results
    file's ``<results>_logs.pkl`` (``selected``, else ``n`` sampled with ``seed`` among the
    names starting with ``prefix``); ``kwargs``: ``top_k_db``, ``dpi``."""
    if reconstruction is None:
        raise ValueError(
            "visualize_loc needs the reconstruction: the db keypoints come from its tracks"
        )
    image_dir = _folder(image_dir, "image folder")
    logs = _read_hloc_logs(results)
    if not selected:
        queries = [q for q in logs if not prefix or q.startswith(prefix)]
        selected = random.Random(seed).sample(queries, min(n, len(queries)))
    rec = _reconstruction(reconstruction)
    figs = Figures()
    for q in selected:
        if q not in logs:
            raise KeyError(f"query {q} not in {results}_logs.pkl")
        figs += visualize_loc_from_log(image_dir, q, logs[q], rec, db_image_dir, **kwargs)
    return figs


__all__ = [
    "Figures",
    "add_legend",
    "add_text",
    "cm_RdGn",
    "plot_images",
    "plot_keypoints",
    "plot_matches",
    "read_image",
    "save_plot",
    "visualize_loc",
    "visualize_loc_from_log",
    "visualize_sfm_2d",
]
