"""Match the pairs of a pairs file into an hloc matches file (hloc's ``match_features``).

Usage::

    python -m localize.match_features --conf nn-ratio --pairs PAIRS --features FEATS [--matches M]
    torchrun --nproc_per_node=4 -m localize.match_features --conf nn-ratio --pairs ... --features ...

Confs: ``nn-ratio`` (ratio 0.8 + mutual, for SIFT / RootSIFT), ``nn-ratio-0.9`` (learned
descriptors), ``nn-mutual``, ``nn-dist`` (mutual + distance 0.7); hloc's ``NN-ratio``,
``NN-mutual``, ``NN-superpoint`` and nearest-neighbor conf dicts are accepted. The matcher is
:mod:`localize.nearest_neighbor`; this stage groups pairs by their first image and writes
``matches0`` (int32) / ``matching_scores0`` (float16) through :class:`localize.h5.H5Writer`,
skipping pairs whose features are unchanged. ``shard='i/K'`` writes ``<stem>.shard<i>of<K>.h5``;
under ``torchrun`` each rank takes its shard and rank 0 merges them.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tqdm import tqdm

from localize import h5, io, parsers
from localize.cli import (
    ArgumentParser,
    existing_file,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    run_cli,
)
from localize.nearest_neighbor import as_2d, default_device, match_image

logger = logging.getLogger(__name__)

confs: dict[str, dict[str, Any]] = {
    "nn-ratio": {
        "output": "matches-nn-ratio0.8",
        "ratio": 0.8,
        "distance_threshold": None,
        "mutual": True,
    },
    "nn-ratio-0.9": {
        "output": "matches-nn-ratio0.9",
        "ratio": 0.9,
        "distance_threshold": None,
        "mutual": True,
    },
    "nn-mutual": {
        "output": "matches-nn-mutual",
        "ratio": None,
        "distance_threshold": None,
        "mutual": True,
    },
    "nn-dist": {
        "output": "matches-nn-mutual-dist0.7",
        "ratio": None,
        "distance_threshold": 0.7,
        "mutual": True,
    },
    # hloc's own confs (hloc.match_features.confs), in hloc's format
    "NN-superpoint": {
        "output": "matches-NN-mutual-dist.7",
        "model": {"name": "nearest_neighbor", "do_mutual_check": True, "distance_threshold": 0.7},
    },
    "NN-ratio": {
        "output": "matches-NN-mutual-ratio.8",
        "model": {"name": "nearest_neighbor", "do_mutual_check": True, "ratio_threshold": 0.8},
    },
    "NN-mutual": {
        "output": "matches-NN-mutual",
        "model": {"name": "nearest_neighbor", "do_mutual_check": True},
    },
}


# ------------------------------------------------------------------------------------------
# Pairs -> matches file
# ------------------------------------------------------------------------------------------
def unique_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop self pairs and duplicates in either order, keeping the first occurrence."""
    seen: set[tuple[str, str]] = set()
    out = []
    for a, b in pairs:
        if a == b:
            continue
        key = (a, b) if a <= b else (b, a)
        if key in seen:
            continue
        seen.add(key)
        out.append((a, b))
    return out


def group_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Pairs -> [(image, [partners...])] grouped by first image, in first-occurrence order."""
    groups: dict[str, list[str]] = {}
    for a, b in pairs:
        groups.setdefault(a, []).append(b)
    return list(groups.items())


def resolve_conf(conf: dict[str, Any] | str) -> dict[str, Any]:
    """Conf name or dict (ours, or hloc's with ``model``) -> ``{output, ratio,
    distance_threshold, mutual}``."""
    if isinstance(conf, str):
        if conf not in confs:
            raise ValueError(f"unknown matching conf '{conf}': choose from {', '.join(confs)}")
        conf = confs[conf]
    conf = copy.deepcopy(dict(conf))
    c: dict[str, Any] = {
        "ratio": None,
        "distance_threshold": None,
        "mutual": True,
        "output": "matches-nn",
    }
    if "model" in conf:  # hloc conf
        model = dict(conf.pop("model") or {})
        name = model.get("name", "nearest_neighbor")
        if name != "nearest_neighbor":
            raise ValueError(
                f"matcher model {name!r} is not supported: only hloc's "
                "'nearest_neighbor' (ratio_threshold, distance_threshold, "
                "do_mutual_check)"
            )
        unknown = set(model) - {"name", "ratio_threshold", "distance_threshold", "do_mutual_check"}
        if unknown:
            raise ValueError(
                f"hloc nearest_neighbor conf: unknown option(s) "
                f"{', '.join(sorted(unknown))} (ratio_threshold, "
                "distance_threshold, do_mutual_check)"
            )
        c.update(
            ratio=model.get("ratio_threshold") or None,
            distance_threshold=model.get("distance_threshold") or None,
            mutual=bool(model.get("do_mutual_check", True)),
        )
    c.update(conf)
    return c


def _world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _barrier() -> bool:
    """Barrier across torchrun ranks (gloo). Returns True if it initialised the process group."""
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method="env://")
        created = True
    dist.barrier()
    return created


def main(
    conf: dict[str, Any] | str,
    pairs: str | Path,
    features: str | Path,
    export_dir: str | Path | None = None,
    matches: str | Path | None = None,
    features_ref: str | Path | Sequence[str | Path] | None = None,
    overwrite: bool = False,
    *,
    device: str | torch.device | None = None,
    shard: str | tuple[int, int] | None = None,
    commit_every_s: float = 600.0,
) -> Path:
    """Match every pair of a pairs file and write (append to) an hloc matches file.

    Same positional signature as hloc's ``match_features.main(conf, pairs, features,
    export_dir=None, matches=None, features_ref=None, overwrite=False)``.

    Args:
        conf: key of :data:`confs` or a dict (ours, or hloc's with ``model``).
        pairs: pairs file (``name0 name1`` per line).
        features: features file, or (hloc) a features NAME with ``export_dir``: the file is then
            ``export_dir/<features>.h5``.
        export_dir: where the default matches file goes (default: next to the features file).
        matches: output; default ``<export_dir or features dir>/<features stem>_<output>_
            <pairs stem>.h5`` (hloc's naming).
        features_ref: extra features file(s) for names not in ``features`` (e.g. db images).
        overwrite: re-match pairs already present.
        device: torch device (None = cuda when present).
        shard: ``'i/K'``: match image groups ``[i::K]`` into the shard file (see module doc);
            None under torchrun = this rank's shard, merged by rank 0 at the end.
    Returns:
        path of the matches file (the shard file with an explicit ``shard``).
    """
    conf = resolve_conf(conf)
    pairs = Path(pairs)
    if isinstance(features, Path) or Path(features).exists() or str(features).endswith(".h5"):
        features_path = Path(features)
    elif export_dir is not None:
        features_path = Path(export_dir, f"{features}.h5")
    else:
        raise ValueError(
            f"features {features!r}: no such file, and no export_dir for a "
            "features name (hloc: main(conf, pairs, 'feats-name', export_dir))"
        )
    if export_dir is not None and Path(export_dir).suffix == ".h5" and matches is None:
        raise ValueError(
            f"export_dir {export_dir} looks like an .h5 file: pass the matches "
            "file as matches=... (hloc's signature: conf, pairs, features, "
            "export_dir, matches)"
        )
    if matches is None:
        root = Path(export_dir) if export_dir is not None else features_path.parent
        matches = root / f"{features_path.stem}_{conf['output']}_{pairs.stem}.h5"
    matches_path = Path(matches)
    refs: list[Path] = []
    if features_ref is not None:
        refs = (
            [Path(features_ref)]
            if isinstance(features_ref, (str, Path))
            else [Path(p) for p in features_ref]
        )
    sh = h5.parse_shard(shard)
    rank, world = _world()
    distributed = sh is None and world > 1
    if distributed:
        sh = (rank, world)

    all_pairs = unique_pairs(parsers.parse_pairs(pairs))
    io.check_pair_keys(all_pairs, pairs)  # hloc keys of two different pairs must differ
    device = default_device(device)
    convert = (lambda d: torch.from_numpy(as_2d(d)).to(device)) if device.type == "cuda" else None
    src = io.FeatureReader([features_path] + refs, convert=convert)
    for a, b in all_pairs:  # fail fast, before any matching
        src.check(a)
        src.check(b)

    ids = src.ids({n for ab in all_pairs for n in ab})
    todo = _not_done(all_pairs, matches_path, overwrite, ids)
    out_path = matches_path
    groups = group_pairs(todo)
    if sh is not None:
        groups = groups[sh[0] :: sh[1]]
        out_path = h5.shard_path(matches_path, *sh)
        todo = _not_done([(a, b) for a, bs in groups for b in bs], out_path, overwrite, ids)
        groups = group_pairs(todo)
    if len(todo) < len(all_pairs) and sh is None:
        logger.info(
            "%d/%d pairs already in %s, skipping them",
            len(all_pairs) - len(todo),
            len(all_pairs),
            matches_path,
        )
    if todo or not out_path.exists():
        logger.info(
            "matching %d pairs (%s on %s) -> %s",
            len(todo),
            conf["output"],
            device,
            out_path,
        )
        _match_groups(groups, src, conf, out_path, device, commit_every_s, ids)
    if not distributed:
        return out_path
    created = _barrier()
    if rank == 0:
        h5.merge_shards(matches_path, world, overwrite=overwrite, remove=True)
    _barrier()
    if created:
        import torch.distributed as dist

        dist.destroy_process_group()
    return matches_path


def _not_done(
    pairs: list[tuple[str, str]], path: Path, overwrite: bool, ids: dict[str, str]
) -> list[tuple[str, str]]:
    """The pairs not in the matches file ``path`` (either order) computed from the features
    entries whose ``provenance.features_id`` are ``ids``; all of them if ``overwrite`` or the
    file does not exist. A stored pair of other images under the same key raises
    (``io.find_pair``)."""
    if overwrite or not path.exists():
        return list(pairs)
    with h5.open_h5(path) as fd:
        todo, stale = [], 0
        for a, b in pairs:
            if not io.pair_is_current(fd, a, b, ids[a], ids[b]):
                todo.append((a, b))
                stale += io.has_pair(fd, a, b)
    if stale:
        logger.info(
            "%s: %d pairs were matched from features that changed since: recomputing them",
            path,
            stale,
        )
    return todo


def _match_groups(
    groups: list[tuple[str, list[str]]],
    src: io.FeatureReader,
    conf: dict[str, Any],
    out_path: Path,
    device: torch.device,
    commit_every_s: float,
    ids: dict[str, str],
) -> None:
    """Match each (image, partners) group with one :func:`match_image` call, write the pairs."""
    warned: set[str] = set()
    n_pairs = sum(len(bs) for _, bs in groups)
    with (
        h5.H5Writer(out_path, commit_every_s=commit_every_s) as w,
        tqdm(total=n_pairs, desc=f"match {conf['output']}", unit="pair", disable=None) as bar,
    ):
        for a, partners in groups:
            d0 = src.descriptors(a)
            ds = [src.descriptors(b) for b in partners]
            for n, d in [(a, d0)] + list(zip(partners, ds)):
                if len(d) == 0 and n not in warned:
                    logger.warning("image %s has no keypoints: its pairs get empty matches", n)
                    warned.add(n)
                elif len(d) and len(d0) and d.shape[1:] != d0.shape[1:]:
                    raise ValueError(
                        f"descriptor dims differ for pair {a} {n}: {d0.shape[1]} vs {d.shape[1]}"
                    )
            results = match_image(
                d0,
                ds,
                conf["ratio"],
                conf["distance_threshold"],
                conf["mutual"],
                device=device,
            )
            for b, (m, s) in zip(partners, results):
                io.write_matches(w.file, a, b, m, s, features_ids=(ids[a], ids[b]))
                w.maybe_commit()
            bar.update(len(partners))


def cli(argv: Iterable[str] | None = None) -> Path:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conf", default="nn-ratio", choices=list(confs), help="matching conf")
    p.add_argument(
        "--pairs", type=existing_file, required=True, help="pairs file (name0 name1 per line)"
    )
    p.add_argument("--features", type=existing_file, required=True, help="features file")
    p.add_argument(
        "--features_ref",
        type=existing_file,
        nargs="*",
        help="extra features file(s) for the reference images",
    )
    p.add_argument("--matches", type=output_file, help="matches file to write")
    p.add_argument(
        "--export_dir", type=output_dir, help="output folder (file name from the conf and pairs)"
    )
    p.add_argument("--overwrite", action="store_true", help="re-match pairs already in the file")
    p.add_argument("--shard", help="i/K: match every K-th image group into a shard file")
    p.add_argument("--merge", type=positive_int, metavar="K", help="merge K shard files, then exit")
    p.add_argument(
        "--commit_interval",
        type=positive_float,
        default=600.0,
        metavar="SECONDS",
        help="seconds between commits (a hard kill loses at most this much work)",
    )
    p.add_argument("--cpu", action="store_true", help="force CPU")
    args = p.parse_args(None if argv is None else list(argv))
    return run_cli("localize.match_features", _run_cli, args)


def _run_cli(args: argparse.Namespace) -> Path:
    if args.merge:
        c = resolve_conf(args.conf)
        mp = (
            args.matches
            or (args.export_dir or args.features.parent)
            / f"{args.features.stem}_{c['output']}_{args.pairs.stem}.h5"
        )
        out = h5.merge_shards(mp, args.merge, overwrite=args.overwrite, remove=True)
    else:
        out = main(
            args.conf,
            args.pairs,
            args.features,
            args.export_dir,
            args.matches,
            args.features_ref or None,
            overwrite=args.overwrite,
            device="cpu" if args.cpu else None,
            shard=args.shard,
            commit_every_s=args.commit_interval,
        )
    return out


if __name__ == "__main__":
    cli()
