"""Image pairs to match: exhaustive, from reference-model covisibility, from global retrieval.

All functions return ``list[(name0, name1)]``; :func:`main` writes them with
``localize.io.write_pairs`` (hloc format, no trailing newline).

- :func:`exhaustive` (hloc ``pairs_from_exhaustive``): all (n_i, n_j), j < i, within one list;
  or the full product query x reference.
- :func:`from_covisibility` (hloc ``pairs_from_covisibility``): for each reference image, the
  ``num_matched`` images sharing the most 3D points in a COLMAP model.
- :func:`from_poses` (hloc ``pairs_from_poses``): nearest camera centres with similar viewing
  directions, from a posed model (no 3D points needed).
- :func:`from_retrieval` (hloc ``pairs_from_retrieval``): top-``num_matched`` database images by
  inner product of ``global_descriptor`` datasets (self-pairs and negative scores masked).
- :func:`global_descriptors_meanpool`: a stop-gap global descriptor written in hloc's layout
  (``<name>/global_descriptor (D,)``, ``image_size``) from a local features file, so retrieval
  pairs work before ``localize.retrieve`` lands.

CLI::

    python -m localize.pairs exhaustive --features feats.h5 --output pairs.txt
    python -m localize.pairs covisibility --model sfm/ --num_matched 20 --output pairs.txt
    python -m localize.pairs retrieval --global_descriptors g.h5 --num_matched 20 \\
        [--query_prefix query] [--db_prefix db] [--db_model sfm/] --output pairs.txt
    python -m localize.pairs meanpool --features feats.h5 [--pool vlad|mean] --output global.h5
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from localize import io
from localize.cli import cli_errors

logger = logging.getLogger(__name__)

Pairs = list[tuple[str, str]]


def exhaustive(names: Sequence[str], names_ref: Sequence[str] | None = None) -> Pairs:
    """All pairs. Without ``names_ref``: (names[i], names[j]) for j < i (each unordered pair once,
    hloc order); with it: every (query, ref) with query != ref."""
    names = list(names)
    if names_ref is None:
        return [(names[i], names[j]) for i in range(len(names)) for j in range(i)]
    return [(a, b) for a in names for b in names_ref if a != b]


def _read_model(model_path: str | Path):
    """COLMAP model via ``localize.colmap.read_model`` (one-line errors)."""
    from localize.colmap import read_model
    return read_model(model_path)


def from_covisibility(model_path: str | Path, num_matched: int) -> Pairs:
    """For each image of a COLMAP model, the ``num_matched`` images sharing most 3D points.

    Order: images by id; partners by decreasing number of shared points (ties: smaller image id
    first). Images without any covisible image are logged and get no pairs. Pairs appear once per
    direction they are selected in (``match.main`` dedupes (a, b) / (b, a)).
    """
    from localize.colmap import point_tracks
    rec = _read_model(model_path)
    tracks = point_tracks(rec)  # name -> {kp idx -> point3D_id}
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


def from_poses(reference_model, num_matched: int, max_angle_deg: float = 60.0,
                     names: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """hloc ``pairs_from_poses``: for each image, the ``num_matched`` images with the closest
    camera centres whose viewing directions differ by at most ``max_angle_deg``.

    Args:
        reference_model: model directory or pycolmap.Reconstruction (poses only needed).
    Returns:
        [(name, other)] grouped by image (image-id order), nearest first.
    """
    from localize import colmap
    rec = (reference_model if hasattr(reference_model, "images")
           else colmap.read_model(reference_model))
    ids = sorted(rec.images)
    all_names = [rec.images[i].name for i in ids]
    keep = set(names) if names is not None else set(all_names)
    centers, dirs = [], []
    for i in ids:
        q, t = colmap.rigid_to_qt(rec.images[i].cam_from_world())
        R = colmap.qvec_to_rotmat(q)
        centers.append(-R.T @ t)
        dirs.append(R[2])  # camera z axis in world coordinates
    C, D = np.array(centers), np.array(dirs)
    dist = np.linalg.norm(C[:, None] - C[None], axis=-1)
    cos = np.clip(D @ D.T, -1.0, 1.0)
    valid = np.degrees(np.arccos(cos)) <= max_angle_deg
    np.fill_diagonal(valid, False)
    dist = np.where(valid, dist, np.inf)
    pairs = []
    for a, na in enumerate(all_names):
        if na not in keep:
            continue
        order = [b for b in np.argsort(dist[a], kind="stable")
                 if np.isfinite(dist[a, b]) and all_names[b] in keep][:num_matched]
        pairs.extend((na, all_names[b]) for b in order)
    return pairs


def _read_global(path: str | Path, names: Sequence[str], key: str = "global_descriptor"
                 ) -> np.ndarray:
    out = []
    with io.open_h5(path) as fd:
        for n in names:
            if not (n in fd and key in fd[n]):
                raise io.H5Error(f"{path}: no {key!r} for image {n!r}")
            out.append(np.asarray(fd[n][key][()], np.float32).reshape(-1))
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.stack(out, 0)


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
            lp = Path(explicit)
            if not lp.is_file():
                raise FileNotFoundError(f"{what} list not found: {lp}")
            return [io.check_name(ln.split()[0], f"{lp}:{i}")
                    for i, ln in enumerate(lp.read_text().splitlines(), 1)
                    if ln.strip() and not ln.lstrip().startswith("#")]
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
        rec = _read_model(db_model)
        dbnames = sorted(im.name for im in rec.images.values())
        missing = [n for n in dbnames if n not in set(all_db)]
        if missing:
            raise io.H5Error(f"{dpath}: {len(missing)} images of {db_model} have no global "
                             f"descriptor (e.g. {missing[0]!r})")
    else:
        dbnames = _select(all_db, db_prefix, db_list, "database", dpath)
    if not qnames or not dbnames:
        return []
    q = _read_global(gpath, qnames)
    db = _read_global(dpath, dbnames)
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


def global_descriptors_meanpool(features_path: str | Path, out_path: str | Path,
                                method: str = "vlad", num_clusters: int = 16,
                                max_train: int = 100_000, seed: int = 0,
                                names: Sequence[str] | None = None) -> Path:
    """Stop-gap global descriptors from local ones, written in hloc's layout.

    ``method='mean'``: mean of the local descriptors minus the collection mean, signed sqrt, L2.
    ``method='vlad'`` (default, "VLAD-lite"): k-means codebook (``num_clusters``, FAISS,
    trained on up to ``max_train`` descriptors sampled over all images), sum of residuals per
    centre, intra-normalised, signed sqrt, L2 -> D * num_clusters dims.
    Images with no keypoints get a zero vector (never retrieved: scores 0 are not < 0, but they
    rank last). Output: ``<name>/global_descriptor (Dg,) float32`` + ``image_size`` when present.
    """
    import faiss
    features_path, out_path = Path(features_path), Path(out_path)
    names = list(names) if names is not None else io.list_h5_names(features_path)
    rng = np.random.default_rng(seed)
    descs: dict[str, np.ndarray] = {}
    sizes: dict[str, np.ndarray] = {}
    with io.open_h5(features_path) as fd:
        for n in names:
            if n not in fd or "descriptors" not in fd[n]:
                raise io.H5Error(f"{features_path}: no descriptors for image {n!r}")
            descs[n] = np.ascontiguousarray(np.asarray(fd[n]["descriptors"][()], np.float32).T)
            if "image_size" in fd[n]:
                sizes[n] = fd[n]["image_size"][()]
    nonempty = [d for d in descs.values() if len(d)]
    if not nonempty:
        raise ValueError(f"{features_path}: no image has any descriptor")
    dim = nonempty[0].shape[1]
    per = max(1, max_train // max(len(nonempty), 1))
    sample = np.concatenate([d[rng.choice(len(d), min(per, len(d)), replace=False)]
                             for d in nonempty], 0)
    mu = sample.mean(0)

    def _norm(v: np.ndarray) -> np.ndarray:
        v = np.sign(v) * np.sqrt(np.abs(v))
        return v / max(float(np.linalg.norm(v)), 1e-12)

    if method == "mean":
        def encode(d: np.ndarray) -> np.ndarray:
            return _norm(d.mean(0) - mu) if len(d) else np.zeros(dim, np.float32)
        out_dim = dim
    elif method == "vlad":
        k = int(min(num_clusters, max(1, len(sample) // 4)))
        km = faiss.Kmeans(dim, k, niter=20, seed=seed, verbose=False)
        km.train(np.ascontiguousarray(sample, np.float32))
        centres = km.centroids.astype(np.float32)

        def encode(d: np.ndarray) -> np.ndarray:
            if not len(d):
                return np.zeros(k * dim, np.float32)
            _, a = km.index.search(np.ascontiguousarray(d, np.float32), 1)
            v = np.zeros((k, dim), np.float32)
            np.add.at(v, a[:, 0], d - centres[a[:, 0]])
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            return _norm(v.reshape(-1))
        out_dim = k * dim
    else:
        raise ValueError(f"unknown global descriptor method {method!r} (mean or vlad)")
    logger.info("global descriptors (%s, dim %d) for %d images -> %s", method, out_dim,
                len(names), out_path)
    with io.H5Writer(out_path) as w:
        for n in tqdm(names, desc=f"global {method}", unit="img"):
            if n in w.file:
                del w.file[n]
            g = w.file.create_group(n)
            g.create_dataset("global_descriptor", data=encode(descs[n]).astype(np.float32))
            if n in sizes:
                g.create_dataset("image_size", data=sizes[n])
    return out_path


def main(method: str, output: str | Path, **kwargs: Any) -> Path:
    """Build pairs with ``method`` in {exhaustive, covisibility, retrieval} and write them.

    kwargs: exhaustive -> ``names`` (or ``features``: a features file to take names from),
    ``names_ref``; covisibility -> ``model``, ``num_matched``; retrieval -> ``global_descriptors``,
    ``num_matched``, ``query_prefix``, ``db_prefix``, ``db_model``, ``query_list``, ``db_list``,
    ``db_descriptors``.
    """
    if method == "exhaustive":
        names = kwargs.get("names")
        if names is None:
            if kwargs.get("features") is None:
                raise ValueError("exhaustive pairs need names or a features file")
            names = io.list_h5_names(kwargs["features"])
        pairs = exhaustive(names, kwargs.get("names_ref"))
    elif method == "covisibility":
        pairs = from_covisibility(kwargs["model"], int(kwargs["num_matched"]))
    elif method == "retrieval":
        pairs = from_retrieval(kwargs["global_descriptors"], int(kwargs["num_matched"]),
                               query_prefix=kwargs.get("query_prefix", "query"),
                               db_prefix=kwargs.get("db_prefix"), db_model=kwargs.get("db_model"),
                               query_list=kwargs.get("query_list"),
                               db_list=kwargs.get("db_list"),
                               db_descriptors=kwargs.get("db_descriptors"))
    else:
        raise ValueError(f"unknown pairs method {method!r} (exhaustive, covisibility, retrieval)")
    logger.info("%d %s pairs -> %s", len(pairs), method, output)
    return io.write_pairs(output, pairs)


def cli(argv: Iterable[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="method", required=True)
    e = sub.add_parser("exhaustive")
    e.add_argument("--features", type=Path, required=True)
    e.add_argument("--features_ref", type=Path, help="take reference names from this file")
    c = sub.add_parser("covisibility")
    c.add_argument("--model", type=Path, required=True)
    c.add_argument("--num_matched", type=int, default=20)
    r = sub.add_parser("retrieval")
    r.add_argument("--global_descriptors", type=Path, required=True)
    r.add_argument("--num_matched", type=int, default=20)
    r.add_argument("--query_prefix", default="query")
    r.add_argument("--db_prefix")
    r.add_argument("--db_model", type=Path)
    r.add_argument("--db_descriptors", type=Path)
    m = sub.add_parser("meanpool")
    m.add_argument("--features", type=Path, required=True)
    m.add_argument("--pool", default="vlad", choices=["vlad", "mean"])
    m.add_argument("--num_clusters", type=int, default=16)
    for s in (e, c, r, m):
        s.add_argument("--output", type=Path, required=True)
    args = p.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s %(levelname)s] %(message)s")
    with cli_errors("localize.pairs"):
        return _run_cli(args)


def _run_cli(args: argparse.Namespace) -> Path:
    if args.method == "meanpool":
        out = global_descriptors_meanpool(args.features, args.output, args.pool,
                                          args.num_clusters)
    elif args.method == "exhaustive":
        ref = io.list_h5_names(args.features_ref) if args.features_ref else None
        out = main("exhaustive", args.output, features=args.features, names_ref=ref)
    else:
        kw = {k: v for k, v in vars(args).items() if k not in ("method", "output")}
        out = main(args.method, args.output, **kw)
    print(out)
    return out


if __name__ == "__main__":
    cli()
