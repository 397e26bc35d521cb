"""Seconds per stage of the Aachen pipeline on the synthetic scene.

    python -m benchmarks.pipeline_stages [--features sift] [--features hardnet ...]
        [--dataset DIR] [--max_keypoints N] [--repeat 1] [--device cpu]

Each run starts from an empty output directory (nothing cached), so every stage does its full
work: extract db, extract query, pairs (db-db from poses/covisibility + retrieval vocabulary,
global descriptors and ranking), match (db-db and query-db), triangulate, localize. With
several ``--features`` a ratio column against the first one is added. ``--before`` also runs
each descriptor with an earlier version's speed setting, in the same process right before it
(``num_workers=0``: no decoding / detection ahead of the network), so the table shows before /
after stage seconds of one run (the first version's FAISS matcher is timed against the product
matcher by ``benchmarks/matching_speed.py``). Results (poses) are the same with both settings. Prints a table and writes
``outputs/benchmarks/pipeline_stages.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from descriptors import tables
from descriptors.util import setup_logging, write_json
from pipelines import aachen

#: an earlier version's speed setting (``--before``)
BEFORE = {"num_workers": 0}


def bench(
    features: str,
    dataset: str | os.PathLike | None,
    repeat: int = 1,
    label: str | None = None,
    **conf,
) -> dict:
    """Median wall / process-CPU seconds per stage over ``repeat`` cold runs (fresh output dir
    each time). CPU seconds count all threads of this process: on a shared machine they are
    the stable number, wall seconds include waiting for the CPU."""
    runs = []
    last = None
    for _ in range(repeat):
        out = Path(tempfile.mkdtemp(prefix="bench_stages_"))
        try:
            t0 = time.perf_counter()
            last = aachen.run(features, dataset, out, **conf)
            wall = time.perf_counter() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        runs.append(
            {
                "wall": {**last["timings"], "total": wall},
                "cpu": {**last["cpu_timings"], "total": sum(last["cpu_timings"].values())},
            }
        )
    med = {
        kind: {k: sorted(r[kind][k] for r in runs)[len(runs) // 2] for k in runs[0][kind]}
        for kind in ("wall", "cpu")
    }
    recall = None
    if last and last.get("evaluation"):
        c = last["evaluation"]["conditions"]
        recall = {k: c[k]["recall"][0] for k in c}
    return {
        "features": label or features,
        "seconds": med,
        "runs": runs,
        "recall_0.25m_2deg": recall,
        "num_db": last["num_db"],
        "num_queries": last["num_queries"],
        "num_points3D": last["triangulation"]["num_points3D"],
    }


def format_table(results: list[dict]) -> str:
    """Rows = stages; per descriptor wall and CPU seconds; ratio of CPU s to the first one."""
    stages = list(aachen.STAGES) + ["total"]
    base = results[0]["seconds"]["cpu"]
    head = ["stage"]
    for r in results:
        head += [f"{r['features']} wall s", f"{r['features']} CPU s"]
    if len(results) > 1:
        head += [f"CPU {r['features']}/{results[0]['features']}" for r in results[1:]]
    rows = []
    for s in stages:
        row = [s]
        for r in results:
            row += [
                f"{r['seconds']['wall'].get(s, float('nan')):.2f}",
                f"{r['seconds']['cpu'].get(s, float('nan')):.2f}",
            ]
        if len(results) > 1:
            row += [
                f"{r['seconds']['cpu'][s] / base[s]:.2f}x" if base.get(s) else "-"
                for r in results[1:]
            ]
        rows.append(row)
    rec = ["day/night recall@0.25m,2°"]
    for r in results:
        rr = r["recall_0.25m_2deg"]
        rec += [
            (
                f"{100 * rr.get('day', float('nan')):.0f}% / "
                f"{100 * rr.get('night', float('nan')):.0f}%"
            )
            if rr
            else "-",
            "",
        ]
    rows.append(rec + [""] * (len(head) - len(rec)))
    return tables.format_table(head, rows)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--features",
        action="append",
        default=None,
        help="descriptor name or checkpoint (repeatable; default sift)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="Aachen-layout dataset (default: the demo's synthetic scene, rendered on first use)",
    )
    p.add_argument("--max_keypoints", type=int, default=None, help="DoG keypoints per image")
    p.add_argument(
        "--num_covis",
        type=int,
        default=aachen.default_conf["num_covis"],
        help="db-db pairs per db image",
    )
    p.add_argument(
        "--num_loc",
        type=int,
        default=aachen.default_conf["num_loc"],
        help="retrieved db images per query",
    )
    p.add_argument("--repeat", type=int, default=1, help="cold runs per descriptor (median)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument(
        "--before",
        action="store_true",
        help="also run each descriptor with the first version's speed settings",
    )
    p.add_argument(
        "--out", default="outputs/benchmarks/pipeline_stages.json", help="JSON result file"
    )
    args = p.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "1")
    setup_logging(logging.WARNING)
    feats = args.features or ["sift"]
    common = dict(
        max_keypoints=args.max_keypoints,
        num_covis=args.num_covis,
        num_loc=args.num_loc,
        device=args.device,
    )
    results = []
    for f in feats:
        if args.before:
            results.append(
                bench(f, args.dataset, args.repeat, label=f"{f} (before)", **common, **BEFORE)
            )
        results.append(bench(f, args.dataset, args.repeat, **common))
    r0 = results[0]
    where = args.dataset or "the synthetic demo scene"
    print(
        f"pipeline stages on {where} ({r0['num_db']} db, {r0['num_queries']} queries), "
        f"median of {args.repeat} cold run(s), {os.cpu_count()} CPUs, "
        f"device {args.device or 'auto'}"
    )
    print(format_table(results))
    write_json(
        Path(args.out),
        {
            "dataset": args.dataset,
            "repeat": args.repeat,
            "max_keypoints": args.max_keypoints,
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "results": results,
        },
    )
    return results


if __name__ == "__main__":
    main()
