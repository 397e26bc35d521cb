"""SfM from REAL unposed photos with every descriptor (``pipelines.sfm``), scored against
ground-truth cameras, optionally timed against hloc's SIFT SfM pipeline.

    python benchmarks/real_sfm.py [--shared ../shared/data] [--scenes fountain-P11 entry-P10
        sceaux_castle lund] [--only sift rootsift hardnet ...] [--features PATH ...]
        [--mappers incremental global] [--runs 5] [--resize_max 1024] [--out outputs/real_sfm]
    HLOC_SRC=/path/to/hloc python benchmarks/real_sfm.py ...   # + hloc's SIFT pipeline timing

Scenes: ``strecha/fountain-P11`` (held out) and ``strecha/entry-P10`` (11 / 10 photos,
3072x2048, ground-truth cameras in ``gt_dense_cameras``), and the unposed collections
``collections/sceaux_castle`` (11 photos, exhaustive pairs) and ``collections/lund`` (29 frames
of a walk, sequential pairs with retrieval loop closure) — these have no ground truth: registered
images / points / track length only. Images are resized to ``--resize_max`` (default 1024 px,
the longer side: a run fits this 2-core CPU; hloc's default is 1600) by the extractors of both
pipelines; intrinsics are unknown to both (COLMAP's guess, refined by bundle adjustment).

Rows: sift, rootsift, every shipped recipe with weights (``descriptors.registry.available``), the
published anchors in ``<shared>/published`` (``pub:<stem>``), and any ``--features``. Matching:
``nn-ratio`` for sift / rootsift, ``nn-ratio-0.9`` for learned descriptors (``pipelines.sfm``'s
defaults). ``--runs`` seeded runs per row and mapper, one thread everywhere (torch, OpenCV,
COLMAP): run 0 is the whole pipeline from an empty folder (its wall time is the row's time),
runs 1.. rebuild only the model with COLMAP seed 1.. on the same matches (COLMAP's
initialisation is what depends on the seed). Reported: mean and worst run of registered
views, 3D points, mean track length and, with ground truth, the share of ALL views within
(5 cm, 1 deg) and (25 cm, 2 deg), AUC of the centre error up to 10 cm and the median centre error
(``pipelines.sfm.evaluate_model``; unregistered = infinite error).

``HLOC_SRC``: hloc's ``pipeline_SfM`` with its ``sift`` conf (pycolmap DoG + SIFT at the same
``resize_max``), exhaustive pairs, ``NN-ratio``, ``reconstruction.main`` (incremental, one
thread), timed on the same photos right after our sift row, and scored the same way. hloc is
imported only here, from ``HLOC_SRC``. Exits with a message (status 0) when the shared data
folder is absent.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from descriptors import tables  # noqa: E402
from descriptors.registry import OPENCV_NAMES, available  # noqa: E402
from descriptors.util import setup_logging, write_json  # noqa: E402
from localize import colmap_sfm  # noqa: E402
from localize.cli import cli_errors, positive_int  # noqa: E402
from pipelines import sfm  # noqa: E402

logger = logging.getLogger("real_sfm")

#: scene -> (folder under shared, ground-truth folder or None, pairs)
SCENES: dict[str, tuple[str, str | None, str]] = {
    "fountain-P11": ("strecha/fountain-P11", "gt_dense_cameras", "exhaustive"),
    "entry-P10": ("strecha/entry-P10", "gt_dense_cameras", "exhaustive"),
    "sceaux_castle": ("collections/sceaux_castle", None, "exhaustive"),
    "lund": ("collections/lund", None, "sequential"),
}


def row_features(
    shared: Path, features: list[str], only: list[str] | None = None
) -> dict[str, str]:
    """{row name: ``--features`` value}: sift, rootsift, the shipped recipes, the published
    anchors (``pub:<stem>``; ``only`` keeps these standard rows) plus ``features``."""
    rows: dict[str, str] = {}
    for name in [*OPENCV_NAMES, *available()]:
        if only is None or name in only:
            rows[name] = name
    pub = shared / "published"
    for f in sorted(pub.iterdir()) if pub.is_dir() else []:
        if only is None or f"pub:{f.stem}" in only:
            rows[f"pub:{f.stem}"] = str(f)
    for f in features:
        rows[Path(f).name if Path(f).exists() else f] = f
    return rows


def _one_thread() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _cpu_s() -> float:
    """CPU seconds of this process (all threads) and its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run_record(s: dict, wall: float, cpu: float) -> dict[str, Any]:
    r, e = s["reconstruction"], s["evaluation"]
    out = {
        "registered": r["num_reg_images"],
        "num_images": r["num_input_images"],
        "points": r["num_points3D"],
        "track_length": r["mean_track_length"],
        "reproj_px": r["mean_reprojection_error_px"],
        "wall_s": wall,
        "cpu_s": cpu,
        "stage_s": s["timings"],
    }
    if e:
        out.update(
            {
                k: e[k]
                for k in ("within_5cm_1deg", "within_25cm_2deg", "auc_10cm", "median_centre_error")
            }
        )
    return out


def run_row(
    images: Path,
    gt: Path | None,
    features: str,
    out: Path,
    mapper: str,
    pairs: str,
    runs: int,
    resize_max: int,
    max_keypoints: int | None = None,
) -> list[dict[str, Any]]:
    """``runs`` seeded runs of one row (see the module docstring); one record per run."""
    if out.exists():
        shutil.rmtree(out)
    recs = []
    for seed in range(runs):
        t0, c0 = time.perf_counter(), _cpu_s()
        s = sfm.run(
            images,
            features,
            out,
            gt=gt,
            pairs=pairs,
            mapper=mapper,
            seed=seed,
            num_threads=1,
            resize_max=resize_max,
            max_keypoints=max_keypoints,
            num_workers=0,
            progress=False,
        )
        recs.append(_run_record(s, time.perf_counter() - t0, _cpu_s() - c0))
        logger.warning(
            "%s %s %s seed %d: %s",
            images.parent.name,
            features,
            mapper,
            seed,
            s["reconstruction"]["registered"],
        )
    return recs


def run_hloc(
    hloc_src: str, images: Path, gt: Path | None, out: Path, resize_max: int
) -> dict[str, Any]:
    """hloc's SIFT SfM pipeline (module docstring); wall time and the same scores."""
    sys.path.insert(0, hloc_src)
    from hloc import extract_features, match_features, pairs_from_exhaustive, reconstruction

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    names = sorted(p.name for p in images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    fconf = {**extract_features.confs["sift"]}
    fconf["preprocessing"] = {**fconf["preprocessing"], "resize_max": resize_max}
    t0, c0 = time.perf_counter(), _cpu_s()
    pairs = out / "pairs.txt"
    pairs_from_exhaustive.main(pairs, image_list=names)
    feats = extract_features.main(fconf, images, image_list=names, feature_path=out / "features.h5")
    matches = match_features.main(
        match_features.confs["NN-ratio"], pairs, features=feats, matches=out / "matches.h5"
    )
    rec = reconstruction.main(
        out / "sfm",
        images,
        pairs,
        feats,
        matches,
        image_list=names,
        mapper_options={"num_threads": 1},
    )
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    r = {
        "cpu_s": cpu,
        "registered": rec.num_reg_images() if rec else 0,
        "num_images": len(names),
        "points": rec.num_points3D() if rec else 0,
        "track_length": rec.compute_mean_track_length() if rec else 0.0,
        "wall_s": wall,
    }
    if gt is not None:
        e = sfm.evaluate_model(rec, sfm.read_ground_truth(gt))
        r.update(
            {
                k: e[k]
                for k in ("within_5cm_1deg", "within_25cm_2deg", "auc_10cm", "median_centre_error")
            }
        )
    return r


def aggregate(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and worst run (fewest registered; lowest shares / AUC; largest median error)."""
    a: dict[str, Any] = {
        "runs": len(recs),
        "wall_s": recs[0]["wall_s"],
        "cpu_s": recs[0]["cpu_s"],
        "num_images": recs[0]["num_images"],
    }
    for k in (
        "registered",
        "points",
        "track_length",
        "within_5cm_1deg",
        "within_25cm_2deg",
        "auc_10cm",
        "median_centre_error",
    ):
        if k in recs[0]:
            v = np.array([r[k] for r in recs], np.float64)
            a[k] = float(np.mean(v)) if np.all(np.isfinite(v)) else float("inf")
            a[f"{k}_worst"] = float(v.max() if k == "median_centre_error" else v.min())
    return a


def format_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One block per scene: a row per (descriptor, mapper), mean / worst run."""
    blocks = []
    for scene, rows in results.items():
        gt = any("auc_10cm" in r for r in rows.values())
        head = ["row", "reg (worst)", "points", "track"]
        head += ["5cm1deg %", "25cm2deg %", "AUC@10cm", "med err m"] if gt else []
        head += ["wall s", "CPU s"]
        body = []
        for name, r in rows.items():
            worst = r.get("registered_worst", r["registered"])
            row = [name, f"{r['registered']:.1f}/{r['num_images']} ({worst:.0f})"]
            row += [f"{r['points']:.0f}", f"{r['track_length']:.2f}"]
            if gt:
                row += [
                    f"{100 * r['within_5cm_1deg']:.0f}",
                    f"{100 * r['within_25cm_2deg']:.0f}",
                    f"{100 * r['auc_10cm']:.1f}",
                    f"{r['median_centre_error']:.3f}",
                ]
            body.append(row + [f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}"])
        blocks.append(tables.format_table(head, body, title=f"== {scene}") + "\n")
    return "\n".join(blocks)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--shared",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data",
        help="shared data folder holding strecha/, collections/ and published/",
    )
    p.add_argument("--scenes", nargs="*", default=list(SCENES), choices=list(SCENES))
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="ROW",
        help="standard rows to keep (sift rootsift hardnet pub:HardTFeat ...)",
    )
    p.add_argument("--features", nargs="*", default=[], help="extra registry names / checkpoints")
    p.add_argument(
        "--mappers", nargs="*", default=["incremental", "global"], choices=list(colmap_sfm.MAPPERS)
    )
    p.add_argument("--runs", type=positive_int, default=5, help="seeded runs per row")
    p.add_argument(
        "--resize_max",
        type=positive_int,
        default=1024,
        help="longer image side seen by the detectors (both pipelines)",
    )
    p.add_argument(
        "--max_keypoints",
        type=positive_int,
        default=None,
        help="DoG keypoints per image of our rows (default: extraction's)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("outputs/real_sfm"), help="work folder and real_sfm.json"
    )
    args = p.parse_args(argv)
    setup_logging(logging.WARNING)
    if not args.shared.is_dir():
        print(
            f"real_sfm: shared data folder {args.shared} not found; nothing to measure "
            f"(pass --shared DIR)"
        )
        return {}
    _one_thread()
    hloc_src = os.environ.get("HLOC_SRC")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with cli_errors("real_sfm"):
        rows = row_features(args.shared, args.features, args.only)
        for scene in args.scenes:
            folder, gt_name, pairs = SCENES[scene]
            images = args.shared / folder / "images"
            gt = args.shared / folder / gt_name if gt_name else None
            if not images.is_dir():
                print(f"real_sfm: {images} not found; skipping {scene}")
                continue
            results[scene] = {}
            for name, feats in rows.items():
                for mapper in args.mappers:
                    work = args.out / scene / f"{name.replace(':', '_')}-{mapper}"
                    recs = run_row(
                        images,
                        gt,
                        feats,
                        work,
                        mapper,
                        pairs,
                        args.runs,
                        args.resize_max,
                        args.max_keypoints,
                    )
                    results[scene][f"{name} {mapper} {pairs[:3]}"] = {
                        **aggregate(recs),
                        "per_run": recs,
                    }
                if hloc_src and name == "sift" and pairs == "exhaustive":
                    results[scene]["hloc sift incremental exh"] = run_hloc(
                        hloc_src, images, gt, args.out / scene / "hloc-sift", args.resize_max
                    )
            write_json(args.out / "real_sfm.json", results)
    print(format_table(results))
    for scene, rows_ in results.items():
        h = rows_.get("hloc sift incremental exh")
        o = rows_.get("sift incremental exh")
        if h and o:
            print(
                f"{scene}: pipelines.sfm sift / hloc SIFT wall time = {o['wall_s']:.1f} / "
                f"{h['wall_s']:.1f} s = {o['wall_s'] / h['wall_s']:.2f}x; CPU time "
                f"{o['cpu_s']:.1f} / {h['cpu_s']:.1f} s = {o['cpu_s'] / h['cpu_s']:.2f}x"
            )
    print(f"details: {args.out / 'real_sfm.json'}")
    return results


if __name__ == "__main__":
    main()
