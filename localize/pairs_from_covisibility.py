"""Image pairs from covisibility in a COLMAP model (hloc ``pairs_from_covisibility``).

python -m localize.pairs_from_covisibility --model sfm/ --num_matched 20 --output pairs.txt
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import pycolmap
from tqdm import tqdm

from localize import colmap, parsers
from localize.cli import ArgumentParser, output_file, positive_int, run_cli

logger = logging.getLogger(__name__)


def from_covisibility(
    model_path: str | Path | pycolmap.Reconstruction, num_matched: int
) -> parsers.Pairs:
    """For each image of a COLMAP model, the ``num_matched`` images sharing most 3D points.

    Order: images by id; partners by decreasing number of shared points (ties: smaller image id
    first). Images without any covisible image are logged and get no pairs. parsers.Pairs appear once per
    direction they are selected in (``match_features.main`` dedupes (a, b) / (b, a)).
    """
    rec = (
        model_path
        if isinstance(model_path, pycolmap.Reconstruction)
        else colmap.read_model(model_path)
    )
    tracks = colmap.point_tracks(rec)  # name -> {kp idx -> point3D_id}
    id_of = {im.name: int(i) for i, im in rec.images.items()}
    name_of = {v: k for k, v in id_of.items()}
    obs: dict[int, list[int]] = {}  # point3D_id -> image ids observing it
    for name, d in tracks.items():
        for pid in set(d.values()):
            obs.setdefault(pid, []).append(id_of[name])
    pairs: parsers.Pairs = []
    for iid in tqdm(sorted(name_of), desc="covisibility", unit="img", disable=None):
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


def main(model: str | Path, output: str | Path, num_matched: int) -> Path:
    """hloc ``pairs_from_covisibility.main(model, output, num_matched)``."""
    pairs = from_covisibility(model, int(num_matched))
    logger.info("%d covisibility pairs -> %s", len(pairs), output)
    return parsers.write_pairs(output, pairs)


def cli(argv: Iterable[str] | None = None) -> Path:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="COLMAP model with 3D points")
    p.add_argument("--num_matched", type=positive_int, default=20, help="pairs per image")
    p.add_argument("--output", type=output_file, required=True, help="pairs file to write")
    args = p.parse_args(None if argv is None else list(argv))
    return run_cli("localize.pairs_from_covisibility", lambda a: main(**vars(a)), args)


if __name__ == "__main__":
    cli()
