"""Image pairs to match: exhaustive, from reference-model covisibility, from global retrieval.

All functions return ``list[(name0, name1)]``; :func:`main` writes them with
``localize.io.write_pairs`` (hloc format, no trailing newline).

- :func:`exhaustive` (hloc ``pairs_from_exhaustive``): all (n_i, n_j), i < j, within one list
  (hloc's order: by i, then j); or the full product query x reference (self pairs dropped).
- :func:`from_covisibility` (hloc ``pairs_from_covisibility``): for each reference image, the
  ``num_matched`` images sharing the most 3D points in a COLMAP model.
- :func:`from_poses` (hloc ``pairs_from_poses``): nearest camera centres with similar viewing
  directions, from a posed model (no 3D points needed).
- :func:`from_retrieval` (hloc ``pairs_from_retrieval``): top-``num_matched`` database images by
  inner product of ``global_descriptor`` datasets (self-pairs and negative scores masked);
  global descriptors come from ``localize.retrieve`` (or any hloc global-feats file).

hloc's entry points, same positional order and keywords: :func:`exhaustive_main` =
``pairs_from_exhaustive.main(output, image_list, features, ref_list, ref_features)``,
:func:`retrieval_main` = ``pairs_from_retrieval.main(descriptors, output, num_matched, ...)``,
:func:`covisibility_main` = ``pairs_from_covisibility.main(model, output, num_matched)``.

CLI::

    python -m localize.pairs exhaustive --features feats.h5 --output pairs.txt
    python -m localize.pairs covisibility --model sfm/ --num_matched 20 --output pairs.txt
    python -m localize.pairs retrieval --global_descriptors g.h5 --num_matched 20 \\
        [--query_prefix query] [--db_prefix db] [--db_model sfm/] --output pairs.txt
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from localize import colmap, geometry, h5, io
from localize.cli import run_cli

logger = logging.getLogger(__name__)

Pairs = list[tuple[str, str]]


def exhaustive(names: Sequence[str], names_ref: Sequence[str] | None = None) -> Pairs:
    """All pairs, in hloc's order. Without ``names_ref``: (names[i], names[j]) for i < j (each
    unordered pair once); with it: every (query, ref) with query != ref (hloc keeps self pairs;
    matching skips them anyway)."""
    names = list(names)
    if names_ref is None:
        return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    return [(a, b) for a in names for b in names_ref if a != b]


def from_covisibility(model_path: str | Path, num_matched: int) -> Pairs:
    """For each image of a COLMAP model, the ``num_matched`` images sharing most 3D points.

    Order: images by id; partners by decreasing number of shared points (ties: smaller image id
    first). Images without any covisible image are logged and get no pairs. Pairs appear once per
    direction they are selected in (``match.main`` dedupes (a, b) / (b, a)).
    """
    rec = colmap.read_model(model_path)
    tracks = colmap.point_tracks(rec)  # name -> {kp idx -> point3D_id}
    id_of = {im.name: int(i) for i, im in rec.images.items()}
    name_of = {v: k for k, v in id_of.items()}
    obs: dict[int, list[int]] = {}  # point3D_id -> image ids observing it
    for name, d in tracks.items():
        for pid in set(d.values()):
            obs.setdefault(pid, []).append(id_of[name])
    pairs: Pairs = []
    for iid in tqdm(sorted(name_of), desc="covisibility", unit="img"):
        counts: dict[int, int] = {}
        for pid in set(tracks[name_of[iid]].values()):
            for other in obs[pid]:
                if other != iid:
                    counts[other] = counts.get(other, 0) + 1
        if not counts:
            logger.info("image %s has no covisible image", name_of[iid])
            continue
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:num_matched]
        pairs.extend((name_of[iid], name_of[j]) for j, _ in top)
    return pairs


def from_poses(reference_model: Any, num_matched: int, max_angle_deg: float = 60.0,
               names: Iterable[str] | None = None) -> Pairs:
    """hloc ``pairs_from_poses``: for each image, the ``num_matched`` images with the closest
    camera centres whose viewing directions differ by at most ``max_angle_deg``.

    Args:
        reference_model: model directory or pycolmap.Reconstruction (poses only needed).
    Returns:
        [(name, other)] grouped by image (image-id order), nearest first.
    """
    rec = (reference_model if hasattr(reference_model, "images")
           else colmap.read_model(reference_model))
    ids = sorted(rec.images)
    all_names = [rec.images[i].name for i in ids]
    keep = set(names) if names is not None else set(all_names)
    centers, dirs = [], []
    for i in ids:
        pose = rec.images[i].cam_from_world()
        centers.append(geometry.camera_center(pose))
        dirs.append(geometry.viewing_direction(pose))
    C, D = np.array(centers), np.array(dirs)
    in_keep = np.array([n in keep for n in all_names], bool)
    pairs = []
    for a in np.flatnonzero(in_keep):  # one row at a time: O(N) memory, vectorised O(N) work
        cos = np.clip(D @ D[a], -1.0, 1.0)
        ok = in_keep & (np.degrees(np.arccos(cos)) <= max_angle_deg)
        ok[a] = False
        cand = np.flatnonzero(ok)
        dist = np.linalg.norm(C[cand] - C[a], axis=-1)
        order = cand[np.argsort(dist, kind="stable")[:num_matched]]
        pairs.extend((all_names[a], all_names[b]) for b in order)
    return pairs


def _select(names: Sequence[str], prefix: str | Sequence[str] | None,
            explicit: Sequence[str] | str | Path | None, what: str, path: Path) -> list[str]:
    if prefix is not None:
        pre = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        sel = [n for n in names if n.startswith(pre)]
        if not sel:
            raise ValueError(f"{path}: no {what} image name starts with {prefix!r}")
        return sel
    if explicit is not None:
        if isinstance(explicit, (str, Path)):
            return io.read_image_list(explicit)
        return [io.check_name(str(n), f"{what} list entry {i}") for i, n in enumerate(explicit)]
    return list(names)


def from_retrieval(global_desc_path: str | Path, num_matched: int,
                   query_prefix: str | Sequence[str] | None = "query",
                   db_prefix: str | Sequence[str] | None = None,
                   db_model: str | Path | None = None,
                   query_list: Sequence[str] | str | Path | None = None,
                   db_list: Sequence[str] | str | Path | None = None,
                   db_descriptors: str | Path | None = None) -> Pairs:
    """Top-``num_matched`` database images per query by global-descriptor inner product.

    Queries: names starting with ``query_prefix`` (or ``query_list`` when the prefix is None).
    Database: names in ``db_model``'s images, else starting with ``db_prefix``, else ``db_list``,
    else every name. Database descriptors come from ``db_descriptors`` if given. Self-pairs and
    negative scores are masked (hloc ``pairs_from_score_matrix`` with min_score 0); ties keep
    the database order. Returns [(query, db)] grouped by query, best first.
    """
    gpath = Path(global_desc_path)
    dpath = Path(db_descriptors) if db_descriptors is not None else gpath
    all_q = io.list_h5_names(gpath)
    all_db = all_q if dpath == gpath else io.list_h5_names(dpath)
    qnames = _select(all_q, query_prefix, query_list, "query", gpath)
    if db_model is not None:
        rec = colmap.read_model(db_model)
        dbnames = sorted(im.name for im in rec.images.values())
        missing = [n for n in dbnames if n not in set(all_db)]
        if missing:
            raise h5.H5Error(f"{dpath}: {len(missing)} images of {db_model} have no global "
                             f"descriptor (e.g. {missing[0]!r})")
    else:
        dbnames = _select(all_db, db_prefix, db_list, "database", dpath)
    if not qnames or not dbnames:
        return []
    _, q = io.read_global_descriptors(gpath, qnames)
    _, db = io.read_global_descriptors(dpath, dbnames)
    sim = q @ db.T
    invalid = np.array(qnames)[:, None] == np.array(dbnames)[None]
    invalid |= sim < 0
    sim = np.where(invalid, -np.inf, sim)
    k = min(num_matched, len(dbnames))
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    pairs: Pairs = []
    for i, qn in enumerate(qnames):
        for j in order[i]:
            if np.isfinite(sim[i, j]):
                pairs.append((qn, dbnames[j]))
    return pairs


def exhaustive_main(output: str | Path, image_list: str | Path | Sequence[str] | None = None,
                    features: str | Path | None = None,
                    ref_list: str | Path | Sequence[str] | None = None,
                    ref_features: str | Path | None = None) -> Path:
    """hloc ``pairs_from_exhaustive.main``: names from ``image_list`` (list file or names) or
    ``features``; references from ``ref_list`` / ``ref_features`` (none: all pairs within the
    names). Writes ``output``; returns it."""
    names = _names(image_list, features, "image_list or features")
    refs = None
    if ref_list is not None or ref_features is not None:
        refs = _names(ref_list, ref_features, "ref_list or ref_features")
    return _write(output, exhaustive(names, refs), "exhaustive")


def covisibility_main(model: str | Path, output: str | Path, num_matched: int) -> Path:
    """hloc ``pairs_from_covisibility.main(model, output, num_matched)``."""
    return _write(output, from_covisibility(model, int(num_matched)), "covisibility")


def retrieval_main(descriptors: str | Path, output: str | Path, num_matched: int,
                   query_prefix: str | Sequence[str] | None = None,
                   query_list: str | Path | Sequence[str] | None = None,
                   db_prefix: str | Sequence[str] | None = None,
                   db_list: str | Path | Sequence[str] | None = None,
                   db_model: str | Path | None = None,
                   db_descriptors: str | Path | None = None) -> Path:
    """hloc ``pairs_from_retrieval.main`` (same positional order, keywords and defaults: no
    prefix and no list = every name)."""
    pairs = from_retrieval(descriptors, int(num_matched), query_prefix=query_prefix,
                           db_prefix=db_prefix, db_model=db_model, query_list=query_list,
                           db_list=db_list, db_descriptors=db_descriptors)
    return _write(output, pairs, "retrieval")


def _names(names: str | Path | Sequence[str] | None, features: str | Path | None,
           what: str) -> list[str]:
    """Names from a list file / sequence, else from a features file's entries."""
    if isinstance(names, (str, Path)):
        return io.read_image_list(names)
    if names is not None:
        return [io.check_name(str(n), f"{what} entry {i}") for i, n in enumerate(names)]
    if features is None:
        raise ValueError(f"exhaustive pairs need {what}")
    return io.list_h5_names(features)


def _write(output: str | Path, pairs: Pairs, method: str) -> Path:
    logger.info("%d %s pairs -> %s", len(pairs), method, output)
    return io.write_pairs(output, pairs)


def main(method: str, output: str | Path, **kwargs: Any) -> Path:
    """Build pairs with ``method`` in {exhaustive, covisibility, retrieval} and write them.

    kwargs: exhaustive -> ``names`` (or ``features``: a features file to take names from),
    ``names_ref`` (or ``features_ref``); covisibility -> ``model``, ``num_matched``;
    retrieval -> ``global_descriptors``, ``num_matched``, ``query_prefix`` (default "query"),
    ``db_prefix``, ``db_model``, ``query_list``, ``db_list``, ``db_descriptors``.
    """
    if method == "exhaustive":
        return exhaustive_main(output, kwargs.get("names"), kwargs.get("features"),
                               kwargs.get("names_ref"), kwargs.get("features_ref"))
    if method == "covisibility":
        return covisibility_main(kwargs["model"], output, kwargs["num_matched"])
    if method == "retrieval":
        return retrieval_main(kwargs["global_descriptors"], output, kwargs["num_matched"],
                              query_prefix=kwargs.get("query_prefix", "query"),
                              query_list=kwargs.get("query_list"),
                              db_prefix=kwargs.get("db_prefix"), db_list=kwargs.get("db_list"),
                              db_model=kwargs.get("db_model"),
                              db_descriptors=kwargs.get("db_descriptors"))
    raise ValueError(f"unknown pairs method {method!r} (exhaustive, covisibility, retrieval)")


def cli(argv: Iterable[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="method", required=True)
    e = sub.add_parser("exhaustive")
    e.add_argument("--features", type=Path, required=True,
                   help="features file whose image names are paired")
    e.add_argument("--features_ref", type=Path, help="take reference names from this file")
    c = sub.add_parser("covisibility")
    c.add_argument("--model", type=Path, required=True, help="COLMAP model with 3D points")
    c.add_argument("--num_matched", type=int, default=20, help="pairs per image")
    r = sub.add_parser("retrieval")
    r.add_argument("--global_descriptors", type=Path, required=True,
                   help="global descriptors file (retrieval)")
    r.add_argument("--num_matched", type=int, default=20, help="pairs per image")
    r.add_argument("--query_prefix", default="query", help="query names start with this")
    r.add_argument("--db_prefix", help="database names start with this")
    r.add_argument("--db_model", type=Path, help="database names from this COLMAP model")
    r.add_argument("--db_descriptors", type=Path, help="database global descriptors file")
    for s in (e, c, r):
        s.add_argument("--output", type=Path, required=True, help="pairs file to write")
    args = p.parse_args(None if argv is None else list(argv))
    return run_cli("localize.pairs", _run_cli, args)


def _run_cli(args: argparse.Namespace) -> Path:
    kw = {k: v for k, v in vars(args).items() if k not in ("method", "output")}
    return main(args.method, args.output, **kw)


if __name__ == "__main__":
    cli()
