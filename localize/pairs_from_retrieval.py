"""Image pairs from global-descriptor retrieval (hloc ``pairs_from_retrieval``): the top
``num_matched`` database images per query by inner product of ``global_descriptor`` datasets
(from ``localize.retrieve`` or any hloc global-features file).

    python -m localize.pairs_from_retrieval --descriptors g.h5 --num_matched 20 \\
        [--query_prefix query] [--db_prefix db] [--db_model sfm/] --output pairs.txt
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from localize import colmap, h5, io, parsers
from localize.cli import ArgumentParser, output_file, positive_int, run_cli

logger = logging.getLogger(__name__)


def _select(
    names: Sequence[str],
    prefix: str | Sequence[str] | None,
    explicit: Sequence[str] | str | Path | None,
    what: str,
    path: Path,
) -> list[str]:
    if prefix is not None:
        pre = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        sel = [n for n in names if n.startswith(pre)]
        if not sel:
            raise ValueError(f"{path}: no {what} image name starts with {prefix!r}")
        return sel
    if explicit is not None:
        if isinstance(explicit, (str, Path)):
            return parsers.read_image_list(explicit)
        return [
            parsers.check_name(str(n), f"{what} list entry {i}") for i, n in enumerate(explicit)
        ]
    return list(names)


def from_retrieval(
    global_desc_path: str | Path,
    num_matched: int,
    query_prefix: str | Sequence[str] | None = "query",
    db_prefix: str | Sequence[str] | None = None,
    db_model: str | Path | None = None,
    query_list: Sequence[str] | str | Path | None = None,
    db_list: Sequence[str] | str | Path | None = None,
    db_descriptors: str | Path | None = None,
) -> parsers.Pairs:
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
            raise h5.H5Error(
                f"{dpath}: {len(missing)} images of {db_model} have no global "
                f"descriptor (e.g. {missing[0]!r})"
            )
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
    pairs: parsers.Pairs = []
    for i, qn in enumerate(qnames):
        for j in order[i]:
            if np.isfinite(sim[i, j]):
                pairs.append((qn, dbnames[j]))
    return pairs


def main(
    descriptors: str | Path,
    output: str | Path,
    num_matched: int,
    query_prefix: str | Sequence[str] | None = None,
    query_list: str | Path | Sequence[str] | None = None,
    db_prefix: str | Sequence[str] | None = None,
    db_list: str | Path | Sequence[str] | None = None,
    db_model: str | Path | None = None,
    db_descriptors: str | Path | None = None,
) -> Path:
    """hloc ``pairs_from_retrieval.main`` (same positional order, keywords and defaults: no
    prefix and no list = every name)."""
    pairs = from_retrieval(
        descriptors,
        int(num_matched),
        query_prefix=query_prefix,
        db_prefix=db_prefix,
        db_model=db_model,
        query_list=query_list,
        db_list=db_list,
        db_descriptors=db_descriptors,
    )
    logger.info("%d retrieval pairs -> %s", len(pairs), output)
    return parsers.write_pairs(output, pairs)


def cli(argv: Iterable[str] | None = None) -> Path:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--descriptors", type=Path, required=True, help="global descriptors file")
    p.add_argument("--num_matched", type=positive_int, default=20, help="pairs per image")
    p.add_argument("--query_prefix", help="query names start with this")
    p.add_argument("--query_list", type=Path, help="query image list file")
    p.add_argument("--db_prefix", help="database names start with this")
    p.add_argument("--db_list", type=Path, help="database image list file")
    p.add_argument("--db_model", type=Path, help="database names from this COLMAP model")
    p.add_argument("--db_descriptors", type=Path, help="database global descriptors file")
    p.add_argument("--output", type=output_file, required=True, help="pairs file to write")
    args = p.parse_args(None if argv is None else list(argv))
    return run_cli("localize.pairs_from_retrieval", lambda a: main(**vars(a)), args)


if __name__ == "__main__":
    cli()
