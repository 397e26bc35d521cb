"""Build a Brown-layout patch dataset from posed images (``localize.make_patches``).

    python -m pipelines.make_patches --images DIR (--model DIR | --strecha DIR) \
        --out datasets/phototour-NAME/SCENE [--conf default|fast] [--resize_max N] ...

Train on it with ``python -m pipelines.train --recipe hardnet --data datasets/phototour-NAME
--train SCENE``. Prints a summary (views, tracks, patches, track length, reprojection error).
"""
from __future__ import annotations

import argparse

from descriptors.util import setup_logging
from localize import make_patches
from localize.cli import cli_errors, positive_int


def _positive_float(v: str) -> float:
    """argparse ``type=``: a number > 0."""
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {v!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return x


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True, help="image root (names as in the poses)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="COLMAP model directory (.bin or .txt) with the poses")
    src.add_argument("--strecha", help="Strecha gt_dense_cameras folder")
    p.add_argument("--out", required=True, help="scene folder to write (Brown layout)")
    p.add_argument("--conf", default="default", choices=sorted(make_patches.confs))
    p.add_argument("--resize_max", type=positive_int)
    p.add_argument("--max_keypoints", type=positive_int)
    p.add_argument("--num_matched", type=positive_int)
    p.add_argument("--epipolar_px", type=_positive_float)
    p.add_argument("--max_reproj_px", type=_positive_float)
    p.add_argument("--min_tri_angle_deg", type=float)
    p.add_argument("--max_pairs", type=positive_int)
    args = p.parse_args(argv)
    setup_logging()
    conf = dict(make_patches.confs[args.conf])
    for k in ("resize_max", "max_keypoints", "num_matched", "epipolar_px", "max_reproj_px",
              "min_tri_angle_deg", "max_pairs"):
        if getattr(args, k) is not None:
            conf[k] = getattr(args, k)
    with cli_errors("pipelines.make_patches"):
        s = make_patches.build(conf, args.images, args.out, reference=args.model,
                               strecha=args.strecha)
    print(f"{args.out}: {s['views']} views, {s['pairs']} pairs, {s['guided_matches']} guided "
          f"matches, {s['triangulated']} triangulated -> {s['tracks']} tracks, {s['patches']} "
          f"patches, track length {s['track_length_mean']:.2f} (max {s['track_length_max']}), "
          f"reprojection error median {s['reproj_error_px_median']:.3f} px "
          f"(max {s['reproj_error_px_max']:.3f}), {s['m50_pairs']} m50 pairs")
    return s


if __name__ == "__main__":
    main()
