"""Build a Brown-layout patch dataset from posed images (``localize.make_patches``).

    python -m pipelines.make_patches --images DIR (--model DIR | --strecha DIR) \
        --out datasets/phototour-NAME/SCENE [--conf default|fast] [--resize_max N] ...

Train on it with ``python -m pipelines.train --recipe hardnet --data datasets/phototour-NAME
--train SCENE``. Prints a summary (views, tracks, patches, track length, reprojection error).
"""
from __future__ import annotations

import argparse
import logging
import sys

from localize import make_patches
from localize.colmap import ColmapError


def _positive(kind):
    def f(v: str):
        x = kind(v)
        if x <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
        return x
    return f


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", required=True, help="image root (names as in the poses)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="COLMAP model directory (.bin or .txt) with the poses")
    src.add_argument("--strecha", help="Strecha gt_dense_cameras folder")
    p.add_argument("--out", required=True, help="scene folder to write (Brown layout)")
    p.add_argument("--conf", default="default", choices=sorted(make_patches.confs))
    p.add_argument("--resize_max", type=_positive(int))
    p.add_argument("--max_keypoints", type=_positive(int))
    p.add_argument("--num_matched", type=_positive(int))
    p.add_argument("--epipolar_px", type=_positive(float))
    p.add_argument("--max_reproj_px", type=_positive(float))
    p.add_argument("--min_tri_angle_deg", type=float)
    p.add_argument("--max_pairs", type=_positive(int))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    conf = dict(make_patches.confs[args.conf])
    for k in ("resize_max", "max_keypoints", "num_matched", "epipolar_px", "max_reproj_px",
              "min_tri_angle_deg", "max_pairs"):
        if getattr(args, k) is not None:
            conf[k] = getattr(args, k)
    try:
        s = make_patches.build(conf, args.images, args.out, reference=args.model,
                               strecha=args.strecha)
    except (ColmapError, ValueError) as e:
        sys.exit(f"make_patches: {e}")
    print(f"{args.out}: {s['views']} views, {s['pairs']} pairs, {s['guided_matches']} guided "
          f"matches, {s['triangulated']} triangulated -> {s['tracks']} tracks, {s['patches']} "
          f"patches, track length {s['track_length_mean']:.2f} (max {s['track_length_max']}), "
          f"reprojection error median {s['reproj_error_px_median']:.3f} px "
          f"(max {s['reproj_error_px_max']:.3f}), {s['m50_pairs']} m50 pairs")
    return s


if __name__ == "__main__":
    main()
