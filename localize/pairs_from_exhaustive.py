"""Exhaustive image pairs (hloc ``pairs_from_exhaustive``).

python -m localize.pairs_from_exhaustive --features feats.h5 --output pairs.txt
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

from localize import io, parsers
from localize.cli import ArgumentParser, output_file, run_cli

logger = logging.getLogger(__name__)


def exhaustive(names: Sequence[str], names_ref: Sequence[str] | None = None) -> parsers.Pairs:
    """All pairs, in hloc's order. Without ``names_ref``: (names[i], names[j]) for i < j (each
    unordered pair once); with it: every (query, ref) with query != ref (hloc keeps self pairs;
    matching skips them anyway)."""
    names = list(names)
    if names_ref is None:
        return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    return [(a, b) for a in names for b in names_ref if a != b]


def _names(
    names: str | Path | Sequence[str] | None, features: str | Path | None, what: str
) -> list[str]:
    """Names from a list file / sequence, else from a features file's entries."""
    if isinstance(names, (str, Path)):
        return parsers.read_image_list(names)
    if names is not None:
        return [parsers.check_name(str(n), f"{what} entry {i}") for i, n in enumerate(names)]
    if features is None:
        raise ValueError(f"exhaustive pairs need {what}")
    return io.list_h5_names(features)


def main(
    output: str | Path,
    image_list: str | Path | Sequence[str] | None = None,
    features: str | Path | None = None,
    ref_list: str | Path | Sequence[str] | None = None,
    ref_features: str | Path | None = None,
) -> Path:
    """hloc ``pairs_from_exhaustive.main``: names from ``image_list`` (list file or names) or
    ``features``; references from ``ref_list`` / ``ref_features`` (none: all pairs within the
    names). Writes ``output``; returns it."""
    names = _names(image_list, features, "image_list or features")
    refs = None
    if ref_list is not None or ref_features is not None:
        refs = _names(ref_list, ref_features, "ref_list or ref_features")
    pairs = exhaustive(names, refs)
    logger.info("%d exhaustive pairs -> %s", len(pairs), output)
    return parsers.write_pairs(output, pairs)


def cli(argv: Iterable[str] | None = None) -> Path:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image_list", type=Path, help="image list file (one name per line)")
    p.add_argument("--features", type=Path, help="features file whose image names are paired")
    p.add_argument("--ref_list", type=Path, help="reference image list file")
    p.add_argument("--ref_features", type=Path, help="take reference names from this file")
    p.add_argument("--output", type=output_file, required=True, help="pairs file to write")
    args = p.parse_args(None if argv is None else list(argv))
    return run_cli("localize.pairs_from_exhaustive", lambda a: main(**vars(a)), args)


if __name__ == "__main__":
    cli()
