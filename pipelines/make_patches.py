"""Build a Brown-layout patch dataset from posed images (``localize.make_patches``).

    python -m pipelines.make_patches --images DIR [--model DIR | --strecha DIR] \
        --out datasets/phototour-NAME/SCENE [--conf default|fast] [--resize_max N] ...

Without ``--model`` and ``--strecha`` the photos are unposed: ``pipelines.sfm`` reconstructs
them first (``--sfm_features``, default rootsift; ``--sfm_pairs`` / ``--sfm_mapper``; outputs
under ``--sfm_outputs``, reused like any ``pipelines.sfm`` run) and the patches come from its
largest model (only its registered images; tracks filtered as with given poses).

Train on it with ``python -m pipelines.train --recipe hardnet --data datasets/phototour-NAME
--train SCENE``. Prints a summary (views, tracks, patches, track length, reprojection error).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from descriptors.util import setup_logging
from localize import colmap, make_patches
from localize.cli import ArgumentParser, cli_errors, nonneg_int, positive_float, positive_int

logger = logging.getLogger(__name__)


def model_from_photos(
    images: str | os.PathLike,
    features: str = "rootsift",
    outputs: str | os.PathLike = "outputs/sfm",
    **sfm_conf: Any,
) -> Path:
    """``pipelines.sfm.run`` on unposed photos; returns its model folder.

    Raises:
        ColmapError when fewer than two images were registered (no poses to cut patches from).
    """
    from pipelines import sfm

    s = sfm.run(images, features, outputs, **sfm_conf)
    r = s["reconstruction"]
    logger.info("SfM of %s: %s, %d points", images, r["registered"], r["num_points3D"])
    if r["num_reg_images"] < 2:
        raise colmap.ColmapError(
            f"{images}: SfM registered {r['registered']} images; no poses "
            "to cut patches from (give --model or --strecha)"
        )
    return Path(s["paths"]["sfm"])


def main(argv: list[str] | None = None) -> dict:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True, help="image root (names as in the poses)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="COLMAP model directory (.bin or .txt) with the poses")
    src.add_argument("--strecha", help="Strecha gt_dense_cameras folder")
    p.add_argument(
        "--sfm_features",
        default="rootsift",
        help="without poses: descriptor of the SfM run (pipelines.sfm --features)",
    )
    p.add_argument(
        "--sfm_pairs", default="exhaustive", choices=("exhaustive", "retrieval", "sequential")
    )
    p.add_argument(
        "--sfm_mapper", default="incremental", choices=("incremental", "global", "hierarchical")
    )
    p.add_argument(
        "--sfm_max_keypoints",
        type=positive_int,
        help="without poses: DoG keypoints per image of the SfM run",
    )
    p.add_argument("--sfm_outputs", default="outputs/sfm", help="output root of the SfM run")
    p.add_argument("--out", required=True, help="scene folder to write (Brown layout)")
    p.add_argument(
        "--conf",
        default="default",
        choices=sorted(make_patches.confs),
        help="builder settings (localize.make_patches.confs)",
    )
    p.add_argument(
        "--resize_max",
        type=positive_int,
        help="longer side (px) of the images the patches are cut from",
    )
    p.add_argument("--max_keypoints", type=positive_int, help="DoG keypoints per image")
    p.add_argument(
        "--num_matched", type=positive_int, help="covisible partner views per view (from the poses)"
    )
    p.add_argument(
        "--epipolar_px",
        type=positive_float,
        help="guided matching: max distance (px) to the epipolar line",
    )
    p.add_argument(
        "--max_reproj_px",
        type=positive_float,
        help="keep tracks whose reprojection error is below this in every view",
    )
    p.add_argument(
        "--min_tri_angle_deg",
        type=positive_float,
        help="keep tracks whose largest triangulation angle is at least this",
    )
    p.add_argument("--max_pairs", type=positive_int, help="cap on the number of view pairs")
    p.add_argument(
        "--mr_size",
        type=positive_float,
        help=f"patch side in units of sigma (default {make_patches.confs['default']['mr_size']:g})",
    )
    p.add_argument(
        "--night_copies",
        type=nonneg_int,
        help="night renderings per view cut at the same keypoints (extra views; default 0)",
    )
    args = p.parse_args(argv)
    setup_logging()
    conf = dict(make_patches.confs[args.conf])
    for k in (
        "resize_max",
        "max_keypoints",
        "num_matched",
        "epipolar_px",
        "max_reproj_px",
        "min_tri_angle_deg",
        "max_pairs",
        "mr_size",
        "night_copies",
    ):
        if getattr(args, k) is not None:
            conf[k] = getattr(args, k)
    with cli_errors("pipelines.make_patches"):
        reference = args.model
        if args.model is None and args.strecha is None:
            reference = model_from_photos(
                args.images,
                args.sfm_features,
                args.sfm_outputs,
                pairs=args.sfm_pairs,
                mapper=args.sfm_mapper,
                max_keypoints=args.sfm_max_keypoints,
            )
        s = make_patches.build(
            conf, args.images, args.out, reference=reference, strecha=args.strecha
        )
    print(
        f"{args.out}: {s['views']} views, {s['pairs']} pairs, {s['guided_matches']} guided "
        f"matches, {s['triangulated']} triangulated -> {s['tracks']} tracks, {s['patches']} "
        f"patches, track length {s['track_length_mean']:.2f} (max {s['track_length_max']}), "
        f"reprojection error median {s['reproj_error_px_median']:.3f} px "
        f"(max {s['reproj_error_px_max']:.3f}), {s['m50_pairs']} m50 pairs"
    )
    return s


if __name__ == "__main__":
    main()
