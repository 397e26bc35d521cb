"""Scaling of the Aachen pipeline with map size: per-unit costs, peak memory, Aachen projection.

    python benchmarks/scale.py [--sizes 30 100 300] [--queries 6] [--features sift [hardnet]]
        [--width 320 --height 240] [--num_covis 10] [--num_loc 5]
        [--calibration 1600x1200 | none] [--calibration_db 10]

For each size N a synthetic Aachen-layout scene (``localize.data.aachen.ensure_synthetic_aachen``,
cached under ``datasets/aachen-synth-scale-*``) of N database images and a fixed handful of
queries goes through ``pipelines.aachen.run`` (extract -> pairs -> match -> triangulate ->
localize), cold (fresh output directory), with ``query_pairs='retrieval'`` (top ``--num_loc``), so
the db-db pairs (``--num_covis`` per image) and query pairs grow linearly. Every run is its own
child process; its peak RSS is that child's ``ru_maxrss`` (``os.wait4``), so sizes do not
accumulate memory. A child that only imports the stages and loads the extractor gives the
baseline RSS.

Per-unit costs (wall and process-CPU seconds): extraction s/img, pairs (retrieval vocabulary +
global descriptors + ranking) s/img, matching s/pair (db-db + query-db), triangulation s/db image,
localization s/query. Total cost is linear when they stay flat: the largest/smallest ratio of each
is printed.

Aachen v1.1 projection (6,697 db + 1,015 query images, 4,096 keypoints, ~134k covisibility db
pairs, top-50 retrieval pairs): per-unit rates times the Aachen counts. A least-squares fit
``seconds = fixed + marginal * units`` per stage over the sweep separates fixed costs (model
load, FAISS / vocabulary set-up) from the per-unit cost. The rates come from a small
calibration run at Aachen resolution (``--calibration 1600x1200``, ``--calibration_db`` images,
``max_keypoints`` 4096; its seconds minus the sweep's fixed cost, per unit), or with
``--calibration none`` from the sweep's marginal rates; either way they are then scaled to 4,096
keypoints/image (extraction, pairs, triangulation, localization linearly, matching
quadratically: brute-force NN), so the calibration run keeps those factors near 1. A GPU column is an ASSUMPTION (stated per-stage speed-ups,
``--gpu_speedup``), not a measurement. Writes ``outputs/scale/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (make bench): repo root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from descriptors import registry  # noqa: E402
from descriptors.tables import format_table  # noqa: E402
from descriptors.util import setup_logging, write_json  # noqa: E402  (after the path fix)

logger = logging.getLogger("benchmarks.scale")

AACHEN = {
    "num_db": 6697,
    "num_queries": 1015,
    "keypoints": 4096,
    "db_pairs": 134_000,
    "num_loc": 50,
}
UNITS = ("extract", "pairs", "match", "triangulate", "localize")
UNIT_LABEL = {
    "extract": "extract s/img",
    "pairs": "pairs s/img",
    "match": "match ms/pair",
    "triangulate": "triang. s/db img",
    "localize": "loc. s/query",
}
# default GPU speed-ups per stage: ASSUMED, not measured (there is no GPU on this machine)
GPU_SPEEDUP_LEARNED = {
    "extract": 10.0,
    "pairs": 1.0,
    "match": 20.0,
    "triangulate": 1.0,
    "localize": 1.0,
}
GPU_SPEEDUP_OPENCV = {**GPU_SPEEDUP_LEARNED, "extract": 1.0}  # OpenCV SIFT runs on the CPU


def dataset_root(n_db: int, n_query: int, width: int, height: int, seed: int) -> Path:
    """Cache directory of one synthetic scene."""
    return Path("datasets") / f"aachen-synth-scale-n{n_db}-q{n_query}-{width}x{height}-s{seed}"


def ensure_dataset(
    n_db: int, n_query: int, width: int, height: int, seed: int
) -> tuple[Path, float]:
    """Generate (or reuse) the scene; returns (root, seconds spent)."""
    from localize.data.aachen import ensure_synthetic_aachen

    t0 = time.perf_counter()
    root = ensure_synthetic_aachen(
        dataset_root(n_db, n_query, width, height, seed),
        n_db=n_db,
        n_query=n_query,
        width=width,
        height=height,
        seed=seed,
    )
    return Path(root), time.perf_counter() - t0


# ---------------------------------------------------------------- child process


def _child(spec: dict[str, Any]) -> None:
    """One cold pipeline run (or, with ``baseline``, only the imports + extractor load); writes
    its numbers to ``spec['result']``."""
    os.environ.setdefault("GLOG_minloglevel", "1")
    setup_logging(logging.WARNING)
    from localize import extract_features, io
    from pipelines import aachen

    registry.load(
        spec["features"],
        device=spec["conf"].get("device"),
        batch_size=extract_features.default_conf["batch_size"],
    )
    out: dict[str, Any] = {"baseline": bool(spec.get("baseline"))}
    if not spec.get("baseline"):
        work = Path(spec["work"])
        t0 = time.perf_counter()
        s = aachen.run(spec["features"], spec["dataset"], work, overwrite=True, **spec["conf"])
        out["wall_total"] = time.perf_counter() - t0
        feats = Path(s["out_dir"]) / "features.h5"
        n_kp = [len(io.get_keypoints(feats, n)) for n in io.list_h5_names(feats)]
        out.update(
            {
                k: s[k]
                for k in (
                    "num_db",
                    "num_queries",
                    "num_query_pairs",
                    "timings",
                    "cpu_timings",
                    "triangulation",
                    "localization",
                    "retrieval_method",
                    "db_pairs_method",
                    "query_pairs",
                )
            }
        )
        out["num_db_pairs"] = s["triangulation"]["num_pairs"]
        out["keypoints_per_image"] = sum(n_kp) / max(len(n_kp), 1)
        ev = s.get("evaluation")
        out["recall_0.25m_2deg"] = (
            {c: v["recall"][0] for c, v in ev["conditions"].items()} if ev else None
        )
        if not spec.get("keep"):
            shutil.rmtree(work, ignore_errors=True)
    Path(spec["result"]).write_text(json.dumps(out, indent=2))


def run_child(spec: dict[str, Any], log_path: Path) -> dict[str, Any]:
    """Run ``_child(spec)`` in a fresh interpreter; returns its result plus ``peak_rss_mb`` (the
    child's own max RSS from ``os.wait4``) and ``process_wall_s``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path = log_path.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "GLOG_minloglevel": os.environ.get("GLOG_minloglevel", "1")}
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--_child", str(spec_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        raise RuntimeError(
            f"child run failed (rc {proc.returncode}), log {log_path}:\n" + "\n".join(tail)
        )
    res = json.loads(Path(spec["result"]).read_text())
    res["peak_rss_mb"] = ru.ru_maxrss / 1024.0  # Linux: kilobytes
    res["process_wall_s"] = wall
    spec_path.unlink(missing_ok=True)
    Path(spec["result"]).unlink(missing_ok=True)
    return res


# ---------------------------------------------------------------- rates and tables


def units(r: dict[str, Any]) -> dict[str, int]:
    """Work units of each stage in run ``r``: images, pairs, db images, queries."""
    n_img = r["num_db"] + r["num_queries"]
    return {
        "extract": n_img,
        "pairs": n_img,
        "match": r["num_db_pairs"] + r["num_query_pairs"],
        "triangulate": r["num_db"],
        "localize": r["num_queries"],
    }


def stage_seconds(r: dict[str, Any], kind: str) -> dict[str, float]:
    """Seconds of each unit stage; ``kind`` 'wall' (timings) or 'cpu' (cpu_timings)."""
    t = r["timings"] if kind == "wall" else r["cpu_timings"]
    return {
        "extract": t["extract_db"] + t["extract_query"],
        "pairs": t["pairs"],
        "match": t["match"],
        "triangulate": t["triangulate"],
        "localize": t["localize"],
    }


def unit_rates(r: dict[str, Any], kind: str) -> dict[str, float]:
    """Average seconds per unit of one run."""
    t, n = stage_seconds(r, kind), units(r)
    return {u: t[u] / max(n[u], 1) for u in UNITS}


def linear_fit(runs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, float]]:
    """Per stage least-squares ``seconds = fixed + marginal * units`` over the sweep. A stage
    whose units do not change across sizes (queries) gets fixed 0 and the mean rate."""
    import numpy as np

    out = {}
    for u in UNITS:
        x = np.array([units(r)[u] for r in runs], float)
        y = np.array([stage_seconds(r, kind)[u] for r in runs], float)
        if len(runs) < 2 or np.ptp(x) == 0:
            out[u] = {"fixed_s": 0.0, "marginal_s": float(np.mean(y / np.maximum(x, 1)))}
            continue
        b, a = np.polyfit(x, y, 1)
        out[u] = {"fixed_s": float(a), "marginal_s": float(b)}
    return out


def _fmt_rate(unit: str, v: float) -> str:
    return f"{1e3 * v:.2f}" if unit == "match" else f"{v:.4f}"


def observations(r: dict[str, Any], kind: str) -> tuple[float, float]:
    """(3D-point observations per db image, triangulation seconds per 1000 observations) of
    a run (``kind``: 'wall' or 'cpu' seconds): a denser map has more observations per image,
    and triangulation (COLMAP's track building + bundle adjustment) costs per observation,
    not per image."""
    n_obs = float(r.get("triangulation", {}).get("num_observations", 0))
    tri_s = stage_seconds(r, kind)["triangulate"]
    return n_obs / max(r["num_db"], 1), 0.0 if n_obs == 0 else 1e3 * tri_s / n_obs


def format_sweep(runs: list[dict[str, Any]], kind: str) -> str:
    """Rows = sizes: counts, per-unit costs, observations per db image and triangulation cost
    per 1000 observations, total, peak RSS; last row largest/smallest ratio."""
    head = (
        ["db", "q", "kp/img", "db pairs", "q pairs"]
        + [UNIT_LABEL[u] for u in UNITS]
        + ["obs/db img", "triang. s/1k obs", "total s", "peak RSS MB"]
    )
    rows, obs = [], []
    for r in runs:
        rates = unit_rates(r, kind)
        t = r["timings"] if kind == "wall" else r["cpu_timings"]
        obs.append(observations(r, kind))
        rows.append(
            [
                r["num_db"],
                r["num_queries"],
                f"{r['keypoints_per_image']:.0f}",
                r["num_db_pairs"],
                r["num_query_pairs"],
            ]
            + [_fmt_rate(u, rates[u]) for u in UNITS]
            + [f"{obs[-1][0]:.0f}", f"{obs[-1][1]:.3f}"]
            + [f"{sum(t.values()):.1f}", f"{r['peak_rss_mb']:.0f}"]
        )
    if len(runs) > 1:
        lo, hi = unit_rates(runs[0], kind), unit_rates(runs[-1], kind)
        ratio = [f"{h / l:.2f}x" if l > 0 else "-" for h, l in zip(obs[-1], obs[0])]
        rows.append(
            [f"ratio {runs[-1]['num_db']}/{runs[0]['num_db']}", "", "", "", ""]
            + [f"{hi[u] / lo[u]:.2f}x" if lo[u] > 0 else "-" for u in UNITS]
            + ratio
            + ["", f"{runs[-1]['peak_rss_mb'] / runs[0]['peak_rss_mb']:.2f}x"]
        )
    return format_table(head, rows, align="r" * len(head))


def project_aachen(
    src: dict[str, Any],
    fit: dict[str, dict[str, dict[str, float]]],
    gpu_speedup: dict[str, float],
    from_calibration: bool,
) -> dict[str, Any]:
    """Aachen v1.1 seconds per stage (see module doc).

    Per-unit rate: from the calibration run ``src``, (its seconds - the sweep's fixed cost) /
    its units (the average rate when that is not positive); from a sweep run, the sweep's
    marginal rate. Then scaled to 4096 keypoints/image and multiplied by the Aachen units; the
    sweep's fixed costs are added once.
    """
    kp = max(src["keypoints_per_image"], 1.0)
    f = AACHEN["keypoints"] / kp
    scale = {"extract": f, "pairs": f, "match": f * f, "triangulate": f, "localize": f}
    n_img = AACHEN["num_db"] + AACHEN["num_queries"]
    counts = {
        "extract": n_img,
        "pairs": n_img,
        "match": AACHEN["db_pairs"] + AACHEN["num_queries"] * AACHEN["num_loc"],
        "triangulate": AACHEN["num_db"],
        "localize": AACHEN["num_queries"],
    }
    out: dict[str, Any] = {
        "source_num_db": src["num_db"],
        "source_keypoints_per_image": kp,
        "keypoint_scale": scale,
        "counts": counts,
        "stages": {},
    }
    for kind in ("wall", "cpu"):
        t, n = stage_seconds(src, kind), units(src)
        for u in UNITS:
            fixed = fit[kind][u]["fixed_s"]
            if from_calibration:
                rate = (t[u] - fixed) / max(n[u], 1)
                if rate <= 0:
                    rate = t[u] / max(n[u], 1)
            else:
                rate = fit[kind][u]["marginal_s"]
            st = out["stages"].setdefault(u, {})
            st[f"{kind}_rate_s"] = rate
            st[f"{kind}_s"] = max(fixed, 0.0) + rate * scale[u] * counts[u]
    for u in UNITS:
        out["stages"][u]["gpu_assumed_wall_s"] = out["stages"][u]["wall_s"] / gpu_speedup[u]
    for k in ("wall_s", "cpu_s", "gpu_assumed_wall_s"):
        out[f"total_{k}"] = sum(s[k] for s in out["stages"].values())
    # matching with a linear keypoint factor: the bound from below when the source's per-pair
    # cost is mostly per-pair overhead (reads, writes), not the N x N product
    m = out["stages"]["match"]
    out["match_linear_kp"] = {k: m[f"{k}_s"] / scale["match"] * f for k in ("wall", "cpu")}
    # pixel-count alternative for extraction (DoG cost grows with pixels, not keypoints)
    out["extract_wall_s_by_pixels"] = None
    if not from_calibration and src.get("pixels"):
        out["extract_wall_s_by_pixels"] = (
            out["stages"]["extract"]["wall_rate_s"] * (1600 * 1200 / src["pixels"]) * n_img
        )
    return out


def format_fit(fit: dict[str, dict[str, dict[str, float]]]) -> str:
    """Fixed and marginal cost per stage, wall and CPU."""
    head = ["stage", "wall fixed s", "wall marginal", "CPU fixed s", "CPU marginal", "unit"]
    unit = {
        "extract": "s/img",
        "pairs": "s/img",
        "match": "ms/pair",
        "triangulate": "s/db img",
        "localize": "s/query",
    }
    rows = [
        [
            u,
            f"{fit['wall'][u]['fixed_s']:.2f}",
            _fmt_rate(u, fit["wall"][u]["marginal_s"]),
            f"{fit['cpu'][u]['fixed_s']:.2f}",
            _fmt_rate(u, fit["cpu"][u]["marginal_s"]),
            unit[u],
        ]
        for u in UNITS
    ]
    return format_table(head, rows)


def format_projection(p: dict[str, Any], gpu_speedup: dict[str, float], label: str) -> str:
    head = [
        "stage",
        "units",
        "kp scale",
        "CPU-here wall h",
        "CPU-here CPU h",
        "GPU ASSUMED speed-up",
        "GPU ASSUMED wall h",
    ]
    rows = [
        [
            u,
            p["counts"][u],
            f"{p['keypoint_scale'][u]:.2f}x",
            f"{p['stages'][u]['wall_s'] / 3600:.2f}",
            f"{p['stages'][u]['cpu_s'] / 3600:.2f}",
            f"{gpu_speedup[u]:g}x",
            f"{p['stages'][u]['gpu_assumed_wall_s'] / 3600:.2f}",
        ]
        for u in UNITS
    ]
    rows.append(
        [
            "total",
            "",
            "",
            f"{p['total_wall_s'] / 3600:.2f}",
            f"{p['total_cpu_s'] / 3600:.2f}",
            "",
            f"{p['total_gpu_assumed_wall_s'] / 3600:.2f}",
        ]
    )
    return format_table(head, rows, title=label)


# ---------------------------------------------------------------- main


def summarize(
    feat: str,
    base_rss_mb: float,
    runs: list[dict[str, Any]],
    calib: dict[str, Any] | None,
    meta: dict[str, Any],
    gpu_speedup: list[float] | None = None,
) -> dict[str, Any]:
    """Rates, largest/smallest ratios, linear fit and Aachen projection of one descriptor."""
    is_cv = str(feat) in ("sift", "rootsift")
    speed = (
        dict(zip(UNITS, gpu_speedup))
        if gpu_speedup
        else (GPU_SPEEDUP_OPENCV if is_cv else GPU_SPEEDUP_LEARNED)
    )
    src = calib or runs[-1]
    fit = {k: linear_fit(runs, k) for k in ("wall", "cpu")}
    proj = project_aachen(src, fit, speed, from_calibration=calib is not None)
    cal = meta.get("calibration")
    proj["source"] = (
        f"calibration run {cal[0]}x{cal[1]} ({src['num_db']} db, "
        f"{src['keypoints_per_image']:.0f} kp/img)"
        if calib
        else f"sweep's marginal rates ({meta['width']}x{meta['height']}, "
        f"{src['keypoints_per_image']:.0f} kp/img)"
    )
    proj["gpu_speedup_assumed"] = speed
    ratios = {
        kind: {
            u: unit_rates(runs[-1], kind)[u] / unit_rates(runs[0], kind)[u]
            for u in UNITS
            if unit_rates(runs[0], kind)[u] > 0
        }
        for kind in ("wall", "cpu")
    }
    return {
        "baseline_rss_mb": base_rss_mb,
        "runs": runs,
        "rates": {k: [unit_rates(r, k) for r in runs] for k in ("wall", "cpu")},
        "ratio_largest_smallest": ratios,
        "linear_fit": fit,
        "calibration": calib,
        "projection": proj,
        "complete": True,
    }


def print_entry(feat: str, entry: dict[str, Any], meta: dict[str, Any]) -> None:
    """The sweep tables, the fit, the calibration row and the Aachen projection."""
    runs, calib, proj = entry["runs"], entry["calibration"], entry["projection"]
    print(
        f"\n=== {feat}: {meta['width']}x{meta['height']}, {meta['queries']} queries, "
        f"num_covis {meta['num_covis']}, retrieval top {meta['num_loc']}, {meta['cpus']} CPUs; "
        f"baseline RSS (imports + extractor) {entry['baseline_rss_mb']:.0f} MB"
    )
    print("wall seconds per unit (shared machine: includes waiting for the CPU)")
    print(format_sweep(runs, "wall"))
    print("process-CPU seconds per unit (all threads)")
    print(format_sweep(runs, "cpu"))
    print("least-squares fit over the sweep: seconds = fixed + marginal * units")
    print(format_fit(entry["linear_fit"]))
    if calib:
        cal = meta["calibration"]
        print(
            f"calibration {cal[0]}x{cal[1]} ({calib['num_db']} db, {calib['num_queries']} q, "
            f"max_keypoints {AACHEN['keypoints']}), CPU:"
        )
        print(format_sweep([calib], "cpu"))
    speed = proj["gpu_speedup_assumed"]
    print(
        format_projection(
            proj,
            speed,
            f"Aachen v1.1 projection ({AACHEN['num_db']} db + "
            f"{AACHEN['num_queries']} q, {AACHEN['keypoints']} kp/img, "
            f"{proj['counts']['match']} pairs) from the {proj['source']}; GPU "
            "columns are an ASSUMPTION (stated speed-ups), not measured",
        )
    )
    if proj["extract_wall_s_by_pixels"] is not None:
        print(
            f"extraction scaled by pixels (to 1600x1200) instead of keypoints: "
            f"{proj['extract_wall_s_by_pixels'] / 3600:.2f} h wall"
        )
    if not calib:
        ml = proj.get("match_linear_kp") or {}
        print(
            f"matching with a linear instead of quadratic keypoint factor "
            f"({proj['keypoint_scale']['extract']:.2f}x; per-pair cost at "
            f"{proj['source_keypoints_per_image']:.0f} kp/img is mostly overhead, so the "
            f"quadratic row is an upper bound): {ml.get('wall', float('nan')) / 3600:.2f} h "
            f"wall, {ml.get('cpu', float('nan')) / 3600:.2f} h CPU"
        )


def report(path: Path, gpu_speedup: list[float] | None = None) -> dict[str, Any]:
    """Print (and complete in place) the JSON of a saved, possibly interrupted, sweep."""
    result = json.loads(Path(path).read_text())
    meta = result.get("meta") or {
        "width": result["resolution"][0],
        "height": result["resolution"][1],
        "queries": result["queries"],
        "num_covis": result["conf"]["num_covis"],
        "num_loc": result["conf"]["num_loc"],
        "calibration": None,
        "cpus": result["cpus"],
    }
    result["meta"] = meta
    for feat, e in result["features"].items():
        if not e.get("runs"):
            continue
        complete = e.get("complete", False)
        entry = summarize(
            feat, e["baseline_rss_mb"], e["runs"], e.get("calibration"), meta, gpu_speedup
        )
        entry["complete"] = complete
        result["features"][feat] = entry
        if not complete:
            print(
                f"\n({feat}: interrupted sweep, sizes "
                f"{[r['num_db'] for r in e['runs']]} of {result['sizes']})"
            )
        print_entry(feat, entry, meta)
    save_json(Path(path), result)
    return result


def _size(s: str) -> tuple[int, int] | None:
    """argparse type: 'WxH' or 'none'."""
    if s.lower() == "none":
        return None
    try:
        w, h = (int(x) for x in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, got {s!r}") from None
    return w, h


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[30, 100, 300],
        help="database images per scene (ascending)",
    )
    p.add_argument("--queries", type=int, default=6, help="queries per scene (all sizes)")
    p.add_argument(
        "--features",
        nargs="+",
        default=["sift"],
        help="descriptor names / checkpoints (default sift)",
    )
    p.add_argument(
        "--width", type=int, default=320, help="image width of the synthetic scenes (px)"
    )
    p.add_argument("--height", type=int, default=240, help="image height (px)")
    p.add_argument("--num_covis", type=int, default=10, help="db-db pairs per db image")
    p.add_argument("--num_loc", type=int, default=5, help="retrieved db images per query")
    p.add_argument(
        "--max_keypoints",
        type=int,
        default=None,
        help="DoG keypoints per image (default: extraction's)",
    )
    p.add_argument(
        "--calibration",
        type=_size,
        default=(1600, 1200),
        metavar="WxH",
        help="also run a small scene (--calibration_db db, 2 queries) at this "
        "resolution with 4096 keypoints; its rates feed the Aachen projection "
        "('none': project from the sweep's marginal rates)",
    )
    p.add_argument(
        "--calibration_db", type=int, default=10, help="database images of the calibration scene"
    )
    p.add_argument(
        "--gpu_speedup",
        type=float,
        nargs=5,
        default=None,
        metavar=("EXTRACT", "PAIRS", "MATCH", "TRIANG", "LOC"),
        help="ASSUMED GPU speed-ups per stage (default: extract 10x for learned "
        "descriptors / 1x for OpenCV SIFT, match 20x, others 1x)",
    )
    p.add_argument("--seed", type=int, default=0, help="scene seed")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--keep", action="store_true", help="keep each run's pipeline outputs")
    p.add_argument(
        "--out", type=Path, default=Path("outputs/scale/scale.json"), help="JSON result file"
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="JSON",
        help="only print the tables of a saved (possibly interrupted) sweep, and "
        "complete its JSON from the runs it holds",
    )
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        _child(json.loads(Path(args._child).read_text()))
        return {}
    if args.report:
        return report(args.report, args.gpu_speedup)
    setup_logging(logging.INFO)
    sizes = sorted(args.sizes)
    work_root = args.out.parent / "work"
    conf = {
        "query_pairs": "retrieval",
        "num_loc": args.num_loc,
        "num_covis": args.num_covis,
        "max_keypoints": args.max_keypoints,
        "device": args.device,
    }
    result: dict[str, Any] = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "sizes": sizes,
        "queries": args.queries,
        "resolution": [args.width, args.height],
        "conf": conf,
        "aachen": AACHEN,
        "features": {},
        "started": time.strftime("%F %T %Z"),
    }
    meta = {
        "width": args.width,
        "height": args.height,
        "queries": args.queries,
        "num_covis": args.num_covis,
        "num_loc": args.num_loc,
        "calibration": args.calibration,
        "cpus": os.cpu_count(),
    }
    result["meta"] = meta
    datasets: dict[int, tuple[Path, float]] = {}
    for n in sizes:
        datasets[n] = ensure_dataset(n, args.queries, args.width, args.height, args.seed)
        logger.info(
            "scene n_db=%d: %s (%.1f s to generate / check)", n, datasets[n][0], datasets[n][1]
        )
    calib_ds = None
    if args.calibration:
        cw, ch = args.calibration
        calib_ds = ensure_dataset(args.calibration_db, 2, cw, ch, args.seed)
    for feat in args.features:
        from pipelines.aachen import features_tag

        tag = features_tag(feat)
        base = run_child(
            {
                "features": feat,
                "conf": conf,
                "baseline": True,
                "result": str(work_root / f"{tag}-baseline.result.json"),
            },
            work_root / f"{tag}-baseline.log",
        )
        runs = []
        for n in sizes:
            logger.info("%s: %d db images ...", feat, n)
            r = run_child(
                {
                    "features": feat,
                    "dataset": str(datasets[n][0]),
                    "conf": conf,
                    "work": str(work_root / f"{tag}-n{n}"),
                    "keep": args.keep,
                    "result": str(work_root / f"{tag}-n{n}.result.json"),
                },
                work_root / f"{tag}-n{n}.log",
            )
            r["pixels"] = args.width * args.height
            r["dataset_seconds"] = datasets[n][1]
            runs.append(r)
            result["features"][feat] = {
                "baseline_rss_mb": base["peak_rss_mb"],
                "runs": runs,
                "complete": False,
            }
            save_json(args.out, result)
            logger.info(
                "%s n=%d: %.1f s wall, peak RSS %.0f MB", feat, n, r["wall_total"], r["peak_rss_mb"]
            )
        calib = None
        if calib_ds is not None:
            cconf = {
                **conf,
                "max_keypoints": AACHEN["keypoints"],
                "num_loc": min(args.num_loc, args.calibration_db),
            }
            calib = run_child(
                {
                    "features": feat,
                    "dataset": str(calib_ds[0]),
                    "conf": cconf,
                    "work": str(work_root / f"{tag}-calib"),
                    "keep": args.keep,
                    "result": str(work_root / f"{tag}-calib.result.json"),
                },
                work_root / f"{tag}-calib.log",
            )
            calib["pixels"] = args.calibration[0] * args.calibration[1]
        entry = summarize(feat, base["peak_rss_mb"], runs, calib, meta, args.gpu_speedup)
        result["features"][feat] = entry
        print_entry(feat, entry, meta)
        save_json(args.out, result)
    result["finished"] = time.strftime("%F %T %Z")
    save_json(args.out, result)
    print(f"\nwrote {args.out}")
    return result


def save_json(path: Path, obj: dict[str, Any]) -> None:
    """Atomic JSON write (also after every run, so an interrupted sweep keeps what it did)."""
    write_json(path, obj)


if __name__ == "__main__":
    main()
