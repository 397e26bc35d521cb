"""Relocalization on a REAL multi-view scene with ground-truth cameras (Strecha).

    python benchmarks/real_relocalization.py [--shared ../shared/data] [--scene fountain-P11]
        [--features sift rootsift hardnet PATH ...] [--out outputs/real_relocalization]

The scene is turned into the Aachen v1.1 layout (``localize.data.strecha.write_aachen_layout``:
every third view (``--query_every``) a query with its ground-truth pose, half of the queries
darkened into a night version with the synthetic night model (``--both``: every query view as a
day AND a night query; ``--night_darkness``), images at 1600 px), then ``pipelines.aachen`` runs for
each descriptor (same keypoints detector, pairs, matcher rules, triangulation from the reference
poses, localization). Prints day / night recall at (0.25 m, 2 deg) / (0.5 m, 5 deg) /
(5 m, 10 deg), median errors, and the retrieval recall@1/5/10 of the query pairs' ranking (a
covisible database view, ``localize.evaluate.covisible_db_views``, in the top k).
``--contrast_stretch`` stretches every image's grey levels before detection (the extraction conf
of the same name: dark night queries otherwise give few DoG keypoints).
``--from_map hardnet sdb fracking hndesc`` adds a row ``<recipe>-from-map`` per recipe: its
shipped weights fine-tuned on patches of the DATABASE views and poses of this map (hndesc: on
self-supervised pairs of the database photos) (``pipelines.train_and_localize.finetune_on_map``;
``--from_map_steps``, ``--from_map_night``); queries are never trained on.
``fountain-P11`` is held out: no shipped weights are trained on it.
Exits with a message (status 0) when the shared data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from descriptors import tables  # noqa: E402
from descriptors.util import setup_logging, write_json  # noqa: E402
from localize.cli import nonneg_int, positive_int  # noqa: E402
from localize.data.strecha import write_aachen_layout  # noqa: E402
from pipelines import aachen  # noqa: E402
from pipelines.train_and_localize import (  # noqa: E402
    FROM_MAP_NIGHT,
    FROM_MAP_RECIPES,
    FROM_MAP_STEPS,
    finetune_on_map,
)


def median_inliers(summary: dict) -> dict[str, float]:
    """Median PnP inliers per condition, from the run's localization logs (0 for a failure)."""
    logs = json.loads(Path(summary["paths"]["logs"]).read_text())["loc"]
    out = {}
    for name, q in summary["per_query"].items():
        out.setdefault(q["condition"], []).append((logs.get(name) or {}).get("num_inliers") or 0)
    return {c: float(np.median(v)) for c, v in out.items()}


def format_table(rows: dict[str, dict]) -> str:
    head = [
        "features",
        "day (.25m,2)/(.5m,5)/(5m,10)",
        "night",
        "med dt m",
        "inliers day / night",
        "retr R@1/5/10 day",
        "retr night",
    ]
    body = []
    for name, s in rows.items():
        ev = (s["evaluation"] or {}).get("conditions", {})

        def rec(c: str) -> str:
            r = ev.get(c, {}).get("recall")
            return "/".join(f"{100 * v:.0f}" for v in r) if r else "-"

        def rr(c: str) -> str:
            r = (s.get("retrieval_recall") or {}).get(c) or {}
            return "/".join(f"{100 * v:.0f}" for v in r.values()) if r else "-"

        med = ev.get("all", {}).get("median_dt", float("nan"))
        inl = s.get("median_inliers") or {}
        inl_s = " / ".join(f"{inl[c]:.0f}" if c in inl else "-" for c in ("day", "night"))
        body.append([name, rec("day"), rec("night"), f"{med:.3f}", inl_s, rr("day"), rr("night")])
    return tables.format_table(head, body)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--shared",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data",
        help="shared data folder holding strecha/<scene>",
    )
    p.add_argument("--scene", default="fountain-P11", help="Strecha scene (held out: fountain-P11)")
    p.add_argument(
        "--features",
        nargs="+",
        default=["sift", "rootsift", "hardnet"],
        help="registry names or checkpoints, one row each",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/real_relocalization"),
        help="pipeline outputs and <scene>.json",
    )
    p.add_argument(
        "--dataset_root",
        type=Path,
        default=Path("datasets"),
        help="where the Aachen-layout copy of the scene is written",
    )
    p.add_argument(
        "--query_pairs",
        default="auto",
        choices=["auto", "exhaustive", "retrieval"],
        help="query-db pairs of pipelines.aachen",
    )
    p.add_argument("--query_every", type=positive_int, default=3, help="every N-th view is a query")
    p.add_argument(
        "--night_darkness",
        type=float,
        default=1.0,
        help="synth.day_to_night darkness of the night queries (1 = typical; 1.4 = very dark)",
    )
    p.add_argument(
        "--both",
        action="store_true",
        help="every query view twice, as a day and as a night query (else half are night)",
    )
    p.add_argument(
        "--viz",
        type=positive_int,
        default=None,
        metavar="N",
        help="per descriptor, match / inlier pictures of the first N query pairs and "
        "queries (<out>/<features>/viz)",
    )
    p.add_argument(
        "--contrast_stretch",
        action="store_true",
        help="stretch each image's grey levels before detection (extraction conf)",
    )
    p.add_argument(
        "--from_map",
        nargs="*",
        default=[],
        choices=list(FROM_MAP_RECIPES),
        help="recipes fine-tuned on the map's database views, one row each",
    )
    p.add_argument(
        "--from_map_steps", type=positive_int, default=FROM_MAP_STEPS, help="fine-tuning steps"
    )
    p.add_argument(
        "--from_map_night",
        type=nonneg_int,
        default=FROM_MAP_NIGHT,
        help="night renderings per database view in the map's patch set",
    )
    args = p.parse_args(argv)
    setup_logging(logging.WARNING)
    scene = args.shared / "strecha" / args.scene
    if not scene.is_dir():
        print(f"real_relocalization: {scene} not found; nothing to measure (pass --shared DIR)")
        return {}
    layout = dict(
        query_every=args.query_every,
        night_darkness=args.night_darkness,
        both_conditions=args.both,
    )
    tag = (
        ""
        if layout == dict(query_every=3, night_darkness=1.0, both_conditions=False)
        else (f"-q{args.query_every}-d{args.night_darkness:g}{'-both' if args.both else ''}")
    )
    ds = args.dataset_root / f"strecha-{args.scene}{tag}"
    if not (ds / "queries" / "ground_truth_poses.txt").is_file():
        write_aachen_layout(scene, ds, **layout)
    features = list(args.features)
    for r in args.from_map:
        ft = finetune_on_map(
            r, ds, args.out / "from-map", steps=args.from_map_steps, night=args.from_map_night
        )
        features.append(ft["checkpoint"])
    rows = {}
    for f in features:
        s = aachen.run(
            f,
            ds,
            args.out,
            query_pairs=args.query_pairs,
            contrast_stretch=args.contrast_stretch or None,
        )
        if args.viz:
            aachen.visualize(s, args.viz)
        s["median_inliers"] = median_inliers(s)
        rows[aachen.features_tag(f)] = s
    print(
        f"{args.scene}: {rows[next(iter(rows))]['num_db']} database views, "
        f"{rows[next(iter(rows))]['num_queries']} queries "
        f"({'each day and night' if args.both else 'half night'}, darkness {args.night_darkness:g})"
    )
    print(format_table(rows))
    keep = ("evaluation", "retrieval_recall", "query_pairs", "triangulation", "timings")
    keep += ("median_inliers",)
    write_json(
        args.out / f"{args.scene}.json",
        {k: {kk: v[kk] for kk in keep} for k, v in rows.items()},
    )
    return rows


if __name__ == "__main__":
    main()
