"""Image pairs for ordered captures (video frames, a walk): sequential neighbours plus loop
closure by retrieval (hloc-style ``pairs_from_sequential``, COLMAP's sequential matcher).

    python -m localize.pairs_from_sequential --features feats.h5 --output pairs.txt \\
        [--overlap 10] [--quadratic_overlap] [--loop_closure --retrieval_path g.h5 \\
         --retrieval_interval 5 --num_loc 5]

Order is the order of the names (the list file's order, else the features file's sorted names):
frame ``i`` is paired with ``i+1 .. i+overlap``; with ``quadratic_overlap`` also with
``i + 2^k`` for ``k < overlap`` (COLMAP's quadratic overlap). With ``loop_closure`` every
``retrieval_interval``-th frame is also paired with its top ``num_loc`` images by global
descriptor (``localize.pairs_from_retrieval.from_retrieval`` on ``retrieval_path``, e.g. from
``localize.extract_features.confs['vlad']``), so revisits far apart in time get matched.
Each unordered pair is written once, earlier frame first for sequential pairs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

from localize import pairs_from_retrieval, parsers
from localize.cli import ArgumentParser, positive_int, run_cli
from localize.pairs_from_exhaustive import _names

logger = logging.getLogger(__name__)


def sequential(
    names: Sequence[str], overlap: int = 10, quadratic_overlap: bool = False
) -> parsers.Pairs:
    """(names[i], names[j]) for ``0 < j - i <= overlap`` (and ``j - i = 2^k``, ``k < overlap``
    with ``quadratic_overlap``), in frame order."""
    if overlap < 1:
        raise ValueError(f"overlap must be >= 1, got {overlap}")
    n = len(names)
    out: parsers.Pairs = []
    for i in range(n):
        steps = set(range(1, overlap + 1))
        if quadratic_overlap:
            steps |= {2**k for k in range(overlap)}
        out += [(names[i], names[i + d]) for d in sorted(steps) if i + d < n]
    return out


def loop_closure_pairs(
    names: Sequence[str], retrieval_path: str | Path, interval: int, num_loc: int
) -> parsers.Pairs:
    """(names[i], retrieved) for every ``interval``-th frame ``i`` and its top ``num_loc`` other
    frames by global descriptor (best first)."""
    if interval < 1 or num_loc < 1:
        raise ValueError(f"retrieval_interval and num_loc must be >= 1, got {interval}, {num_loc}")
    queries = list(names[::interval])
    return pairs_from_retrieval.from_retrieval(
        retrieval_path,
        num_loc,
        query_prefix=None,
        query_list=queries,
        db_prefix=None,
        db_list=list(names),
    )


def from_sequence(
    names: Sequence[str],
    overlap: int = 10,
    quadratic_overlap: bool = False,
    loop_closure: bool = False,
    retrieval_path: str | Path | None = None,
    retrieval_interval: int = 5,
    num_loc: int = 5,
) -> parsers.Pairs:
    """Sequential pairs, then the loop-closure pairs not already among them (see the module
    docstring); each unordered pair once."""
    pairs = sequential(names, overlap, quadratic_overlap)
    if loop_closure:
        if retrieval_path is None:
            raise ValueError(
                "loop_closure needs retrieval_path (global descriptors, e.g. "
                "extract_features.confs['vlad'])"
            )
        pairs += loop_closure_pairs(names, retrieval_path, retrieval_interval, num_loc)
    seen: set[frozenset[str]] = set()
    out: parsers.Pairs = []
    for a, b in pairs:
        key = frozenset((a, b))
        if a != b and key not in seen:
            seen.add(key)
            out.append((a, b))
    return out


def main(
    output: str | Path,
    image_list: str | Path | Sequence[str] | None = None,
    features: str | Path | None = None,
    overlap: int = 10,
    quadratic_overlap: bool = False,
    loop_closure: bool = False,
    retrieval_path: str | Path | None = None,
    retrieval_interval: int = 5,
    num_loc: int = 5,
) -> Path:
    """Names (in order) from ``image_list`` (list file or names) or ``features``; writes
    :func:`from_sequence`'s pairs to ``output`` and returns it."""
    names = _names(image_list, features, "image_list or features")
    pairs = from_sequence(
        names, overlap, quadratic_overlap, loop_closure, retrieval_path, retrieval_interval, num_loc
    )
    logger.info(
        "%d sequential pairs (overlap %d%s%s) for %d images -> %s",
        len(pairs),
        overlap,
        ", quadratic" if quadratic_overlap else "",
        f", loop closure every {retrieval_interval} frames top {num_loc}" if loop_closure else "",
        len(names),
        output,
    )
    return parsers.write_pairs(output, pairs)


def cli(argv: Iterable[str] | None = None) -> Path:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image_list", type=Path, help="image list file, in capture order")
    p.add_argument("--features", type=Path, help="features file (sorted names as the order)")
    p.add_argument("--output", type=Path, required=True, help="pairs file to write")
    p.add_argument("--overlap", type=positive_int, default=10, help="neighbours per frame")
    p.add_argument("--quadratic_overlap", action="store_true")
    p.add_argument("--loop_closure", action="store_true")
    p.add_argument("--retrieval_path", type=Path, help="global descriptors file")
    p.add_argument("--retrieval_interval", type=positive_int, default=5)
    p.add_argument("--num_loc", type=positive_int, default=5)
    args = p.parse_args(None if argv is None else list(argv))
    return run_cli("localize.pairs_from_sequential", lambda a: main(**vars(a)), args)


if __name__ == "__main__":
    cli()
