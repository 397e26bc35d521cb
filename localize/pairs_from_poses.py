"""Image pairs from camera poses (hloc ``pairs_from_poses``): nearest camera centres with
similar viewing directions.

    python -m localize.pairs_from_poses --model sfm/ --num_matched 20 --output pairs.txt
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import pycolmap

from localize import colmap, geometry, parsers
from localize.cli import ArgumentParser, output_file, positive_float, positive_int, run_cli

logger = logging.getLogger(__name__)

#: hloc's default: partners whose principal axes differ by less than this (degrees)
DEFAULT_ROT_THRESH = 30.0


def from_poses(
    reference_model: str | Path | pycolmap.Reconstruction,
    num_matched: int,
    max_angle_deg: float = 60.0,
    names: Iterable[str] | None = None,
) -> parsers.Pairs:
    """hloc ``pairs_from_poses``: for each image, the ``num_matched`` images with the closest
    camera centres whose viewing directions differ by at most ``max_angle_deg``.

    Args:
        reference_model: model directory or pycolmap.Reconstruction (poses only needed).
    Returns:
        [(name, other)] grouped by image (image-id order), nearest first.
    """
    rec = (
        reference_model
        if hasattr(reference_model, "images")
        else colmap.read_model(reference_model)
    )
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


def main(
    model: str | Path,
    output: str | Path,
    num_matched: int,
    rotation_threshold: float = DEFAULT_ROT_THRESH,
) -> Path:
    """hloc ``pairs_from_poses.main(model, output, num_matched, rotation_threshold=30)``."""
    pairs = from_poses(model, int(num_matched), max_angle_deg=float(rotation_threshold))
    logger.info("%d pose pairs -> %s", len(pairs), output)
    return parsers.write_pairs(output, pairs)


def cli(argv: Iterable[str] | None = None) -> Path:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="COLMAP model with the poses")
    p.add_argument("--num_matched", type=positive_int, default=20, help="pairs per image")
    p.add_argument(
        "--rotation_threshold",
        type=positive_float,
        default=DEFAULT_ROT_THRESH,
        help="max angle between viewing directions (degrees)",
    )
    p.add_argument("--output", type=output_file, required=True, help="pairs file to write")
    args = p.parse_args(None if argv is None else list(argv))
    return run_cli("localize.pairs_from_poses", lambda a: main(**vars(a)), args)


if __name__ == "__main__":
    cli()
